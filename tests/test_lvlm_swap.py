"""Swapping an open_clip tower into a tiny local LLaVA (FARE's use): exact features, LM untouched, save/reload."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor

from mmrobust.cli.main import main
from mmrobust.errors import ConfigError
from mmrobust.lvlm import convert_clip_vision, hf_vision_model, swap_and_save, swap_vision_tower, vision_feature
from mmrobust.lvlm.convert import openclip_resize_crop
from mmrobust.models.clip import create_clip, save_clip
from mmrobust.models.mllm import build_adapter
from mmrobust.models.mllm.base import GenerationParams, GenRequest
from mmrobust.world.llava import build_tiny_llava

ATOL = 1e-5
MEAN, STD = [0.5, 0.4, 0.3], [0.25, 0.2, 0.3]  # our own tower's normalization, unlike OpenAI's
PROMPT = "USER: <image>\nWhat shape is it?\nASSISTANT:"


@pytest.fixture(scope="module")
def clip():
    """mmrobust-tiny (32 px, patch 8, width 96, 3 layers, head_width 32 -> 3 heads, mlp 4 x 96, exact GELU)."""
    model = create_clip("mmrobust-tiny", seed=1)
    model.preprocess_cfg.update(mean=MEAN, std=STD)
    model.mean.copy_(torch.tensor(MEAN).view_as(model.mean))
    model.std.copy_(torch.tensor(STD).view_as(model.std))
    return model


def _tiny_llava(path: Path, *, image_size: int = 32, act: str = "gelu") -> Path:
    """A tiny LLaVA whose tower has mmrobust-tiny's architecture (random weights, seed 0)."""
    return build_tiny_llava(path, seed=0, image_size=image_size, patch_size=8, hidden_size=64, num_layers=2,
                            vision_hidden_size=96, vision_layers=3, vision_heads=3, vision_intermediate_size=384,
                            vision_act=act)


@pytest.fixture(scope="module")
def llava_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _tiny_llava(tmp_path_factory.mktemp("lvlm") / "tiny-llava")


@pytest.fixture(scope="module")
def encoder_dir(clip, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The CLIP as a model folder (what `mmrobust train` writes), with its own mean/std."""
    return save_clip(clip, tmp_path_factory.mktemp("enc") / "model")


def _pixels(clip, n: int = 2, size: int = 32) -> torch.Tensor:
    images = torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(3))
    return clip.normalize_pixels(images)


def _stream(visual: torch.nn.Module, pixels: torch.Tensor) -> list[torch.Tensor]:
    """open_clip's residual stream after each resblock (batch first)."""
    outs: list[torch.Tensor] = []
    seq_first = not visual.transformer.batch_first
    hooks = [b.register_forward_hook(lambda m, i, o: outs.append(o.transpose(0, 1) if seq_first else o))
             for b in visual.transformer.resblocks]
    with torch.no_grad():
        visual(pixels)
    for h in hooks:
        h.remove()
    return outs


def _image(seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (32, 32, 3), dtype=np.uint8))


def _logits(model, processor) -> torch.Tensor:
    inputs = processor(images=_image(), text=PROMPT, return_tensors="pt")
    with torch.no_grad():
        return model(**inputs).logits


def _non_tower_state(model) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items() if "vision_tower" not in k}


def test_swapped_tower_computes_the_clip_tower_and_leaves_the_lm(clip, llava_dir: Path) -> None:
    model = AutoModelForImageTextToText.from_pretrained(llava_dir).eval()
    processor = AutoProcessor.from_pretrained(llava_dir)
    before, lm_before = _logits(model, processor), _non_tower_state(model)
    record = swap_vision_tower(model, clip)

    conv = convert_clip_vision(clip)
    reference, pixels = hf_vision_model(conv, projection=False), _pixels(clip)
    with torch.no_grad():
        got = model.model.vision_tower(pixels, output_hidden_states=True).hidden_states
        want = reference(pixels, output_hidden_states=True).hidden_states
        feat = vision_feature(model.model.vision_tower, pixels, layer=model.config.vision_feature_layer)
    assert len(got) == len(want) == 4
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, atol=ATOL, rtol=ATOL)
    torch.testing.assert_close(feat, _stream(clip.visual, pixels)[-2][:, 1:], atol=ATOL, rtol=ATOL)

    after = _logits(model, processor)
    assert (after - before).abs().max() > 1e-3  # the LLaVA now sees other image features
    lm_after = _non_tower_state(model)
    assert lm_after.keys() == lm_before.keys() and all(torch.equal(lm_before[k], lm_after[k]) for k in lm_before)
    assert model.config.vision_feature_layer == -2 and model.config.vision_feature_select_strategy == "default"
    assert record["encoder"] == "mmrobust-tiny" and record["resized"] is False and record["rebuilt"] == {}
    assert record["tower"]["width"] == 96 and record["tower"]["heads"] == 3 and record["tower"]["layers"] == 3
    np.testing.assert_allclose(record["normalization"]["mean"], MEAN, rtol=1e-6)
    json.dumps(record)  # JSON-ready


