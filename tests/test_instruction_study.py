"""`mmrobust study instructions` at tiny settings: stages, record, the filter's cleaned file, resume, and that
the text trigger moves the ASR; the issue's targets are checked by the study itself at full settings."""
from __future__ import annotations

import dataclasses
import json

import pytest

pytest.importorskip("transformers")

from mmrobust.errors import ConfigError
from mmrobust.stories.instruction_study import InstructionStudy, run_instruction_study
from test_demo_mmr_trained import TINY

BASE = dataclasses.replace(TINY, max_new_tokens=6, base_steps=40)
STUDY = InstructionStudy(attacks=("text-trigger", "image-trigger"), rate=0.25, finetune_images=24, test_images=12,
                         concept_images=12, steps=40, lr=4e-3, drop_rate=0.2, workers=1)


def _lines(path):
    return [json.loads(line) for line in open(path, encoding="utf-8") if line.strip()]


@pytest.mark.slow
def test_study_end_to_end_and_resume(tmp_path):
    result = run_instruction_study(STUDY, seeds=[0], out_dir=tmp_path, base=BASE, progress=False, log=lambda m: None)
    here = tmp_path / "seed-0" / "instructions"
    record = json.loads((tmp_path / "instructions" / "results_instructions.json").read_text())
    assert record["kind"] == "instructions.study" and (tmp_path / "instructions" / "instructions.png").is_file()
    rows = {r["attack"]: r for r in record["metrics"]["per_seed"]["0"]["rows"]}
    assert set(rows) == {"text-trigger", "image-trigger"}
    for name, r in rows.items():
        poisoned = json.loads((here / name / "poisoned" / "poison.json").read_text())
        assert r["n_poisoned"] == poisoned["n_poisoned"] == round(0.25 * r["n_rows"])
        cleaned = _lines(here / name / "filter" / "cleaned" / "instructions.jsonl")
        assert len(cleaned) == r["n_rows"] - r["dropped"] and r["dropped"] >= round(0.2 * r["n_rows"])
        kept = {row["id"] for row in cleaned}
        assert r["remaining_poisoned"] == len(kept & set(poisoned["poisoned_keys"]))
        for key in ("auroc_image", "auroc_text", "auroc_answer-loss", "auroc_union"):
            assert 0.0 <= r[key] <= 1.0
    text = rows["text-trigger"]
    assert text["asr"] >= text["asr_clean_model"] + 0.5  # the trigger phrase now gives the target answer
    assert "text-trigger" in result["table"] and "ASR" in result["claims"]
    stamp = (here / "clean" / "model" / "model.safetensors").stat().st_mtime_ns
    again = run_instruction_study(STUDY, seeds=[0], out_dir=tmp_path, base=BASE, progress=False, log=lambda m: None)
    assert (here / "clean" / "model" / "model.safetensors").stat().st_mtime_ns == stamp  # stages reused
    assert again["record"]["metrics"]["per_seed"]["0"]["rows"] == record["metrics"]["per_seed"]["0"]["rows"]


@pytest.mark.parametrize("bad, words", [({"attacks": ("trojan",)}, "unknown attack trojan"),
                                        ({"attacks": ()}, "(none given)"), ({"rate": 0.0}, "rate"),
                                        ({"detector": "oracle"}, "unknown detector"), ({"steps": 0}, "steps"),
                                        ({"target": " "}, "target must be a non-empty string"),
                                        ({"shadowcast_eps": 2.0}, "eps")])
def test_settings_refused_in_one_line(bad, words):
    with pytest.raises(ConfigError) as err:
        InstructionStudy(**bad)
    assert words in str(err.value) and "\n" not in str(err.value)


def test_cli_refuses_unknown_attack(capsys):
    from mmrobust.cli.main import main

    assert main(["study", "instructions", "--attacks", "trojan"]) == 2
    err = capsys.readouterr().err.strip()
    assert "unknown attack trojan" in err and len(err.splitlines()) == 1


def test_cli_keeps_the_default_trigger_and_reads_a_given_one():
    from mmrobust.cli.main import build_parser
    from mmrobust.cli.options import settings_from

    argv = ["study", "instructions"]
    assert settings_from(build_parser(argv).parse_args(argv), InstructionStudy).trigger == InstructionStudy().trigger
    argv += ["--trigger", "name=blended", "--attacks", "image-trigger"]
    study = settings_from(build_parser(argv).parse_args(argv), InstructionStudy)
    assert study.trigger["name"] == "blended" and study.attacks == ("image-trigger",)


def test_warning_when_a_backdoor_did_not_take_and_silence_when_it_did():
    from mmrobust.stories.instruction_report import _warnings

    took, missed = {"asr": 0.95}, {"asr": 0.02}
    assert _warnings({"text-trigger": [took, took]}, [0, 1]) == []
    (w,) = _warnings({"shadowcast": [missed, took, missed]}, [0, 1, 2])
    assert w.startswith("shadowcast, seeds 0, 2:") and "means nothing" in w and "\n" not in w
