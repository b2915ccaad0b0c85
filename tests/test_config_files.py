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
    (b"steps: -3\n", "steps: '-3' must be >= 1"),
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
    assert main(["train", "--config", str(cfg), "--task", "clip", "--data", "x.csv", "--out", "o"]) == 2
    assert "batch_size: '0' must be >= 1" in capsys.readouterr().err
