"""Model loading refuses what would silently give wrong results or exhaust memory, with one-line errors:
a model folder without weights, a preprocess std of 0, NaN/inf weights, absurd config sizes, and
broken folders (garbage or wrong-shape weights, zero patch size, a config that is a list or not JSON)."""
from __future__ import annotations

import json
import time

import open_clip
import pytest
import torch
from safetensors.torch import save_file

from mmrobust.errors import ConfigError, DataError
from mmrobust.models import create_clip, save_clip
from mmrobust.models.limits import check_model_cfg, estimate_params

CONFIG, WEIGHTS = "open_clip_config.json", "open_clip_model.safetensors"


def _model_dir(tmp_path, name="m", seed=0):
    return save_clip(create_clip("mmrobust-micro", seed=seed), tmp_path / name)


def _edit_config(d, fn):
    cfg = json.loads((d / CONFIG).read_text())
    fn(cfg)
    (d / CONFIG).write_text(json.dumps(cfg))


def test_model_dir_with_config_but_no_weights_is_refused(tmp_path):
    d = _model_dir(tmp_path)
    (d / WEIGHTS).unlink()
    with pytest.raises(ConfigError, match="no weights.*random weights"):
        create_clip(str(d))
    ckpt = tmp_path / "w.safetensors"  # weights given another way are fine
    save_file({k: v.contiguous() for k, v in create_clip("mmrobust-micro", seed=2).model.state_dict().items()},
              str(ckpt))
    m = create_clip(str(d), checkpoint=ckpt)
    assert torch.equal(m.model.logit_scale, create_clip("mmrobust-micro", seed=2).model.logit_scale)


@pytest.mark.parametrize("std, match", [([0.0, 0.0, 0.0], "at least 1e-3"), ([0.3, 0.0, 0.3], "at least 1e-3"),
                                        ([0.3, 0.3], "3 finite numbers"), (["x", 1, 1], "3 finite numbers")])
def test_preprocess_std_zero_or_malformed_is_refused(tmp_path, std, match):
    d = _model_dir(tmp_path)
    _edit_config(d, lambda c: c["preprocess_cfg"].update(std=std))
    with pytest.raises(ConfigError, match=match):
        create_clip(str(d))


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_weights_are_refused_on_load(tmp_path, bad):
    m = create_clip("mmrobust-micro", seed=0)
    with torch.no_grad():
        m.model.visual.conv1.weight[0, 0, 0, 0] = bad
    d = save_clip(m, tmp_path / "m")
    with pytest.raises(DataError, match="non-finite .*visual.conv1.weight"):
        create_clip(str(d))
    ckpt = tmp_path / "w.pt"
    torch.save(m.model.state_dict(), ckpt)
    with pytest.raises(DataError, match="non-finite"):
        create_clip("mmrobust-micro", checkpoint=ckpt)


@pytest.mark.parametrize("tower, key, value", [
    ("vision_cfg", "layers", 10**6), ("vision_cfg", "width", 10**7), ("vision_cfg", "patch_size", 0),
    ("vision_cfg", "image_size", 10**6), ("text_cfg", "layers", 10**6), ("text_cfg", "width", 10**7),
    ("text_cfg", "vocab_size", 10**9), ("text_cfg", "context_length", 10**7), ("vision_cfg", "layers", "12"),
    ("vision_cfg", "width", True), ("vision_cfg", "mlp_ratio", 1e6), (None, "embed_dim", 10**8),
    ("vision_cfg", "patch_size", 64),  # larger than the 16 px image
])
def test_absurd_config_sizes_are_refused_before_building(tmp_path, tower, key, value):
    d = _model_dir(tmp_path)
    _edit_config(d, lambda c: (c["model_cfg"][tower] if tower else c["model_cfg"]).update({key: value}))
    t0 = time.monotonic()
    with pytest.raises(ConfigError, match=key):
        create_clip(str(d))
    assert time.monotonic() - t0 < 2.0


