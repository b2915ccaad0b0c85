"""The ``hf`` adapter end to end on a tiny random LLaVA built from a config and saved locally."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from mmrobust.cli.main import main
from _mmr import mmr_world_and_llava


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return mmr_world_and_llava(tmp_path_factory.mktemp("mmr-hf"), 2)


def test_tiny_llava_loads_with_auto_classes(tiny: tuple[Path, Path]) -> None:
    from transformers import AutoModelForImageTextToText, AutoProcessor

    _, path = tiny
    processor = AutoProcessor.from_pretrained(path)
    model = AutoModelForImageTextToText.from_pretrained(path)
    assert type(model).__name__ == "LlavaForConditionalGeneration"
    assert processor.num_additional_image_tokens == 1  # CLIP's CLS token
    text = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What shape is it?"}]}],
        add_generation_prompt=True, tokenize=False)
    assert text.startswith("USER: <image>\n") and text.endswith("ASSISTANT:")
    assert "<unk>" not in processor.tokenizer.convert_ids_to_tokens(processor.tokenizer(text)["input_ids"])


def test_mmr_run_with_hf_adapter_writes_a_full_report(tiny: tuple[Path, Path], tmp_path: Path,
                                                      capsys: pytest.CaptureFixture) -> None:
    world, model = tiny
    out = tmp_path / "run"
    args = ["mmr", "run", "--data", str(world), "--adapter", "hf", "--model", str(model), "--out", str(out),
            "--adapter-arg", "device=cpu", "--adapter-arg", "dtype=float32", "--adapter-arg", "batch_size=8",
            "--max-new-tokens", "4",
            "--bootstrap", "200"]
    assert main(args) == 0
    assert "ALL (micro)" in capsys.readouterr().out
    result = json.loads((out / "results_mmr.json").read_text())
    m = result["metrics"]
    assert result["kind"] == "mmr" and m["parser"] == "official"
    assert set(m["per_category"]) == {"attribute/shape", "attribute/color&texture", "attribute/number",
                                      "attribute/position"}
    assert m["overall"]["n_pairs"] == 8 and m["item_status"]["error"] == 0
    assert sum(m["item_status"].values()) == 16
    assert set(m["by_parser"]) >= {"official", "strict", "lenient"}
    assert result["config"]["model"]["adapter"] == "hf" and result["config"]["settings"]["params"]["temperature"] == 0
    rows = (out / "samples_mmr.jsonl").read_text().splitlines()
    assert len(rows) == 16 and all(isinstance(json.loads(r)["response"], str) for r in rows)
    assert (out / "mmr_categories.png").stat().st_size > 1000

    assert main(args) == 0  # a second run is served from the cache
    again = json.loads((out / "results_mmr.json").read_text())
    assert again["calls"]["n_new_calls"] == 0 and again["calls"]["n_cached_before"] == 16
    assert again["metrics"]["overall"]["ra"] == m["overall"]["ra"]

    rescored = tmp_path / "lenient"
    assert main(["mmr", "score", str(out / "samples_mmr.jsonl"), "--parser", "lenient", "--out", str(rescored)]) == 0
    r2 = json.loads((rescored / "results_mmr.json").read_text())
    assert r2["metrics"]["parser"] == "lenient" and r2["metrics"]["overall"]["n_pairs"] == 8
    assert r2["metrics"]["by_parser"]["official"]["ra"] == m["overall"]["ra"]


def test_cli_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["mmr", "run", "--data", str(tmp_path / "nope"), "--adapter", "scripted", "--model", "random",
                 "--out", str(tmp_path / "o")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["mmr", "score", str(tmp_path / "nope.jsonl"), "--parser", "bogus"]) == 2
    assert "unknown answer parser 'bogus'" in capsys.readouterr().err


def test_adapter_options_are_checked_against_the_adapter_signature(tiny: tuple[Path, Path], tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture) -> None:
    world, _ = tiny
    base = ["mmr", "run", "--data", str(world), "--adapter", "scripted", "--model", "random", "--out",
            str(tmp_path / "o"), "--bootstrap", "0"]
    assert main([*base, "--adapter-arg", "base_url=http://x"]) == 2
    err = capsys.readouterr().err
    assert "adapter 'scripted' has no option(s) ['base_url']" in err and "seed" in err and len(err.splitlines()) == 1
    assert main([*base, "--adapter-arg", "seed=abc"]) == 2
    assert "adapter 'scripted' option seed: expected an int" in capsys.readouterr().err
    assert main([*base, "--adapter-arg", "seed=3"]) == 0  # typed by the default: seed 3, an int
    record = json.loads((tmp_path / "o" / "results_mmr.json").read_text())
    assert record["config"]["adapter_args"] == {"seed": 3} and record["config"]["model"]["seed"] == 3
