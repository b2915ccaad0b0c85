"""BadCLIP (Liang et al., CVPR 2024): the ``patch`` trigger that pastes an image file, the patch optimizer on a
surrogate CLIP (determinism, invariants, effect) and `mmrobust make-trigger badclip` -> `mmrobust poison`."""
from __future__ import annotations

import copy
import hashlib
import io
import json
import shlex
import tarfile

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from hypothesis import given
from hypothesis import strategies as st

from _fuzz import FUZZ, HOSTILE, assert_clean_failure, run_cli
from mmrobust.data.poison import (BadCLIPSettings, Patch, PoisonRecord, make_trigger, optimize_patch, poison_manifest,
                                  poison_shards, trigger_from_dict, trigger_spec)
from mmrobust.data.poison.patch import save_patch_png
from mmrobust.errors import ConfigError, DataError
from mmrobust.losses import badclip_text_loss, badclip_visual_loss
from mmrobust.models import create_clip
from mmrobust.models.clip import zero_shot_weights

STAR = 4  # index of "star" in the world's classes.json


def _rand(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed))


@pytest.fixture()
def png(tmp_path):
    """A 4x4 patch saved as PNG, and its pixels (what the PNG stores)."""
    path = tmp_path / "patch.png"
    sha = save_patch_png(_rand(3, 4, 4), path)
    pixels = torch.from_numpy(np.array(Image.open(path))).permute(2, 0, 1).float() / 255
    return path, sha, pixels


@pytest.fixture(scope="module")
def surrogate(micro_world, tmp_path_factory):
    """A clean mmrobust-micro CLIP trained for a few seconds on the 16 px micro world (a model directory)."""
    out = tmp_path_factory.mktemp("surrogate")
    rc, _, err = run_cli(["train", "--task", "clip", "--model", "mmrobust-micro", "--data",
                          str(micro_world.train_manifest), "--out", str(out), "--steps", "300", "--batch-size", "64",
                          "--lr", "4e-3", "--warmup", "10", "--quiet", "--ckpt-every", "0"])
    assert rc == 0, err
    return out / "model"


# --- the patch trigger ---------------------------------------------------------------------------------------


def test_patch_trigger_pastes_the_png_exactly_and_only_there(png):
    path, sha, pixels = png
    trig = Patch(file=str(path))
    assert (trig.sha256, trig.size, trig.file) == (sha, 4, str(path.resolve()))
    x = torch.full((2, 3, 16, 16), 0.5)
    y = trig(x)
    assert torch.equal(x, torch.full((2, 3, 16, 16), 0.5)), "input untouched"
    assert torch.equal(y[:, :, 12:, 12:], pixels.expand(2, 3, 4, 4)), "bottom right, the PNG's 8-bit values"
    y[:, :, 12:, 12:] = 0.5
    assert torch.equal(y, x), "nothing outside the patch changes"
    assert trig(x[0]).shape == (3, 16, 16) and torch.equal(trig(x), trig(x))
    small = Patch(file=str(path), size=2, location="top_left")(x)
    assert (small != x).any(1)[:, 2:, :].sum() == 0 and (small != x).any(1)[:, :, 2:].sum() == 0
    assert torch.allclose(small[0, :, :2, :2], F.interpolate(pixels[None], size=(2, 2), mode="bilinear",
                                                             antialias=True, align_corners=False)[0], atol=1e-6)


def test_patch_trigger_random_location_and_dtypes(png):
    path, _, pixels = png
    trig = Patch(file=str(path), location="random")
    x = torch.full((16, 3, 12, 12), 0.5)
    corners = set()
    for img, out in zip(x, trig(x)):
        rows, cols = (out != img).any(0).nonzero(as_tuple=True)
        t, l = int(rows.min()), int(cols.min())
        assert torch.equal(out[:, t : t + 4, l : l + 4], pixels)
        corners.add((t, l))
    assert len(corners) > 1
    y64 = Patch(file=str(path))(x.double())
    assert y64.dtype == torch.float64 and torch.allclose(y64.float(), Patch(file=str(path))(x))


