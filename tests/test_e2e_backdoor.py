"""End to end through the CLI on a tiny world: poisoning raises ASR, PAR brings it back down."""
from __future__ import annotations

import json

import pytest

from mmrobust.cli.main import main


def _asr(path):
    return json.loads(path.read_text())["metrics"]


@pytest.mark.slow
def test_cli_poison_train_eval_par(tmp_path, capsys):
    w, run = tmp_path / "world", lambda *a: main([str(x) for x in a])
    assert run("generate", "--out", w, "--n-train", 3000, "--n-test", 300, "--seed", 3) == 0
    assert run("poison", "--manifest", w / "train.csv", "--out", tmp_path / "poisoned", "--trigger", "badnet",
               "--trigger-param", "size=6", "--trigger-param", "pattern=checkerboard",
               "--trigger-param", "location=bottom_right", "--target", "star", "--rate", 0.1) == 0
    common = ["--batch-size", 64, "--lr", 2e-3, "--warmup", 10, "--quiet", "--ckpt-every", 0]
    for name, manifest in (("clean", w / "train.csv"), ("poisoned", tmp_path / "poisoned" / "manifest.csv")):
        assert run("train", "--task", "clip", "--data", manifest, "--out", tmp_path / name, "--steps", 250,
                   *common) == 0
    assert run("train", "--task", "par", "--model", tmp_path / "poisoned" / "model", "--data", w / "train.csv",
               "--out", tmp_path / "par", "--steps", 100, "--opt", "tau=2.15", *common) == 0
    for name in ("clean", "poisoned", "par"):
        assert run("eval", "backdoor", "--model", tmp_path / name / "model", "--data", w / "test.csv",
                   "--classes", w / "classes.json", "--poison-record", tmp_path / "poisoned" / "poison.json",
                   "--out", tmp_path / name / "eval") == 0
    clean, poisoned, par = (_asr(tmp_path / n / "eval" / "results_backdoor.json") for n in ("clean", "poisoned", "par"))
    print(json.dumps({"clean": clean, "poisoned": poisoned, "par": par}))
    assert poisoned["asr"] >= clean["asr"] + 0.4, (clean, poisoned)
    assert par["asr"] <= poisoned["asr"] - 0.3, (poisoned, par)
    assert (tmp_path / "par" / "config.yaml").is_file() and (tmp_path / "par" / "results.json").is_file()
