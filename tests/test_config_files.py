"""YAML config files are untrusted input: every way one can be wrong is one line naming the fix."""
from __future__ import annotations

import pytest

from mmrobust.cli.main import main

CASES = [
    (b"a: [1,\n", "is not valid YAML at line 2"),
    ("b: 1".encode("utf-16"), "is not UTF-8 text"),
    (b"model: !!python/object/apply:os.system ['echo pwned']\n", "a config never runs code"),
    (b"3: 4\n", "key 3 is not an option name"),
    (b"help: true\n", "unknown option(s) ['help']"),
    (b"config: other.yaml\n", "unknown option(s) ['config']"),
    (b"- a\n- b\n", "must hold a mapping of option: value, not a list"),
    (b"resume: 3\n", "resume is a flag"),
    (b"model: {a: 1}\n", "model must be a single value, not a dict"),
    (b"steps: -3\n", "steps must be an integer in [1, 2**63 - 1], got -3; --steps"),
    (b"opt: [{a: 1}]\n", "opt must be a list of plain values"),
]


@pytest.mark.parametrize("content,expected", CASES)
def test_bad_config_file_is_one_line(content, expected, tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_bytes(content)
    rc = main(["train", "--config", str(cfg), "--task", "clip", "--data", str(tmp_path / "x.csv"),
               "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and expected in err and len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert not (tmp_path / "o").exists()  # refused before anything is written


def test_config_values_are_typed_and_checked_like_options(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("batch_size: 0\n")
    assert main(["train", "--config", str(cfg), "--task", "clip", "--data", "x.csv", "--out", "o", "--steps", "5"]) == 2
    assert "batch_size must be an integer in [1, 2**63 - 1], got 0" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["cleanclip_paper", "fare_paper", "par_paper", "tecoa_paper"])
def test_paper_configs_give_task_options_as_a_mapping(name):
    from pathlib import Path

    from mmrobust.cli.common import apply_config
    from mmrobust.cli.main import build_parser
    from mmrobust.cli.train import job_from_args

    path = Path(__file__).parents[1] / "configs" / f"{name}.yaml"
    args = build_parser().parse_args(["train", "--config", str(path), "--data", "x.csv", "--out", "o"])
    job = job_from_args(apply_config(args._parser, args))
    assert job.task == name.split("_")[0] and job.task_options  # typed by the task's signature
    if name in ("fare_paper", "tecoa_paper"):
        assert job.task_options["eps"] == 2 / 255 and job.task_options["attack_steps"] == 10
    if name == "par_paper":
        assert job.task_options == {"tau": 2.15, "view": "noise-erase"}


@pytest.mark.parametrize("argv,key,value", [
    (["lvlm", "eval", "--model", "m", "--data", "d", "--out", "o"], "steps", 3),
    (["lvlm", "targeted", "--model", "m", "--data", "d", "--out", "o", "--target", "x"], "max_new_tokens", 5),
    (["mmr", "run", "--data", "d", "--model", "m", "--out", "o"], "bootstrap", 7),
])
def test_mmr_and_lvlm_actions_take_config_files_like_train_and_eval(argv, key, value, tmp_path):
    from mmrobust.cli.common import apply_config
    from mmrobust.cli.main import build_parser

    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"{key}: {value}\n")
    args = build_parser().parse_args([*argv, "--config", str(cfg)])
    assert getattr(apply_config(args._parser, args), key) == value
    assert getattr(apply_config(args._parser, build_parser().parse_args([*argv, "--config", str(cfg),
                                                                         f"--{key.replace('_', '-')}", "9"])),
                   key) == 9  # the command line wins
