"""open_clip ViT <-> transformers CLIPVisionModel conversion (FARE's LLaVA swap), on random local towers."""
from __future__ import annotations

import copy
import json
from types import SimpleNamespace

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image
from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel, CLIPVisionModelWithProjection

from mmrobust.errors import ConfigError
from mmrobust.lvlm import (
    check_convertible, convert_clip_vision, hf_to_openclip_vision, hf_vision_model, image_processor_settings,
    load_hf_vision, openclip_to_hf_vision, resize_position_embedding, vision_feature,
)
from mmrobust.models.clip import create_clip

MEAN, STD = list(open_clip.OPENAI_DATASET_MEAN), list(open_clip.OPENAI_DATASET_STD)
TEXT = {"context_length": 4, "vocab_size": 16, "width": 16, "heads": 2, "layers": 1}  # unused, kept tiny
SIZES = {  # two sizes: our tiny config, and a shrunken copy of the stock ViT-B-32 (patch 32 kept)
    "tiny": ("mmrobust-tiny", {}),
    "b32": ("ViT-B-32", {"width": 64, "layers": 2, "head_width": 16, "image_size": 96}),
    "p14": ("ViT-L-14", {"width": 32, "layers": 2, "head_width": 16, "image_size": 224}),  # LLaVA's patch 14
}
ATOL = RTOL = 1e-5


def _tower(size: str, act: str = "gelu", *, seed: int = 0, **vision: object) -> torch.nn.Module:
    """A random open_clip image tower (eval mode), every tensor jittered so biases and LN affines are nonzero."""
    name, shrink = SIZES[size]
    cfg = copy.deepcopy(open_clip.get_model_config(name))
    cfg.pop("quick_gelu", None)
    cfg["vision_cfg"].update(shrink, **vision)
    cfg["text_cfg"], cfg["embed_dim"] = TEXT, min(cfg["embed_dim"], 48)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        visual = open_clip.CLIP(**cfg, quick_gelu=act == "quick_gelu").visual
        with torch.no_grad():
            for p in visual.parameters():
                p.add_(0.1 * torch.randn_like(p))
    return visual.eval()


def _pixels(visual: torch.nn.Module, n: int = 2, size: int | None = None) -> torch.Tensor:
    """Images in [0,1], normalized with the OpenAI mean/std (the same input for both towers)."""
    size = size or visual.image_size[0]
    images = torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(1))
    return (images - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)


