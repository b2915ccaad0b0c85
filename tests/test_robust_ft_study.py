"""`mmrobust study robust-ft`: FARE with PGD-10, FGSM-RS and LoRA from a demo's clean CLIP; passes counted, time
measured as a ratio, accuracy evaluated, one table over seeds; resumable; the demo folder is only read."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from mmrobust.cli.main import main
from mmrobust.errors import ConfigError
from mmrobust.models.clip import create_clip, save_clip
from mmrobust.stories.robust_ft import RobustFTStudy, run_robust_ft

TINY = dict(steps=2, batch=4, n_eval=6, eval_steps=2, n_target_classes=2, eval_eps=(4 / 255,))


@pytest.fixture(scope="module")
def demo(micro_world, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished adversarial story's layout: seed-0/world and seed-0/adversarial/clip/model."""
    root = tmp_path_factory.mktemp("demo")
    (root / "seed-0" / "adversarial").mkdir(parents=True)
    os.symlink(micro_world.root, root / "seed-0" / "world")
    save_clip(create_clip("mmrobust-micro", seed=0), root / "seed-0" / "adversarial" / "clip" / "model")
    return root


def _snapshot(root: Path) -> dict[str, float]:
    return {str(p): p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file() and "world" not in p.parts}


def test_study_counts_passes_times_and_evaluates_each_method_and_resumes(demo: Path, tmp_path: Path) -> None:
    before = _snapshot(demo)
    study = RobustFTStudy(demo=str(demo), methods=("pgd10", "fgsm-rs", "lora"), **TINY)
    result = run_robust_ft(study, seeds=[0], out_dir=tmp_path / "out", progress=False, log=lambda m: None)
    rows = {r["method"]: r for r in result["rows"]}
    assert rows["FARE-PGD10"]["passes"] == "12 / 11"  # reference + 10 attack steps + the training step
    assert rows["FARE-FGSM-RS"]["passes"] == "3 / 2" and rows["FARE-LoRA"]["passes"] == "12 / 11"
    lora, full = (int(rows[m]["trainable"].replace(",", "")) for m in ("FARE-LoRA", "FARE-PGD10"))
    assert 0 < lora < full and rows["FARE-PGD10"]["wall_ratio"] == "1 (reference)"
    assert rows["FARE-PGD10"]["_spread"]["wall_ratio"]["mean"] == 1.0
    assert 0 < rows["FARE-FGSM-RS"]["_spread"]["cpu_ratio"]["mean"]
    for r in rows.values():
        assert 0 <= r["_spread"]["clean"]["mean"] <= 1 and 0 <= r["_spread"]["aa@4/255"]["mean"] <= 1
    record = json.loads((tmp_path / "out" / "robust-ft" / "results_robust_ft.json").read_text())
    assert record["kind"] == "study.robust_ft" and "0/fgsm-rs" in record["metrics"]["per_seed"]
    assert "FARE-FGSM-RS" in (tmp_path / "out" / "robust-ft" / "summary.md").read_text()
    assert _snapshot(demo) == before  # read only

    stages = sorted((tmp_path / "out").rglob("stage.json"))
    marks = [p.stat().st_mtime_ns for p in stages]
    again = run_robust_ft(study, seeds=[0], out_dir=tmp_path / "out", progress=False, log=lambda m: None)
    assert [p.stat().st_mtime_ns for p in stages] == marks  # every stage reused
    assert again["table"] == result["table"]


def test_study_refusals_are_one_line(demo: Path, tmp_path: Path, capsys) -> None:
    with pytest.raises(ConfigError, match="holds no finished adversarial story"):
        run_robust_ft(RobustFTStudy(demo=str(tmp_path), **TINY), seeds=[0], out_dir=tmp_path / "o")
    with pytest.raises(ConfigError, match="unknown method"):
        RobustFTStudy(methods=("pgd5",))
    assert main(["study", "robust-ft", "--demo", str(demo), "--seeds", "1", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "mmrobust demo --seeds 1" in err