def test_swap_resizes_positions_to_the_lvlm_size_and_follows_the_activation(clip, tmp_path: Path) -> None:
    path = _tiny_llava(tmp_path / "llava48", image_size=48, act="quick_gelu")  # OpenAI's activation, 6 x 6 grid
    model = AutoModelForImageTextToText.from_pretrained(path).eval()
    record = swap_vision_tower(model, clip)
    assert record["resized"] is True and record["image_size"] == {"clip": 32, "lvlm_before": 48, "tower": 48}
    assert record["position_embedding"]["old_grid"] == 4 and record["position_embedding"]["new_grid"] == 6
    assert record["rebuilt"] == {"hidden_act": {"old": "quick_gelu", "new": "gelu"}}
    assert model.config.vision_config.hidden_act == "gelu" and model.model.vision_tower.config.image_size == 48
    reference, pixels = hf_vision_model(convert_clip_vision(clip, image_size=48), projection=False), _pixels(clip, 1, 48)
    with torch.no_grad():
        got = model.model.vision_tower(pixels, output_hidden_states=True).hidden_states[-2]
        torch.testing.assert_close(got, reference(pixels, output_hidden_states=True).hidden_states[-2], atol=ATOL,
                                   rtol=ATOL)


def test_a_tower_of_another_architecture_is_refused_in_one_line(llava_dir: Path) -> None:
    model = AutoModelForImageTextToText.from_pretrained(llava_dir).eval()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ConfigError) as e:
        swap_vision_tower(model, create_clip("mmrobust-micro", seed=0))
    msg = str(e.value)
    assert "\n" not in msg and "width 32 vs the LVLM's 96" in msg and "layers 1 vs the LVLM's 3" in msg
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())  # nothing half-loaded


def test_swap_and_save_reloads_with_the_new_tower_and_answers(clip, llava_dir: Path, encoder_dir: Path,
                                                              tmp_path: Path) -> None:
    out = swap_and_save(llava_dir, str(encoder_dir), out_dir=tmp_path / "swapped")
    reloaded = AutoModelForImageTextToText.from_pretrained(out).eval()
    expected = hf_vision_model(convert_clip_vision(clip), projection=False).state_dict()
    tower = reloaded.model.vision_tower.state_dict()
    assert tower.keys() == expected.keys() and all(torch.equal(tower[k], expected[k]) for k in expected)
    ip = AutoProcessor.from_pretrained(out).image_processor
    np.testing.assert_allclose(ip.image_mean, MEAN, rtol=1e-6)
    np.testing.assert_allclose(ip.image_std, STD, rtol=1e-6)
    record = json.loads((out / "swap.json").read_text())
    assert record["sources"]["lvlm"] == str(llava_dir) and record["sources"]["encoder"] == str(encoder_dir)
    assert "git_sha" in record["sources"] and record["resized"] is False

    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / "img.png")
    adapter = build_adapter("hf", model=str(out), options={"device": "cpu", "dtype": "float32"})
    [(_, result)] = list(adapter.generate([GenRequest(uid="0", prompt="What shape is it?",
                                                      image_path=str(tmp_path / "img.png"))],
                                          GenerationParams(max_new_tokens=3)))
    assert result.ok and isinstance(result.text, str)