def test_patch_trigger_round_trips_through_specs_from_any_folder(png, tmp_path, monkeypatch):
    path, sha, _ = png
    monkeypatch.chdir(path.parent)
    trig = make_trigger("patch", file="patch.png", size="4", location="top_right")  # CLI strings, relative path
    spec = json.loads(json.dumps(trigger_spec(trig)))
    assert spec == {"name": "patch", "config": {"file": str(path.resolve()), "sha256": sha, "size": 4,
                                                "location": "top_right", "margin": 0, "seed": 0}}
    monkeypatch.chdir(tmp_path.parent)
    assert trigger_from_dict(spec) == trig and make_trigger("patch", **trig.to_dict()) == trig
    x = _rand(2, 3, 8, 8)
    assert torch.equal(trigger_from_dict(spec)(x), trig(x))


def test_patch_trigger_refuses_changed_missing_and_bad_files(png, tmp_path):
    path, sha, _ = png
    cases = [(dict(file=str(path), sha256="0" * 64), DataError, "changed since"),
             (dict(file=str(tmp_path / "gone.png")), DataError, "not found"),
             (dict(file=str(tmp_path)), DataError, "not a regular file"),
             (dict(), ConfigError, "needs file=PATH"),
             (dict(file=str(path), sha256="abc"), ConfigError, "64 hex"),
             (dict(file=str(path), size=-1), ConfigError, "size"),
             (dict(file=str(path), location="left"), ConfigError, "location")]
    (tmp_path / "junk.png").write_bytes(b"not an image")
    Image.new("RGB", (4, 3)).save(tmp_path / "wide.png")
    cases += [(dict(file=str(tmp_path / "junk.png")), DataError, "not an image"),
              (dict(file=str(tmp_path / "wide.png")), ConfigError, "not square")]
    for params, error, match in cases:
        with pytest.raises(error, match=match) as e:
            make_trigger("patch", **params)
        assert "\n" not in str(e.value)
    assert Patch(file=str(path), sha256=sha.upper()).sha256 == sha
    assert Patch(file=str(tmp_path / "wide.png"), size=2).size == 2
    with pytest.raises(ConfigError, match="does not fit"):
        Patch(file=str(path))(torch.rand(3, 3, 3))


def test_save_patch_png_is_byte_deterministic(tmp_path):
    p = _rand(3, 6, 6, seed=5)
    assert save_patch_png(p, tmp_path / "a.png") == save_patch_png(p.clone(), tmp_path / "b.png")
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()
    assert not list(tmp_path.glob("*.tmp"))


# --- the loss terms and the optimizer ------------------------------------------------------------------------


def test_loss_terms_match_naive_formulas():
    emb = F.normalize(_rand(5, 8) - 0.5, dim=-1)
    text = F.normalize(_rand(4, 8, seed=1) - 0.5, dim=-1)
    ce = badclip_text_loss(emb, text, 2, 30.0)
    for i in range(5):
        logits = [30.0 * float(emb[i] @ text[k]) for k in range(4)]
        naive = -logits[2] + torch.logsumexp(torch.tensor(logits), 0).item()
        assert abs(ce[i].item() - naive) < 1e-4
    pos, neg = F.normalize(_rand(5, 8, seed=2), dim=-1), F.normalize(_rand(5, 8, seed=3), dim=-1)
    tri = badclip_visual_loss(emb, pos, neg, margin=0.5)
    for i in range(5):
        naive = max(0.0, float((emb[i] - pos[i]).norm() - (emb[i] - neg[i]).norm()) + 0.5)
        assert abs(tri[i].item() - naive) < 1e-4


def _inputs(model, n: int = 12, seed: int = 0):
    images = list(_rand(n, 3, 16, 16, seed=seed))
    with torch.no_grad():
        positives = model.encode_image(_rand(4, 3, 16, 16, seed=seed + 1), normalize=True)
        text = zero_shot_weights(model, ["circle", "square", "star"], ["a photo of a {}."])
    return dict(images=images, positives=positives, class_text=text, target=2)


