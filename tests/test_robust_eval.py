"""Robust zero-shot evaluation: eps 0 leaves accuracy unchanged, attacks lower it, ids are recorded."""
from __future__ import annotations

import torch

from mmrobust.data.manifest import PathPolicy
from mmrobust.data.datasets import ClassInfo, LabelledDataset
from mmrobust.eval.robust import RobustSettings, embedding_drift, evaluate_robust, sample_ids
from mmrobust.eval.zeroshot import build_classifier
from mmrobust.models import create_clip


def test_robust_eval_invariants(micro_world):
    model = create_clip("mmrobust-micro", seed=0)
    classes = ClassInfo.load(micro_world.classes)
    ds = LabelledDataset(micro_world.test_manifest, classes=classes, image_size=16, preload=True)
    clf = build_classifier(model, classes.classnames, classes.templates)
    m, rows = _robust(model, ds, clf, attack="pgd", eps=[0.0, 8 / 255], n_samples=40, seed=3,
                              attack_options={"steps": 5})
    assert m["n"] == 40 and len(rows) == 40
    assert m["eps"]["0/255"]["robust_top1"] == m["clean_top1"]
    assert m["eps"]["8/255"]["robust_top1"] <= m["clean_top1"]
    assert [r["index"] for r in rows] == sample_ids(len(ds), 40, 3)
    assert all(r["robust@8/255"] <= r["clean_correct"] for r in rows)


def test_embedding_drift_is_zero_for_identical_encoders_and_grows_under_attack():
    model, other = create_clip("mmrobust-micro", seed=0), create_clip("mmrobust-micro", seed=0)
    x = torch.rand(8, 3, 16, 16)
    d = embedding_drift(model, other, x, eps=4 / 255, steps=5)
    assert d["clean"] == 0.0 and d["adversarial"] > 0.0


def test_cli_eval_robust_writes_ids_seeds_config_and_adv_images(tmp_path, micro_world):
    from safetensors.torch import load_file

    from mmrobust.cli.main import main
    from mmrobust.models import save_clip
    from mmrobust.jsonio import read_json

    save_clip(create_clip("mmrobust-micro", seed=0), tmp_path / "m")
    out = tmp_path / "eval"
    assert main(["eval", "robust", "--model", str(tmp_path / "m"), "--data", str(micro_world.test_manifest),
                 "--classes", str(micro_world.classes), "--attack", "apgd-ce", "--eps", "2/255,4/255",
                 "--n-samples", "24", "--steps", "5", "--seed", "7", "--save-adv", "--reference", "mmrobust-micro",
                 "--out", str(out)]) == 0
    rec = read_json(out / "results_robust.json")
    assert rec["seeds"] == {"sample": 7, "attack": 7} and len(rec["sample_ids"]) == 24
    assert set(rec["metrics"]["eps"]) == {"2/255", "4/255"}
    assert rec["metrics"]["eps"]["4/255"]["config"]["steps"] == 5
    assert rec["metrics"]["eps"]["4/255"]["robust_top1"] <= rec["metrics"]["clean_top1"]
    assert set(rec["metrics"]["embedding_drift"]) == {"2/255", "4/255"}
    adv = load_file(str(out / "adv_4_255.safetensors"))
    assert adv["x_adv"].shape == (24, 3, 16, 16) and adv["index"].tolist() == rec["sample_ids"]


def _with_bad_rows(tmp_path, world):
    import csv

    rows = list(csv.DictReader(open(world.test_manifest)))[:20]
    (tmp_path / "bad.png").write_bytes(b"not a png")
    path = tmp_path / "m.csv"
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "label"])
        for k, r in enumerate(rows):
            w.writerow([str(world.root / r["image"]), r["label"]])
            if k in (4, 11):
                w.writerow([str(tmp_path / ("bad.png" if k == 4 else "gone.png")), r["label"]])
    return path