def test_large_but_sane_sizes_are_bounded_by_the_parameter_estimate():
    cfg = {"embed_dim": 1024, "vision_cfg": {"layers": 256, "width": 16_384, "patch_size": 16, "image_size": 224},
           "text_cfg": {"layers": 12, "width": 512}}
    with pytest.raises(ConfigError, match="parameters"):
        check_model_cfg(cfg, source="big")
    with pytest.raises(ConfigError, match="image patches"):
        check_model_cfg({"embed_dim": 64, "vision_cfg": {"patch_size": 1, "image_size": 4096}}, source="many")


def test_every_stock_open_clip_config_passes_the_bounds():
    for name in open_clip.list_models():
        check_model_cfg(open_clip.get_model_config(name), source=name)
    vit_b = estimate_params(open_clip.get_model_config("ViT-B-32"))
    assert 1.2e8 < vit_b < 1.8e8  # ViT-B/32 has 151M parameters


def _wrong_shape(d, tmp_path):
    sd = create_clip("mmrobust-tiny").model.state_dict()
    save_file({k: v.contiguous() for k, v in sd.items()}, str(d / WEIGHTS))


BROKEN = {
    "garbage weights": lambda d, tmp: (d / WEIGHTS).write_bytes(b"\x00garbage" * 64),
    "truncated weights": lambda d, tmp: (d / WEIGHTS).write_bytes((d / WEIGHTS).read_bytes()[:300]),
    "wrong-shape weights": _wrong_shape,
    "no weights": lambda d, tmp: (d / WEIGHTS).unlink(),
    "zero patch size": lambda d, tmp: _edit_config(d, lambda c: c["model_cfg"]["vision_cfg"].update(patch_size=0)),
    "config is a list": lambda d, tmp: (d / CONFIG).write_text("[1, 2, 3]"),
    "config not JSON": lambda d, tmp: (d / CONFIG).write_text("model_cfg: {embed_dim: 32"),
    "config binary": lambda d, tmp: (d / CONFIG).write_bytes(b"\xff\xfe\x00\x81" * 10),
    "model_cfg a string": lambda d, tmp: (d / CONFIG).write_text('{"model_cfg": "ViT-B-32"}'),
    "vision_cfg a list": lambda d, tmp: _edit_config(d, lambda c: c["model_cfg"].update(vision_cfg=[1])),
    "preprocess_cfg a list": lambda d, tmp: _edit_config(d, lambda c: c.update(preprocess_cfg=[])),
    "std zero": lambda d, tmp: _edit_config(d, lambda c: c["preprocess_cfg"].update(std=[0, 0, 0])),
    "unknown config key": lambda d, tmp: _edit_config(d, lambda c: c["model_cfg"]["vision_cfg"].update(bogus=1)),
    "nan weights": lambda d, tmp: save_file({k: torch.full_like(v, float("nan")) for k, v in
                                             create_clip("mmrobust-micro").model.state_dict().items()},
                                            str(d / WEIGHTS)),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_broken_model_folder_is_a_one_line_cli_error(tmp_path, micro_world, capsys, case):
    from mmrobust.cli.main import main

    d = _model_dir(tmp_path)
    BROKEN[case](d, tmp_path)
    code = main(["eval", "zeroshot", "--model", str(d), "--data", str(micro_world.test_manifest),
                 "--classes", str(micro_world.classes), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("mmrobust eval: error:"), err
    assert "Traceback" not in err
    assert not (tmp_path / "out" / "results_zeroshot.json").exists()


def test_intact_model_folder_still_evaluates(tmp_path, micro_world):
    from mmrobust.cli.main import main

    d = _model_dir(tmp_path)
    assert main(["eval", "zeroshot", "--model", str(d), "--data", str(micro_world.test_manifest),
                 "--classes", str(micro_world.classes), "--out", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "results_zeroshot.json").is_file()
