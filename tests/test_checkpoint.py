"""Checkpoint round trips: our hub-layout directory, open_clip local-dir, and published-style state dicts."""
from __future__ import annotations

import open_clip
import pytest
import torch
from safetensors.torch import save_file

from mmrobust.errors import ConfigError, DataError
from mmrobust.models import create_clip, save_clip


def _same(a, b, x):
    return torch.allclose(a.encode_image(x), b.encode_image(x)) and torch.equal(
        a.encode_text(a.tokenize(["a red star"])), b.encode_text(b.tokenize(["a red star"])))


def test_save_and_load_model_dir(tmp_path):
    m = create_clip("mmrobust-micro", seed=3)
    save_clip(m, tmp_path / "m")
    assert (tmp_path / "m" / "open_clip_model.safetensors").is_file()
    m2 = create_clip(str(tmp_path / "m"))
    x = torch.rand(2, 3, 16, 16)
    assert _same(m, m2, x)
    # open_clip itself loads the directory (the hub layout of hf-hub:chs20/fare2-clip style models)
    oc = open_clip.create_model(f"local-dir:{tmp_path / 'm'}")
    assert torch.allclose(oc.encode_image(m.normalize_pixels(x)), m.encode_image(x), atol=1e-5)  # attention kernels differ


@pytest.mark.parametrize("wrap", ["plain", "state_dict_module", "safetensors"])
def test_load_published_style_state_dicts(tmp_path, wrap):
    src = create_clip("mmrobust-micro", seed=5)
    sd = src.model.state_dict()
    if wrap == "plain":  # open_clip / FARE style: torch.save(model.state_dict())
        path = tmp_path / "w.pt"
        torch.save(sd, path)
    elif wrap == "state_dict_module":  # CleanCLIP / DDP style: {"state_dict": {"module.xxx": ...}, "epoch": ...}
        path = tmp_path / "epoch_10.pt"
        torch.save({"epoch": 10, "state_dict": {f"module.{k}": v for k, v in sd.items()}}, path)
    else:
        path = tmp_path / "w.safetensors"
        save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    m = create_clip("mmrobust-micro", seed=99, checkpoint=path)
    assert _same(src, m, torch.rand(2, 3, 16, 16))


def test_pickled_code_is_never_executed(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.pt"
    torch.save({"state_dict": {"x": Evil()}}, path)
    with pytest.raises(DataError, match="cannot read checkpoint"):
        create_clip("mmrobust-micro", checkpoint=path)


def test_mismatched_checkpoint_is_a_one_line_error(tmp_path):
    path = tmp_path / "tiny.pt"
    torch.save(create_clip("mmrobust-tiny").model.state_dict(), path)
    with pytest.raises(ConfigError, match="does not fit the model architecture"):
        create_clip("mmrobust-micro", checkpoint=path)
    with pytest.raises(ConfigError, match="unknown model"):
        create_clip("ViT-Nope-99")
