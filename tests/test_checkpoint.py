"""Checkpoint round trips: our hub-layout directory, open_clip local-dir, and published-style state dicts."""
from __future__ import annotations

import json
from pathlib import Path

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
    with pytest.raises(DataError, match="cannot read checkpoint") as e:
        create_clip("mmrobust-micro", checkpoint=path)
    msg = str(e.value)
    assert "holds pickled code (print)" in msg and "safetensors.torch.save_file(sd, 'model.safetensors')" in msg
    assert "\n" not in msg and "\x1b" not in msg


def test_mismatched_checkpoint_is_a_one_line_error(tmp_path):
    path = tmp_path / "tiny.pt"
    torch.save(create_clip("mmrobust-tiny").model.state_dict(), path)
    with pytest.raises(ConfigError, match="does not fit the model architecture"):
        create_clip("mmrobust-micro", checkpoint=path)
    with pytest.raises(ConfigError, match="unknown model"):
        create_clip("ViT-Nope-99")


def _micro_state():
    return {k: v.contiguous() for k, v in create_clip("mmrobust-micro", seed=5).model.state_dict().items()}


@pytest.mark.parametrize("name,content", [
    ("garbage.safetensors", b"\xff" * 100),
    ("empty.safetensors", b""),
    ("huge_header.safetensors", (2**40).to_bytes(8, "little") + b"{}"),
    ("truncated.pt", "truncate"),
    ("garbage.pt", b"hello world" * 10),
    ("empty.bin", b""),
])
def test_damaged_checkpoint_files_are_one_line_errors(tmp_path, name, content):
    path = tmp_path / name
    if content == "truncate":
        torch.save(_micro_state(), path)
        content = path.read_bytes()[:3000]
    path.write_bytes(content)
    with pytest.raises(DataError, match="it is truncated or not a PyTorch/safetensors file") as e:
        create_clip("mmrobust-micro", checkpoint=path)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("change", ["logit_scale_numel", "wrong_shape", "int_keys"])
def test_wrong_shape_safetensors_is_a_one_line_error(tmp_path, change):
    sd = _micro_state()
    if change == "logit_scale_numel":
        sd["logit_scale"] = torch.ones(3)
    elif change == "wrong_shape":
        sd["visual.proj"] = torch.zeros(3, 3)
    path = tmp_path / "w.safetensors"
    save_file(sd, str(path))
    if change == "int_keys":  # a .pt whose dict has non-string keys and no tensors we know
        path = tmp_path / "w.pt"
        torch.save({1: torch.zeros(2), "other": torch.zeros(2)}, path)
    with pytest.raises(ConfigError, match="does not fit the model architecture") as e:
        create_clip("mmrobust-micro", checkpoint=path)
    assert "\n" not in str(e.value)


def test_model_directory_as_checkpoint(tmp_path):
    src = create_clip("mmrobust-micro", seed=5)
    save_clip(src, tmp_path / "m")
    m = create_clip("mmrobust-micro", seed=99, checkpoint=tmp_path / "m")
    assert _same(src, m, torch.rand(2, 3, 16, 16))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="has no open_clip_model.safetensors"):
        create_clip("mmrobust-micro", checkpoint=tmp_path / "empty")


def test_cli_bad_checkpoint_is_one_line_and_writes_nothing(tmp_path, micro_world, capsys):
    from mmrobust.cli.main import main

    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00" * 64)
    out = tmp_path / "run"
    rc = main(["train", "--task", "clip", "--model", "mmrobust-micro", "--checkpoint", str(bad), "--data",
               str(micro_world.train_manifest), "--out", str(out), "--steps", "1", "--batch-size", "8", "--quiet"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "cannot read checkpoint" in err and len(err.splitlines()) == 1
    assert not out.exists() or not any(out.iterdir())


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


@pytest.fixture(scope="module")
def evil_files(tmp_path_factory):
    """A .pt state dict and a LLaVA folder whose pytorch_model.bin (no safetensors) hold pickled code."""
    from safetensors.torch import load_file

    from mmrobust.world.llava import build_tiny_llava
    from mmrobust.world.mmr import generate_mmr_world
    from mmrobust.world.shapes import generate_world

    root = tmp_path_factory.mktemp("evil")
    pt = root / "evil.pt"
    torch.save({"state_dict": {"x": _Evil()}}, pt)
    llava = build_tiny_llava(root / "llava", seed=0, image_size=32)
    sd = load_file(str(llava / "model.safetensors"))
    (llava / "model.safetensors").unlink()
    torch.save({**sd, "evil": _Evil()}, llava / "pytorch_model.bin")
    world = generate_mmr_world(root / "mmr", pairs_per_category=1, seed=0, image_size=16)
    shapes = generate_world(root / "shapes", n_train=8, n_test=4, image_size=16, seed=0)
    rows = [{"image": "images/attribute/color/01.png", "question": "what colour?", "answer": "red"}] * 2
    (root / "mmr" / "sft.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return {"pt": pt, "llava": llava, "world": world.parent, "sft": root / "mmr" / "sft.jsonl", "shapes": shapes,
            "enc": create_clip("mmrobust-tiny", seed=0)}


def _evil_argvs(f: dict, tmp: Path) -> dict[str, list[str]]:
    from mmrobust.models.clip import save_clip

    enc = save_clip(f["enc"], tmp / "enc")
    return {
        "--pretrained": ["train", "--task", "clip", "--model", "mmrobust-micro", "--pretrained", str(f["pt"]),
                         "--data", str(f["shapes"].train_manifest), "--steps", "1", "--out", str(tmp / "o")],
        "--reference-pretrained": ["eval", "robust", "--model", str(enc), "--data", str(f["shapes"].test_manifest),
                                   "--classes", str(f["shapes"].classes), "--reference", "mmrobust-tiny",
                                   "--reference-pretrained", str(f["pt"]), "--n-samples", "2", "--steps", "1",
                                   "--out", str(tmp / "o")],
        "lvlm swap --encoder": ["lvlm", "swap", "--lvlm", str(f["llava"]), "--encoder", "mmrobust-tiny",
                                "--pretrained", str(f["pt"]), "--out", str(tmp / "o")],
        "lvlm swap pytorch_model.bin": ["lvlm", "swap", "--lvlm", str(f["llava"]), "--encoder", str(enc),
                                        "--out", str(tmp / "o")],
        "mmr run --adapter hf": ["mmr", "run", "--data", str(f["world"]), "--adapter", "hf", "--model",
                                 str(f["llava"]), "--out", str(tmp / "o")],
        "train --task mllm-sft": ["train", "--task", "mllm-sft", "--model", str(f["llava"]), "--data",
                                  str(f["sft"]), "--out", str(tmp / "o"), "--steps", "1", "--quiet"],
    }


@pytest.mark.parametrize("where", ["--pretrained", "--reference-pretrained", "lvlm swap --encoder",
                                   "lvlm swap pytorch_model.bin", "mmr run --adapter hf", "train --task mllm-sft"])
def test_pickled_code_is_refused_in_one_documented_line_wherever_a_checkpoint_is_given(evil_files, tmp_path,
                                                                                        capsys, where):
    from mmrobust.cli.main import main

    argv = _evil_argvs(evil_files, tmp_path)[where]
    capsys.readouterr()
    rc = main(argv)
    out, err = capsys.readouterr()
    last = err.strip().splitlines()[-1] if err.strip() else ""
    assert rc == 2 and "holds pickled code (print), which mmrobust never runs" in last, err
    assert "Traceback" not in err and "pwned" not in out + err