def test_swap_and_save_refuses_a_random_encoder(llava_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="random tower"):
        swap_and_save(llava_dir, "mmrobust-tiny", out_dir=tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_cli_swap_end_to_end_keeps_user_files(llava_dir: Path, encoder_dir: Path, tmp_path: Path,
                                              capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "llava-ours"
    args = ["lvlm", "swap", "--lvlm", str(llava_dir), "--encoder", str(encoder_dir), "--out", str(out)]
    assert main(args) == 0
    assert json.loads((out / "swap.json").read_text())["encoder"] == str(encoder_dir)

    (out / "notes.txt").write_text("mine")
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "not empty" in err and "--overwrite" in err

    assert main(args + ["--overwrite", "--image-size", "48"]) == 0  # and the tower now runs at 48 px
    assert (out / "notes.txt").read_text() == "mine"
    assert not any(p.name.startswith(".swap-") for p in out.iterdir())
    record = json.loads((out / "swap.json").read_text())
    assert record["resized"] is True and record["processor_settings"]["crop_size"] == {"height": 48, "width": 48}
    reloaded = AutoModelForImageTextToText.from_pretrained(out).eval()
    processor = AutoProcessor.from_pretrained(out)
    inputs = processor(images=_image(), text=PROMPT, return_tensors="pt")
    assert inputs["pixel_values"].shape[-1] == 48
    assert (inputs["input_ids"] == reloaded.config.image_token_index).sum() == 36  # 6 x 6 patches, CLS dropped
    with torch.no_grad():
        assert torch.isfinite(reloaded(**inputs).logits).all()


def test_a_swapped_llava_generates_what_one_built_from_the_converted_weights_generates(clip, llava_dir):
    """Swap in place vs a second copy whose tower is loaded directly from hf_vision_model(conversion)'s
    weights: identical greedy tokens (the swap adds nothing beyond the exact conversion)."""
    processor = AutoProcessor.from_pretrained(llava_dir)
    swapped = AutoModelForImageTextToText.from_pretrained(llava_dir).eval()
    swap_vision_tower(swapped, clip)
    direct = AutoModelForImageTextToText.from_pretrained(llava_dir).eval()
    tower = hf_vision_model(convert_clip_vision(clip), projection=False)
    state = {k.removeprefix("vision_model."): v for k, v in tower.state_dict().items()}
    target = direct.model.vision_tower
    target = getattr(target, "vision_model", target)
    missing, unexpected = target.load_state_dict(state, strict=False)
    assert not unexpected and not [k for k in missing if "position_ids" not in k]
    images = (torch.rand(2, 32, 32, 3, generator=torch.Generator().manual_seed(5)) * 255).to(torch.uint8).numpy()
    batch = processor(images=[Image.fromarray(a) for a in images], text=[PROMPT, PROMPT], return_tensors="pt")
    batch["pixel_values"] = _pixels(clip)  # the tower's own normalization on both sides
    with torch.no_grad():
        a = swapped.generate(**batch, max_new_tokens=6, do_sample=False)
        b = direct.generate(**batch, max_new_tokens=6, do_sample=False)
    assert torch.equal(a, b)


def test_swapped_processor_sees_the_open_clip_input_on_odd_non_square_images(clip, llava_dir: Path, encoder_dir: Path,
                                                                               tmp_path: Path) -> None:
    """The processor written on swap, fed openclip_resize_crop's output, gives open_clip's own preprocess output
    (float rounding) on odd, non-square sizes, including margins of 3 mod 4 where the crops' rounding differ."""
    from open_clip.transform import image_transform

    out = swap_and_save(llava_dir, str(encoder_dir), out_dir=tmp_path / "swapped")
    ip = AutoProcessor.from_pretrained(out).image_processor
    cfg = clip.preprocess_cfg
    oracle = image_transform(32, is_train=False, mean=MEAN, std=STD, resize_mode=cfg.get("resize_mode", "shortest"),
                             interpolation=cfg.get("interpolation", "bicubic"))
    rng = np.random.default_rng(0)
    for h, w in [(40, 49), (49, 40), (50, 61), (61, 50), (40, 47), (77, 45), (33, 33)]:  # margins 7 7 7 7 5 22 0
        img = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        want = oracle(img)
        got = ip(images=openclip_resize_crop(img, image_size=32), return_tensors="pt")["pixel_values"][0]
        assert got.shape == want.shape == (3, 32, 32)
        assert (got - want).abs().max() < 1e-5, (h, w)
    # without the pre-step the processor's own resize + crop is used: same crop where the margin is 1 mod 4 or
    # even (up to uint8 rounding of torch's vs PIL's bicubic: one level / min std), one pixel off otherwise
    img = Image.fromarray(rng.integers(0, 256, (40, 47, 3), dtype=np.uint8))
    raw = ip(images=img, return_tensors="pt")["pixel_values"][0]
    assert (raw - oracle(img)).abs().max() < 1.5 / 255 / min(STD)


@pytest.mark.parametrize("size, message", [("100000", "image_size must be an integer in [1, 4096]"),
                                           ("4096", "more than 65,536")])
def test_cli_swap_refuses_a_huge_image_size_in_one_line(llava_dir: Path, encoder_dir: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture, size: str, message: str) -> None:
    rc = main(["lvlm", "swap", "--lvlm", str(llava_dir), "--encoder", str(encoder_dir), "--out",
               str(tmp_path / "o"), "--image-size", size])
    err = capsys.readouterr().err.strip()  # (4096 px is refused once the tower's patch is known: loading bars first)
    assert rc == 2 and "Traceback" not in err and message in err.splitlines()[-1], err
    assert not (tmp_path / "o").exists()


def test_cli_swap_overwrite_never_replaces_a_folder_no_swap_wrote(llava_dir: Path, encoder_dir: Path,
                                                                 tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "config.json").write_text('{"mine": true}')
    rc = main(["lvlm", "swap", "--lvlm", str(llava_dir), "--encoder", str(encoder_dir), "--out", str(out),
               "--overwrite"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "\n" not in err and "no swap.json" in err, err
    assert [p.name for p in out.iterdir()] == ["config.json"] and (out / "config.json").read_text() == '{"mine": true}'
