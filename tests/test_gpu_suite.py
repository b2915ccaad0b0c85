"""benchmarks/gpu_suite.py: budgets fit the 8 minutes, rows render from each benchmark's JSON, and the dry run
(CPU, tiny shapes) runs every benchmark's code path and writes a scratch file, never RESULTS.md."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _suite():
    spec = importlib.util.spec_from_file_location("gpu_suite", ROOT / "benchmarks" / "gpu_suite.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_budgets_fit_the_total_and_every_benchmark_has_a_dry_run() -> None:
    suite = _suite()
    benches = suite.benches()
    assert sum(b.budget_s for b in benches) <= suite.TOTAL_BUDGET_S - 30 == 450
    assert {b.key for b in benches if b.dry_args is not None} == {"contrastive", "fare", "attacks", "lvlm"}
    fare = [b for b in benches if b.key == "fare"]
    assert {"fp32", "bf16"} <= {a for b in fare for a in b.gpu_args} and any("--compile" in b.gpu_args for b in fare)
    assert all("cuda" in b.gpu_args for b in benches)


def test_gpu_rows_render_the_gpu_fields() -> None:
    suite = _suite()
    fare = {"args": {"model": "ViT-L-14", "batch": "128"}, "compile": "inductor", "precision_ours": "bf16",
            "precision_theirs": "bf16 autocast (added)", "ms_ours": 1500.0, "ms_theirs": 1800.0, "ratio": 1.2,
            "mfu": {"mmrobust": 0.41, "robustvlm": 0.34}, "peak_gib": {"mmrobust": 30.5, "robustvlm": 33.0}}
    (row,) = suite.fare_rows(fare)
    assert "| torch.compile (inductor) | 1500.0 | 1800.0 | 1.20x | 41.0% / 34.0% | 30.5 / 33.0 |" in row
    con = {"model": "ViT-B-32", "batch": 256, "precision": "bf16", "ours_samples_s": 9000.0, "ref_samples_s": 8000.0,
           "ratio": 1.125, "ours_mfu": 0.3, "ref_mfu": 0.27, "peak_gib": {"mmrobust": 10.0, "open_clip_train": 11.0}}
    assert "| 9000 | 8000 | 1.12x | 30.0% / 27.0% | 10.0 / 11.0 |" in suite.contrastive_rows(con)[0]
    lvlm = {"shape": "llava-1.5-7b", "dtype": "bf16", "n_params": 7_063_000_000,
            "rows": [{"batch": 8, "steps": 5, "seconds_per_step": 0.512, "peak_gib": 20.25}]}
    assert suite.lvlm_rows(lvlm) == ["| llava-1.5-7b (7.06B params) | bf16 | 8 | 5 | 0.512 | 20.2 |"]


def test_the_dry_run_refuses_to_write_results_md() -> None:
    suite = _suite()
    with pytest.raises(SystemExit):
        suite.parse(["--dry-run", "--results", str(ROOT / "benchmarks" / "RESULTS.md")])


@pytest.mark.slow
def test_dry_run_exercises_every_benchmark_and_leaves_results_md_alone(tmp_path: Path, capsys) -> None:
    suite = _suite()
    real = (ROOT / "benchmarks" / "RESULTS.md").read_bytes()
    out = suite.main(["--dry-run", "--results", str(tmp_path / "RESULTS.md"), "--budget-scale", "3"])
    text = out.read_text()
    assert (ROOT / "benchmarks" / "RESULTS.md").read_bytes() == real
    assert "## GPU suite dry run (CPU, tiny shapes" in text and "failed" not in text and "timed out" not in text
    for head in suite.HEADS.values():  # one table per benchmark, each with at least one row
        assert head[0] in text
        assert text.split(head[0])[1].split("\n")[2].startswith("| ")
    assert "RobustVLM comparison skipped: no checkout given" in text  # no --robustvlm: our step alone
    assert "not run (no --robustvlm checkout)" in text and "torch.compile (aot_eager)" in text
    assert "PGD-2 l-inf vs torchattacks.PGD" in text and "| tiny (" in text