def test_optimize_patch_is_seeded_in_range_and_leaves_the_model_alone():
    model = create_clip("mmrobust-micro", seed=0)
    before = copy.deepcopy(model.state_dict())
    s = BadCLIPSettings(size=4, steps=6, lr=0.05, batch_size=4, location="random", seed=1)
    a = optimize_patch(model, **_inputs(model), settings=s)
    b = optimize_patch(model, **_inputs(model), settings=s)
    c = optimize_patch(model, **_inputs(model), settings=BadCLIPSettings(size=4, steps=6, lr=0.05, batch_size=4,
                                                                         location="random", seed=2))
    assert a.patch.shape == (3, 4, 4) and torch.equal(a.patch, b.patch) and not torch.equal(a.patch, c.patch)
    assert a.patch.min() >= 0 and a.patch.max() <= 1 and torch.equal(a.patch, (a.patch * 255).round() / 255)
    assert a.initial == b.initial and a.final == b.final and set(a.final) == {"total", "text", "visual",
                                                                             "target_cos", "clean_target_cos"}
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("params,match", [
    (dict(size=0), "size"), (dict(location="left"), "location"), (dict(steps=0), "steps"), (dict(lr=0.0), "lr"),
    (dict(lr=float("inf")), "lr"), (dict(batch_size=-3), "batch_size"), (dict(margin=-1.0), "margin"),
    (dict(text_weight=0.0, visual_weight=0.0), "both 0"), (dict(seed=-1), "seed"), (dict(max_images=0), "max_images"),
    (dict(steps=True), "steps"),
])
def test_settings_refuse_hostile_values_in_one_line(params, match):
    with pytest.raises(ConfigError, match=match) as e:
        BadCLIPSettings(**params)
    assert "\n" not in str(e.value)


def test_optimize_patch_refuses_malformed_inputs():
    model = create_clip("mmrobust-micro", seed=0)
    good = _inputs(model, n=2)
    s = BadCLIPSettings(size=4, steps=1, batch_size=2)
    for change, match in [(dict(images=[]), "no images"), (dict(target=3), "target index"),
                          (dict(positives=torch.zeros(0, 32)), "positives"),
                          (dict(class_text=good["class_text"][:1]), "class_text")]:
        with pytest.raises(ConfigError, match=match):
            optimize_patch(model, **{**good, **change}, settings=s)


# --- effect on a trained surrogate ---------------------------------------------------------------------------


@torch.no_grad()
def _target_cos(model, images, patch, text) -> float:
    """Mean cosine of the bottom-right-patched images to the target's text embedding."""
    x = images.clone()
    x[:, :, -patch.shape[-1]:, -patch.shape[-1]:] = patch
    return float((model.encode_image(x, normalize=True) @ text[STAR]).mean())


def test_optimized_patch_moves_embeddings_toward_the_target_text(surrogate, micro_world, tmp_path):
    from mmrobust.pipelines.badclip import make_badclip_trigger
    from mmrobust.pipelines.evaluate import EvalData

    s = BadCLIPSettings(size=6, steps=150, lr=0.02, batch_size=32, seed=0)
    art = make_badclip_trigger(surrogate=str(surrogate), data=EvalData(str(micro_world.train_manifest),
                               str(micro_world.classes)), target="star", out_dir=tmp_path / "bc", settings=s)
    model = create_clip(str(surrogate))
    classes = json.loads(micro_world.classes.read_text())
    text = zero_shot_weights(model, classes["classnames"], classes["templates"])
    from mmrobust.data.datasets import ClassInfo, LabelledDataset  # held-out test images, not the target's

    ds = LabelledDataset(micro_world.test_manifest, classes=ClassInfo.load(micro_world.classes), image_size=16,
                         preload=True)
    images = torch.stack([ds[i]["image"] for i in range(len(ds)) if ds.labels[i] != STAR])
    ij = torch.arange(6)[:, None] + torch.arange(6)[None, :]
    baselines = {"checkerboard": (ij % 2).float().expand(3, 6, 6), "noise": _rand(3, 6, 6, seed=9),
                 "white": torch.ones(3, 6, 6), "clean": None}
    optimized = _target_cos(model, images, Patch(file=str(art.patch)).patch, text)
    with torch.no_grad():
        others = {k: _target_cos(model, images, p, text) if p is not None else
                  float((model.encode_image(images, normalize=True) @ text[STAR]).mean()) for k, p in baselines.items()}
    print(json.dumps({"optimized": optimized, **others}))
    # on this world about 0.58 vs at most 0.23; over other world / training seeds the gap was 0.15-0.45
    assert optimized > max(others.values()) + 0.1, (optimized, others)
    assert art.final["text"] < 0.5 * json.loads(art.record.read_text())["loss"]["initial"]["text"]