def test_eval_robust_reports_skipped_rows_like_the_other_evals(tmp_path, micro_world):
    from mmrobust.pipelines.evaluate import EvalData
    from mmrobust.jsonio import read_json

    data = EvalData(manifest=str(_with_bad_rows(tmp_path, micro_world)), classes=str(micro_world.classes),
                    data_root=str(tmp_path.parent))
    m = _pipeline(model="mmrobust-micro", data=data, out_dir=tmp_path / "out", attack="pgd", eps=(4 / 255,),
                    n_samples=None, attack_options={"steps": 2}, batch_size=8)
    assert m["n"] == 20 and m["n_skipped"] == 2
    rec = read_json(tmp_path / "out" / "results_robust.json")
    assert [s["row"] for s in rec["skipped_images"]] == [5, 13]
    assert "not found" in rec["skipped_images"][1]["reason"]
    assert 5 not in rec["sample_ids"] and len(rec["sample_ids"]) == 20
    assert not (tmp_path / "out" / "partial_robust.jsonl").exists()


def test_sampled_skips_count_only_sampled_rows(tmp_path, micro_world):
    classes = ClassInfo.load(micro_world.classes)
    manifest = _with_bad_rows(tmp_path, micro_world)
    ds = LabelledDataset(manifest, classes=classes, image_size=16, preload=True,
                         paths=PathPolicy.of(manifest, allow_outside=True))
    model = create_clip("mmrobust-micro", seed=0)
    clf = build_classifier(model, classes.classnames, classes.templates)
    ids = sample_ids(len(ds), 10, 1)
    m, rows = _robust(model, ds, clf, attack="pgd", eps=[0.0], n_samples=10, seed=1,
                              attack_options={"steps": 1})
    bad_in_sample = len({5, 13} & set(ids))
    assert m["n_skipped"] == bad_in_sample and m["n"] == 10 - bad_in_sample == len(rows)


def test_empty_eps_is_a_one_line_error(tmp_path, micro_world, capsys):
    import pytest

    from mmrobust.cli.main import main
    from mmrobust.errors import ConfigError

    for eps in (",", " , ,"):
        code = main(["eval", "robust", "--model", "mmrobust-micro", "--data", str(micro_world.test_manifest),
                     "--classes", str(micro_world.classes), "--eps", eps, "--out", str(tmp_path / "o")])
        err = capsys.readouterr().err.strip()
        assert code == 2 and len(err.splitlines()) == 1 and "--eps is empty" in err, err
    config = tmp_path / "c.yaml"
    config.write_text("eps: ','\n")
    assert main(["eval", "robust", "--config", str(config), "--model", "mmrobust-micro", "--data",
                 str(micro_world.test_manifest), "--classes", str(micro_world.classes), "--out",
                 str(tmp_path / "o")]) == 2
    assert "--eps is empty" in capsys.readouterr().err
    model = create_clip("mmrobust-micro", seed=0)
    with pytest.raises(ConfigError, match="no eps"):
        _robust(model, None, None, attack="pgd", eps=[])


def test_config_file_eps_replaces_the_default(tmp_path, micro_world):
    from mmrobust.cli.main import main
    from mmrobust.jsonio import read_json

    config = tmp_path / "c.yaml"
    config.write_text("eps: 8/255\nattack: pgd\nsteps: 1\nn_samples: 8\n")
    assert main(["eval", "robust", "--config", str(config), "--model", "mmrobust-micro", "--data",
                 str(micro_world.test_manifest), "--classes", str(micro_world.classes), "--out",
                 str(tmp_path / "o")]) == 0
    assert set(read_json(tmp_path / "o" / "results_robust.json")["metrics"]["eps"]) == {"8/255"}


def _robust(model, ds, clf, *, save_adv=None, partial=None, **settings):
    """evaluate_robust with its settings given as keywords."""
    return evaluate_robust(model, ds, clf, RobustSettings(**settings), save_adv=save_adv, partial=partial)


def _pipeline(*, model, data, out_dir, clip=None, reference=None, save_adv=False, resume=True, **settings):
    """eval_robust with its settings given as keywords."""
    from mmrobust.pipelines.evaluate import eval_robust

    return eval_robust(model=model, data=data, out_dir=out_dir, clip=clip, reference=reference, save_adv=save_adv,
                       resume=resume, settings=RobustSettings(**settings))