def _stream(visual: torch.nn.Module, pixels: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
    """open_clip's residual stream, batch first: [ln_pre output, output of resblock 0, 1, ...], and encode_image."""
    seq_first = not visual.transformer.batch_first  # older open_clip ran blocks as (L, N, D)
    outs: list[torch.Tensor] = []
    hooks = [visual.ln_pre.register_forward_hook(lambda m, i, o: outs.append(o))]
    hooks += [b.register_forward_hook(lambda m, i, o: outs.append(o.transpose(0, 1) if seq_first else o))
              for b in visual.transformer.resblocks]
    try:
        with torch.no_grad():
            embeds = visual(pixels)
    finally:
        for h in hooks:
            h.remove()
    return outs, embeds


def _convert(visual: torch.nn.Module, **kw: object):
    return openclip_to_hf_vision(visual, image_mean=MEAN, image_std=STD, **kw)


def _assert_matches(visual: torch.nn.Module, hf: CLIPVisionModelWithProjection, pixels: torch.Tensor) -> None:
    """Every hidden state = open_clip's residual stream; pooled = ln_post(class token); embeds = encode_image."""
    stream, embeds = _stream(visual, pixels)
    with torch.no_grad():
        out = hf(pixel_values=pixels, output_hidden_states=True)
        pooled = hf.vision_model(pixel_values=pixels).pooler_output
        ref_pooled = visual.ln_post(stream[-1][:, 0])
    assert len(out.hidden_states) == len(visual.transformer.resblocks) + 1 == len(stream)
    for i, (h, ref) in enumerate(zip(out.hidden_states, stream)):
        torch.testing.assert_close(h, ref, atol=ATOL, rtol=RTOL, msg=lambda m: f"hidden_states[{i}]: {m}")
    torch.testing.assert_close(out.last_hidden_state, stream[-1], atol=ATOL, rtol=RTOL)
    torch.testing.assert_close(pooled, ref_pooled, atol=ATOL, rtol=RTOL)
    torch.testing.assert_close(out.image_embeds, embeds, atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("act", ["gelu", "quick_gelu"])
@pytest.mark.parametrize("size", ["tiny", "b32"])
def test_hidden_states_pooled_and_embeds_match(size, act):
    visual = _tower(size, act)
    conv = _convert(visual)
    assert conv.config.hidden_act == act and conv.config.layer_norm_eps == 1e-5
    assert conv.config.num_hidden_layers == len(visual.transformer.resblocks)
    hf = hf_vision_model(conv)
    assert not hf.training and type(hf) is CLIPVisionModelWithProjection
    _assert_matches(visual, hf, _pixels(visual))


def test_seq_first_layout_converts_the_same():
    """Older open_clip ran blocks seq-first (L, N, D): same weights, same conversion, hooks transposed."""
    visual = _tower("tiny", "quick_gelu")
    hf = hf_vision_model(_convert(visual))
    visual.transformer.batch_first = False
    for block in visual.transformer.resblocks:
        block.attn.batch_first = False
    _assert_matches(visual, hf, _pixels(visual))


@pytest.mark.parametrize("vision", [{"final_ln_after_pool": True}, {"norm_kwargs": {"eps": 1e-6}},
                                    {"pos_embed_type": "sin_cos_2d"}], ids=["final_ln", "eps", "sincos"])
def test_accepted_variants_match(vision):
    visual = _tower("tiny", **vision)
    conv = _convert(visual)
    assert conv.config.layer_norm_eps == visual.ln_pre.eps
    _assert_matches(visual, hf_vision_model(conv), _pixels(visual))


def test_vision_feature_is_penultimate_patch_tokens():
    visual = _tower("b32", "quick_gelu")
    hf = hf_vision_model(_convert(visual))
    pixels = _pixels(visual)
    stream, _ = _stream(visual, pixels)
    with torch.no_grad():
        feats = vision_feature(hf, pixels)
        full = vision_feature(hf, pixels, layer=0, select="full")
    assert feats.shape == (2, 9, 64)  # (96 / 32)^2 patches, class token dropped
    torch.testing.assert_close(feats, stream[-2][:, 1:], atol=ATOL, rtol=RTOL)  # output of the next-to-last block
    torch.testing.assert_close(full, stream[0], atol=ATOL, rtol=RTOL)
    for bad in ({"layer": 3}, {"layer": -4}, {"select": "cls"}):
        with pytest.raises(ConfigError, match="layer|select"):
            vision_feature(hf, pixels, **bad)


@pytest.mark.parametrize("act", ["gelu", "quick_gelu"])
@pytest.mark.parametrize("size", ["tiny", "b32"])
def test_round_trip_is_exact(size, act):
    visual, other = _tower(size, act), _tower(size, act, seed=7)
    hf = hf_vision_model(_convert(visual))
    assert hf_to_openclip_vision(hf, other) is other
    want, got = visual.state_dict(), other.state_dict()
    assert want.keys() == got.keys()
    assert all(torch.equal(want[k], got[k]) for k in want)
    hf2 = hf_vision_model(_convert(other))  # and HF -> open_clip -> HF
    assert all(torch.equal(v, hf2.state_dict()[k]) for k, v in hf.state_dict().items())


def test_save_pretrained_reloads_identically(tmp_path):
    visual = _tower("tiny", "quick_gelu")
    conv = _convert(visual)
    hf = hf_vision_model(conv)
    hf.save_pretrained(tmp_path / "tower")
    CLIPImageProcessor(**conv.image_processor).save_pretrained(tmp_path / "tower")
    (tmp_path / "tower" / "conversion.json").write_text(json.dumps(conv.record))  # the record is JSON-ready
    pixels = _pixels(visual)
    back = CLIPVisionModelWithProjection.from_pretrained(tmp_path / "tower").eval()
    with torch.no_grad():
        a, b = hf(pixel_values=pixels, output_hidden_states=True), back(pixel_values=pixels, output_hidden_states=True)
    assert torch.equal(a.image_embeds, b.image_embeds)
    assert all(torch.equal(x, y) for x, y in zip(a.hidden_states, b.hidden_states))
    proc = CLIPImageProcessor.from_pretrained(tmp_path / "tower")
    assert proc.image_mean == pytest.approx(MEAN) and proc.image_std == pytest.approx(STD)


def test_plain_clip_vision_model_as_in_llava():
    """LLaVA's tower is a CLIPVisionModel (no projection): load into it; back to open_clip needs keep_proj."""
    visual = _tower("tiny", "quick_gelu")
    conv = _convert(visual)
    tower = load_hf_vision(CLIPVisionModel(conv.config).eval(), conv)
    pixels = _pixels(visual)
    stream, _ = _stream(visual, pixels)
    with torch.no_grad():
        torch.testing.assert_close(vision_feature(tower, pixels), stream[-2][:, 1:], atol=ATOL, rtol=RTOL)
    other = _tower("tiny", "quick_gelu", seed=3)
    with pytest.raises(ConfigError, match="keep_proj"):
        hf_to_openclip_vision(tower, other)
    proj = other.proj.detach().clone()
    hf_to_openclip_vision(tower, other, keep_proj=True)
    assert torch.equal(other.proj, proj) and torch.equal(other.conv1.weight, visual.conv1.weight)


def test_clip_wrapper_conversion_and_image_processor():
    clip = create_clip("mmrobust-tiny").eval()
    conv = convert_clip_vision(clip)
    assert conv.record["source_model"] == "mmrobust-tiny" and conv.record["position_embedding"]["resized"] is False
    hf = hf_vision_model(conv)
    rgb = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)  # already at the tower's size
    processed = CLIPImageProcessor(**conv.image_processor)(images=Image.fromarray(rgb), return_tensors="pt")
    images = torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255
    torch.testing.assert_close(processed["pixel_values"], clip.normalize_pixels(images), atol=1e-5, rtol=0)
    with torch.no_grad():
        embeds = hf(pixel_values=processed["pixel_values"]).image_embeds
        torch.testing.assert_close(embeds, clip.encode_image(images), atol=ATOL, rtol=RTOL)


def test_image_processor_settings():
    s = image_processor_settings(image_mean=MEAN, image_std=STD, image_size=336)
    assert s["size"] == {"shortest_edge": 336} and s["crop_size"] == {"height": 336, "width": 336}
    assert s["resample"] == 3 and s["do_center_crop"] and s["image_mean"] == pytest.approx(MEAN)
    squash = image_processor_settings(image_mean=MEAN, image_std=STD, image_size=224, resize_mode="squash")
    assert squash["size"] == {"height": 224, "width": 224} and not squash["do_center_crop"]
    for bad in ({"resize_mode": "longest"}, {"interpolation": "lanczos"}, {"image_std": [0.0, 0.2, 0.2]}):
        with pytest.raises(ConfigError):
            image_processor_settings(**{"image_mean": MEAN, "image_std": STD, "image_size": 224, **bad})


def test_resize_position_embedding():
    pos = torch.randn(257, 32, generator=torch.Generator().manual_seed(0))  # 224 / 14 = 16 x 16 grid + class
    assert torch.equal(resize_position_embedding(pos, 16), pos)
    new = resize_position_embedding(pos, 24)  # 336 / 14
    assert new.shape == (577, 32) and torch.equal(new[0], pos[0])
    oracle = {"visual.positional_embedding": pos}  # open_clip's own resize, as used when loading checkpoints
    open_clip.model.resize_pos_embed(oracle, SimpleNamespace(visual=SimpleNamespace(grid_size=(24, 24))))
    torch.testing.assert_close(new, oracle["visual.positional_embedding"], atol=1e-6, rtol=0)
    hf = CLIPVisionModel(CLIPVisionConfig(hidden_size=32, intermediate_size=32, num_hidden_layers=1,
                                          num_attention_heads=2, image_size=224, patch_size=14))
    hf.embeddings.position_embedding.weight.data.copy_(pos)
    hf_way = hf.embeddings.interpolate_pos_encoding(torch.zeros(1, 577, 32), 336, 336)[0]
    torch.testing.assert_close(resize_position_embedding(pos, 24, antialias=False), hf_way, atol=1e-6, rtol=0)
    for bad in (torch.randn(256, 32), torch.randn(1, 257, 32)):
        with pytest.raises(ConfigError, match="g x g"):
            resize_position_embedding(bad, 24)


def test_conversion_to_336_px_records_and_runs():
    visual = _tower("p14", "quick_gelu")
    conv = _convert(visual, image_size=336)
    assert conv.config.image_size == 336 and conv.image_processor["crop_size"] == {"height": 336, "width": 336}
    assert conv.record["image_size"] == {"old": 224, "new": 336}
    assert conv.record["position_embedding"] == {"resized": True, "old_grid": 16, "new_grid": 24, "method": "bicubic",
                                                 "align_corners": False, "antialias": True, "class_token": "kept"}
    hf = hf_vision_model(conv)
    pos = hf.vision_model.embeddings.position_embedding.weight
    assert torch.equal(pos, resize_position_embedding(visual.positional_embedding, 24))
    pixels = _pixels(visual, n=1, size=336)
    with torch.no_grad():
        feats = vision_feature(hf, pixels)
    assert feats.shape == (1, 576, 32) and bool(torch.isfinite(feats).all())
    at_336 = hf_to_openclip_vision(hf, _tower("p14", "quick_gelu", image_size=336))  # same tower, built at 336
    _assert_matches(at_336, hf, pixels)
    with pytest.raises(ConfigError, match="image_size"):
        hf_to_openclip_vision(hf, _tower("p14", "quick_gelu"))  # a 224 tower cannot take 336 weights
    with pytest.raises(ConfigError, match="multiple of the patch size 14"):
        _convert(visual, image_size=330)


def _resnet() -> torch.nn.Module:
    return open_clip.CLIP(embed_dim=16, vision_cfg={"layers": [1, 1, 1, 1], "width": 8, "image_size": 32,
                                                    "head_width": 64}, text_cfg=TEXT).visual


def _timm() -> torch.nn.Module:
    pytest.importorskip("timm")
    from open_clip.timm_model import TimmModel

    return TimmModel("vit_tiny_patch16_224", embed_dim=16, image_size=32)


@pytest.mark.parametrize(("vision", "match"), [
    ({"attentional_pool": True, "attn_pooler_queries": 4, "attn_pooler_heads": 2}, "attentional pooler"),
    ({"pool_type": "avg"}, "pools by 'avg'"),
    ({"ls_init_value": 1e-5}, "layer scale"),
    ({"patch_dropout": 0.5}, "patch dropout"),
    ({"no_ln_pre": True}, "no ln_pre"),
    ({"qk_norm": True}, "CustomResidualAttentionBlock"),
    ({"image_size": [32, 48]}, "not square"),
    ({"act_kwargs": {"approximate": "tanh"}}, "activation"),
    ({"norm_kwargs": {"elementwise_affine": False}}, "affine"),
], ids=["attn_pool", "avg_pool", "layer_scale", "patch_dropout", "no_ln_pre", "qk_norm", "non_square", "tanh",
        "no_affine"])
def test_unsupported_towers_are_refused(vision, match):
    visual = _tower("tiny", **vision)
    with pytest.raises(ConfigError, match=match) as err:
        _convert(visual)
    assert "\n" not in str(err.value) and "CLIPVisionModel" in str(err.value)


@pytest.mark.parametrize("build", [_resnet, _timm], ids=["resnet", "timm"])
def test_non_vit_towers_are_refused(build):
    with pytest.raises(ConfigError, match="only open_clip VisionTransformer") as err:
        check_convertible(build())
    assert "\n" not in str(err.value)


def test_mismatched_towers_are_refused():
    hf = hf_vision_model(_convert(_tower("tiny", "quick_gelu")))
    with pytest.raises(ConfigError, match="hidden_act 'quick_gelu' vs 'gelu'") as err:
        hf_to_openclip_vision(hf, _tower("tiny", "gelu"))
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="hidden_size"):
        load_hf_vision(CLIPVisionModelWithProjection(hf_vision_model(_convert(_tower("b32"))).config),
                       _convert(_tower("tiny")))