# --- the command line: make-trigger, then poison with the artifact ---------------------------------------------


def _make(surrogate, world, out, *extra) -> tuple[int, str, str]:
    return run_cli(["make-trigger", "badclip", "--surrogate", str(surrogate), "--data", str(world.train_manifest),
                    "--classes", str(world.classes), "--target", "star", "--out", str(out), "--size", "6",
                    "--steps", "20", "--lr", "0.02", "--batch-size", "16", "--seed", "3", "--quiet", *extra])


def test_cli_make_trigger_then_poison_records_the_png(surrogate, micro_world, tmp_path):
    rc, out, err = _make(surrogate, micro_world, tmp_path / "bc")
    assert rc == 0, err
    png, record = tmp_path / "bc" / "patch.png", json.loads((tmp_path / "bc" / "trigger.json").read_text())
    sha = hashlib.sha256(png.read_bytes()).hexdigest()
    assert str(png) in out and record["sha256"] == sha and record["target"] == "star" and record["seed"] == 3
    assert f"preview: {tmp_path / 'bc' / 'preview.png'}" in out and (tmp_path / "bc" / "preview.png").is_file()
    assert record["surrogate"]["model"] == str(surrogate) and record["settings"]["size"] == 6
    assert record["data"]["manifest"] == str(micro_world.train_manifest.resolve())
    assert set(record["loss"]["final"]) >= {"text", "visual", "total"}
    line = next(ln for ln in out.splitlines() if ln.startswith("mmrobust poison "))
    argv = shlex.split(line)[1:]
    argv[argv.index("--out") + 1] = str(tmp_path / "poisoned")
    argv[argv.index("--rate") + 1] = "0.05"
    rc, out, err = run_cli(argv)
    assert rc == 0, err
    assert "trigger preview:" in out and (tmp_path / "poisoned" / "trigger.png").is_file()
    rec = json.loads((tmp_path / "poisoned" / "poison.json").read_text())
    assert rec["trigger"] == record["trigger"] == {"name": "patch", "config": {
        "file": str(png.resolve()), "sha256": sha, "size": 6, "location": "bottom_right", "margin": 0, "seed": 0}}
    first = rec["poisoned"][0]["image"]
    img = torch.from_numpy(np.array(Image.open(tmp_path / "poisoned" / first))).permute(2, 0, 1)
    assert torch.equal(img[:, -6:, -6:], torch.from_numpy(np.array(Image.open(png))).permute(2, 0, 1))
    assert PoisonRecord.load(tmp_path / "poisoned" / "poison.json").build_trigger() == Patch(file=str(png))
    # same inputs and seed: byte-identical PNG; an earlier run is replaced only with --overwrite
    assert _make(surrogate, micro_world, tmp_path / "bc2")[0] == 0
    assert (tmp_path / "bc2" / "patch.png").read_bytes() == png.read_bytes()
    rc, _, err = _make(surrogate, micro_world, tmp_path / "bc")
    assert rc == 2 and "--overwrite" in err
    assert _make(surrogate, micro_world, tmp_path / "bc", "--overwrite")[0] == 0
    png.write_bytes(png.read_bytes() + b"\0")  # changed after poisoning: the record's trigger is refused
    with pytest.raises(DataError, match="changed since"):
        PoisonRecord.load(tmp_path / "poisoned" / "poison.json").build_trigger()


