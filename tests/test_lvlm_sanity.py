"""LVLM sanity warnings: a swapped tower at another resolution (token count) than the LLaVA was trained with, and
a processor whose normalization is not the tower's, in swap.json, in `lvlm eval`'s record and on stderr; the
protocol of the LVLM records (prompts hash, greedy decoding, eps as a fraction and k/255)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from mmrobust.cli.main import main
from mmrobust.models.clip import create_clip, save_clip
from mmrobust.world.llava import build_tiny_llava


def _tiny_llava(path: Path) -> Path:
    """A 32 px tiny LLaVA whose tower has mmrobust-tiny's architecture (patch 8: 17 tokens)."""
    return build_tiny_llava(path, seed=0, image_size=32, patch_size=8, hidden_size=64, num_layers=2,
                            vision_hidden_size=96, vision_layers=3, vision_heads=3, vision_intermediate_size=384,
                            vision_act="gelu", extra_words=["what colour is it ? red blue green"])


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("lvlm-sanity")
    return _tiny_llava(root / "llava"), save_clip(create_clip("mmrobust-tiny", seed=1), root / "enc")


def test_swap_warns_of_another_token_count_and_a_foreign_normalization(dirs, tmp_path, capsys):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from mmrobust.lvlm import swap_vision_tower
    from mmrobust.lvlm.checks import deployed_warnings

    llava, enc = dirs
    model = AutoModelForImageTextToText.from_pretrained(llava).eval()
    assert swap_vision_tower(model, create_clip("mmrobust-tiny", seed=1))["warnings"] == []  # 32 px both
    out = tmp_path / "swapped48"
    assert main(["lvlm", "swap", "--lvlm", str(llava), "--encoder", str(enc), "--out", str(out),
                 "--image-size", "48"]) == 0
    (w,) = json.loads((out / "swap.json").read_text())["warnings"]
    assert "runs at 48 px = 36 image tokens (6 x 6 patches) but the LVLM was trained with 32 px = 16 image" in w
    assert "warning: token count: the tower runs at 48 px" in capsys.readouterr().err
    processor = AutoProcessor.from_pretrained(out)
    assert deployed_warnings(out, processor) == [w]  # the saved processor has the tower's normalization
    processor.image_processor.image_mean = [0.5, 0.5, 0.5]
    assert any("normalizes with mean [0.5, 0.5, 0.5]" in x for x in deployed_warnings(out, processor))
    assert deployed_warnings(llava, processor) == []  # the LLaVA's own tower: no swap record


def test_lvlm_eval_record_carries_the_swap_warnings_and_the_protocol(dirs, tmp_path, capsys):
    llava, enc = dirs
    out = tmp_path / "swapped48"
    assert main(["lvlm", "swap", "--lvlm", str(llava), "--encoder", str(enc), "--out", str(out),
                 "--image-size", "48"]) == 0
    (tmp_path / "img").mkdir()
    Image.new("RGB", (40, 40), (200, 20, 20)).save(tmp_path / "img" / "0.png")
    data = tmp_path / "vqa.jsonl"
    data.write_text(json.dumps({"id": "q0", "image": "img/0.png", "question": "what colour is it ?",
                                "answers": ["red"]}) + "\n")
    capsys.readouterr()
    assert main(["lvlm", "eval", "--task", "vqa", "--model", str(out), "--data", str(data), "--eps", "2/255",
                 "--steps", "1", "--max-new-tokens", "2", "--n-boot", "0", "--out", str(tmp_path / "ev")]) == 0
    rec = json.loads((tmp_path / "ev" / "results_vqa-attack.json").read_text())
    assert any("runs at 48 px" in w for w in rec["warnings"])
    assert "warning: token count: the tower runs at 48 px" in capsys.readouterr().err
    p = rec["protocol"]
    assert p["eps"] == pytest.approx(2 / 255) and p["eps_255"] == "2/255" and p["decoding"]["greedy"] is True
    assert p["decoding"]["max_new_tokens"] == 2 and len(p["prompts_sha"]) == 16 and p["image_size"] == 48
