"""FARE / TeCoA at the LVLM's resolution: ``mmrobust train --image-size`` resizes the tower's position
embeddings (bicubic, class token kept) and records it; a tower trained at the LLaVA's size swaps in with no
token-count warning, one trained at another size gets a warning naming both counts and the fix."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mmrobust.cli.main import main
from mmrobust.errors import ConfigError
from mmrobust.models.clip import create_clip
from mmrobust.models.resize import resize_clip_image_size, resize_position_embedding
from mmrobust.world.llava import build_tiny_llava

TRAIN = ["--model", "mmrobust-tiny", "--steps", "2", "--batch-size", "8", "--lr", "1e-4", "--warmup", "0",
         "--quiet", "--opt", "attack_steps=1", "--label-col", "label"]


def test_resize_keeps_the_class_token_a_constant_grid_and_records_it() -> None:
    clip = create_clip("mmrobust-tiny", seed=0)  # 32 px, patch 8: 4 x 4 patches
    pos = clip.visual.positional_embedding
    with torch.no_grad():  # a grid-constant embedding: bicubic weights sum to one, so it stays that constant
        pos[1:] = torch.linspace(-1, 1, pos.shape[1])
    cls_before = pos[0].clone()
    record = resize_clip_image_size(clip, 48)
    new = clip.visual.positional_embedding
    assert new.shape == (1 + 6 * 6, pos.shape[1]) and torch.equal(new[0], cls_before)
    torch.testing.assert_close(new[1:], torch.linspace(-1, 1, pos.shape[1]).expand(36, -1))
    assert record == {"resized": True, "image_size": {"old": 32, "new": 48}, "old_grid": 4, "new_grid": 6,
                      "method": "bicubic", "align_corners": False, "antialias": True, "class_token": "kept"}
    assert clip.image_size == 48 and clip.visual.grid_size == (6, 6) and new.requires_grad
    with torch.no_grad():
        assert clip.encode_image(torch.rand(2, 3, 48, 48)).shape == (2, 64)
    assert resize_clip_image_size(clip, 48) == {"resized": False, "image_size": 48, "grid": 6}
    with pytest.raises(ConfigError, match="not a multiple of .* patch size 8"):
        resize_clip_image_size(clip, 50)


def test_resize_of_a_random_grid_matches_the_conversion_resize() -> None:
    clip = create_clip("mmrobust-tiny", seed=3)
    want = resize_position_embedding(clip.visual.positional_embedding, 7)
    resize_clip_image_size(clip, 56)
    assert torch.equal(clip.visual.positional_embedding, want)


@pytest.fixture(scope="module")
def llava48(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny LLaVA whose tower runs at 48 px (36 patch tokens) with mmrobust-tiny's architecture."""
    return build_tiny_llava(tmp_path_factory.mktemp("lvlm") / "llava48", seed=0, image_size=48, patch_size=8,
                            hidden_size=64, num_layers=2, vision_hidden_size=96, vision_layers=3, vision_heads=3,
                            vision_intermediate_size=384, vision_act="gelu")


def test_fare_at_the_llava_size_swaps_in_without_a_token_warning(tiny_world, llava48: Path, tmp_path: Path,
                                                                 capsys) -> None:
    data = ["--data", str(tiny_world.root / "train.csv"), "--classes", str(tiny_world.root / "classes.json")]
    assert main(["train", "--task", "fare", *data, *TRAIN, "--image-size", "48", "--out", str(tmp_path / "f48")]) == 0
    model_dir = tmp_path / "f48" / "model"
    config = json.loads((model_dir / "open_clip_config.json").read_text())
    assert config["model_cfg"]["vision_cfg"]["image_size"] == 48
    assert config["mmrobust"]["position_embedding"]["new_grid"] == 6  # the resize, recorded with the model
    results = json.loads((tmp_path / "f48" / "results.json").read_text())
    assert results["position_embedding"]["image_size"] == {"old": 32, "new": 48}
    assert results["config"]["model"]["image_size"] == 48
    assert create_clip(str(model_dir)).visual.positional_embedding.shape[0] == 37

    capsys.readouterr()
    assert main(["lvlm", "swap", "--lvlm", str(llava48), "--encoder", str(model_dir), "--out",
                 str(tmp_path / "llava-f48")]) == 0
    assert "token count" not in capsys.readouterr().err
    assert json.loads((tmp_path / "llava-f48" / "swap.json").read_text())["warnings"] == []

    assert main(["train", "--task", "fare", *data, *TRAIN, "--out", str(tmp_path / "f32")]) == 0  # trained at 32
    capsys.readouterr()
    assert main(["lvlm", "swap", "--lvlm", str(llava48), "--encoder", str(tmp_path / "f32" / "model"), "--out",
                 str(tmp_path / "llava-f32")]) == 0
    err = capsys.readouterr().err
    (warning,) = json.loads((tmp_path / "llava-f32" / "swap.json").read_text())["warnings"]
    assert "trained at 32 px = 16 image tokens (4 x 4 patches), the LVLM's tower at 48 px = 36 image tokens" \
        in warning and "--image-size 48" in warning and f"warning: {warning}" in err


def test_image_size_refusals_are_one_line(tiny_world, tmp_path: Path, capsys) -> None:
    data = ["--data", str(tiny_world.root / "train.csv"), "--classes", str(tiny_world.root / "classes.json")]
    assert main(["train", "--task", "fare", *data, *TRAIN, "--image-size", "44", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "not a multiple" in err and "patch size 8" in err
    with pytest.raises(ConfigError, match="image size"):
        from mmrobust.pipelines.train import ModelSpec

        ModelSpec(image_size=0)