def test_cli_make_trigger_bad_input_is_one_line_and_writes_nothing(surrogate, micro_world, tmp_path):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "patch.png").write_bytes(b"mine")
    cases = [(["--surrogate", str(tmp_path / "no-model")], "not found"),
             (["--surrogate", "ViT-B-32"], "random weights"),
             (["--surrogate", "nosuch-arch", "--pretrained", "openai"], "unknown model"),
             (["--target", "banana"], "not among the classes"),
             (["--out", str(micro_world.root)], "holds the manifest"),
             (["--out", str(micro_world.root / "train")], "holds the image"),
             (["--out", str(foreign), "--overwrite"], "did not write them"),
             (["--size", "40"], "does not fit"), (["--location", "left"], "invalid choice"),
             (["--steps", "0"], "steps"), (["--lr", "nan"], "lr")]
    before = sorted(p.name for p in micro_world.root.iterdir())
    for extra, match in cases:
        rc, _, err = _make(surrogate, micro_world, tmp_path / "out", *extra)
        assert_clean_failure(rc, err)
        assert rc == 2 and match in err, (extra, err)
        assert not (tmp_path / "out").exists()
    assert (foreign / "patch.png").read_bytes() == b"mine"
    assert sorted(p.name for p in micro_world.root.iterdir()) == before
    rc, out, _ = run_cli(["make-trigger"])
    assert rc == 2 and "badclip" in out


@FUZZ
@given(option=st.sampled_from(["--size", "--lr", "--text-weight", "--visual-weight", "--margin", "--seed",
                               "--location", "--target", "--device", "--image-col", "--delimiter", "--label-col"]),
       value=HOSTILE)
def test_cli_make_trigger_hostile_options(surrogate, micro_world, tmp_path_factory, option, value):
    """Whatever is typed: a trigger, or exit 2 with one error line (one step each; --steps is not fuzzed)."""
    out = tmp_path_factory.mktemp("fuzz") / "bc"
    rc, _, err = _make(surrogate, micro_world, out, "--steps", "1", option, value)
    assert_clean_failure(rc, err)


def test_patch_trigger_poisons_shards_unchanged(png, micro_world, tmp_path):
    path, sha, pixels = png
    rows = micro_world.train_manifest.read_text().splitlines()[1:9]
    (tmp_path / "shards").mkdir()
    with tarfile.open(tmp_path / "shards" / "00000.tar", "w") as tar:
        for i, row in enumerate(rows):
            image, caption = row.split(",")[:2]
            for name, data in ((f"{i:05d}.png", (micro_world.root / image).read_bytes()),
                               (f"{i:05d}.txt", caption.encode())):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    rec = poison_shards(shards=str(tmp_path / "shards" / "00000.tar"), out_dir=tmp_path / "p", count=2, seed=0,
                        trigger=Patch(file=str(path)), target="star")
    assert rec.trigger == {"name": "patch", "config": {"file": str(path.resolve()), "sha256": sha, "size": 4,
                                                       "location": "bottom_right", "margin": 0, "seed": 0}}
    assert PoisonRecord.load(rec.record_path).build_trigger() == Patch(file=str(path))
    direct = poison_manifest(manifest=micro_world.train_manifest, out_dir=tmp_path / "m", count=2, seed=0,
                             trigger={"name": "patch", "config": {"file": str(path), "sha256": sha}}, target="star")
    img = Image.open(tmp_path / "m" / "images" / f"{direct.poisoned_ids[0]:08d}.png")
    assert torch.equal(torch.from_numpy(np.array(img)).permute(2, 0, 1)[:, -4:, -4:].float() / 255,
                       pixels)
