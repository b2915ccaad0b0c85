"""Triggers: determinism, range, shapes, exact placement, oracles, config round trip, errors."""
from __future__ import annotations

import json
import math

import pytest
import torch

from mmrobust.data.poison import (SIG, BadNet, BadNetStripes, Blended, BlendedStripes, BlendedText, BlendedTriangles,
                                  WaNet, apply_trigger, make_trigger, trigger_from_dict, trigger_spec)
from mmrobust.errors import ConfigError, DataError
from mmrobust.registry import TRIGGERS

# (name, params, uses randomness from seed or generator)
CASES = [
    ("badnet", dict(size=4, pattern="random_noise", location="random"), True),
    ("badnet", dict(size=4, pattern="noise", location="top_left"), True),
    ("badnet", dict(size=4, pattern="checkerboard", location="bottom_right"), False),
    ("badnet", dict(size=5, pattern="white", location="center"), False),
    ("blended", dict(alpha=0.2, pattern="noise"), True),
    ("blended", dict(alpha=0.3, pattern="random_noise"), True),
    ("wanet", dict(k=4, s=0.5), True),
    ("sig", dict(delta=20 / 255, frequency=6), False),
    # PAR's structured triggers (Singh, Croce & Hein 2024)
    ("badnet-stripes", dict(size=4, location="random"), True),
    ("badnet-stripes", dict(size=4, location="bottom_right", per_image=False), True),
    ("blended-stripes", dict(alpha=0.03), True),
    ("blended-stripes", dict(alpha=0.1, width=2, per_image=False), True),
    ("blended-triangles", dict(cell=4), False),
    ("blended-text", dict(text="hi"), False),
]
IDS = [f"{n}-" + "-".join(f"{k}={v}" for k, v in p.items() if k in ("pattern", "location", "per_image", "width"))
       for n, p, _ in CASES]
STRUCTURED = ("badnet-stripes", "blended-stripes", "blended-triangles", "blended-text")


def _images(b: int = 4, h: int = 16, w: int = 16, seed: int = 123) -> torch.Tensor:
    return torch.rand(b, 3, h, w, generator=torch.Generator().manual_seed(seed))


def test_registry_lists_all_triggers():
    assert {"badnet", "blended", "wanet", "sig", *STRUCTURED, "patch"} <= set(TRIGGERS.list())


@pytest.mark.parametrize("name,params,random", CASES, ids=IDS)
def test_trigger_invariants(name, params, random):
    trig = make_trigger(name, **params)
    x = _images()
    x_copy = x.clone()
    y = trig(x)
    assert y.shape == x.shape and y.dtype == x.dtype
    assert y.min() >= 0 and y.max() <= 1
    assert (y - x).abs().max() > 0.01, "trigger must change the images"
    assert torch.equal(x, x_copy), "input must not be modified in place"
    assert torch.equal(trig(x), y), "same config, same output"
    assert trig(x[0]).shape == x[0].shape  # single image in, single image out


@pytest.mark.parametrize("name,params,random", CASES, ids=IDS)
def test_seed_changes_random_triggers(name, params, random):
    x = _images()
    seeded = "seed" in TRIGGERS.slots(name)
    a = make_trigger(name, **params, **({"seed": 0} if seeded else {}))(x)
    b = make_trigger(name, **params, **({"seed": 1} if seeded else {}))(x)
    assert torch.equal(a, b) != random


@pytest.mark.parametrize("name,params,random", CASES, ids=IDS)
def test_config_json_round_trip(name, params, random):
    trig = make_trigger(name, **params)
    spec = json.loads(json.dumps(trigger_spec(trig)))
    assert trigger_from_dict(spec) == trig
    assert TRIGGERS.create(trig.name, **trig.to_dict()) == trig
    x = _images(2)
    assert torch.equal(apply_trigger(x, spec), trig(x))


def test_per_image_randomness_comes_from_generator():
    trig = BadNet(size=4, pattern="random_noise", location="random")
    x = _images(8)
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    assert torch.equal(trig(x, g1), trig(x, g2))  # same generator state, same draws
    assert not torch.equal(trig(x, g1), trig(x, g2.manual_seed(6)))
    gen = torch.Generator().manual_seed(0)
    assert not torch.equal(trig(x, gen), trig(x, gen))  # one generator across batches: fresh draws


@pytest.mark.parametrize("location,top,left", [
    ("top_left", 0, 0), ("top_right", 0, 12), ("bottom_left", 12, 0), ("bottom_right", 12, 12), ("center", 6, 6)])
def test_badnet_fixed_location_changes_only_patch(location, top, left):
    x = torch.full((2, 3, 16, 16), 0.5)
    y = BadNet(size=4, pattern="checkerboard", location=location)(x)
    changed = (y != x).any(dim=1)  # (B,H,W)
    expected = torch.zeros(16, 16, dtype=torch.bool)
    expected[top : top + 4, left : left + 4] = True
    assert torch.equal(changed, expected.expand(2, 16, 16))
    ij = torch.arange(4)[:, None] + torch.arange(4)[None, :]
    assert torch.equal(y[:, :, top : top + 4, left : left + 4], (ij % 2).float().expand(2, 3, 4, 4))


def test_badnet_margin():
    x = torch.zeros(1, 3, 10, 10)
    y = BadNet(size=2, pattern="white", location="bottom_right", margin=1)(x)
    assert y[0, :, 7:9, 7:9].eq(1).all() and y.sum() == 3 * 4


def test_badnet_random_location_is_one_square_per_image():
    x = torch.full((16, 3, 12, 12), 0.5)
    y = BadNet(size=3, pattern="white", location="random")(x)
    corners = set()
    for img in (y != x).any(dim=1):
        rows, cols = img.nonzero(as_tuple=True)
        assert len(rows) == 9 and rows.max() - rows.min() == 2 and cols.max() - cols.min() == 2
        corners.add((int(rows.min()), int(cols.min())))
    assert len(corners) > 1, "random location must vary across images"


def test_blended_matches_formula_with_fixed_key():
    trig = Blended(alpha=0.25, pattern="noise", seed=3)
    x1, x2 = _images(1, seed=1), _images(1, seed=2)
    key = trig(torch.zeros(1, 3, 16, 16)) / 0.25
    assert torch.allclose(trig(x1), 0.75 * x1 + 0.25 * key, atol=1e-6)
    assert torch.allclose(trig(x2), 0.75 * x2 + 0.25 * key, atol=1e-6)
    assert key.min() >= 0 and key.max() <= 1 and key.std() > 0.2  # uniform noise key


def test_sig_matches_naive_formula():
    delta, f, w = 0.1, 3.0, 12
    x = torch.full((3, 8, w), 0.5)
    y = SIG(delta=delta, frequency=f)(x)
    for c in range(3):
        for i in range(8):
            for j in range(w):
                assert math.isclose(y[c, i, j].item(), 0.5 + delta * math.sin(2 * math.pi * j * f / w), abs_tol=1e-6)


def test_wanet_warp_is_small_smooth_and_seeded():
    h = w = 32
    ramp = torch.linspace(0, 1, w).expand(1, 3, h, w).contiguous()  # pixel value = x coordinate
    trig = WaNet(k=4, s=0.5, seed=0)
    disp = (trig(ramp) - ramp)[0, 0, 1:-1, 1:-1] * (w - 1)  # horizontal displacement in pixels
    assert 0.02 < disp.abs().mean() < 0.5  # about s/2 px on average, never large
    assert disp.abs().max() < 2.0
    assert (disp[:, 1:] - disp[:, :-1]).abs().max() < 0.3  # smooth: neighbours move together
    strong = WaNet(k=4, s=2.0, seed=0)
    disp2 = (strong(ramp) - ramp)[0, 0, 1:-1, 1:-1] * (w - 1)
    assert disp2.abs().mean() > 3 * disp.abs().mean()  # strength scales the field
    assert torch.equal(trig.grid(h, w), WaNet(k=4, s=0.5, seed=0).grid(h, w))
    assert not torch.equal(trig.grid(h, w), WaNet(k=4, s=0.5, seed=1).grid(h, w))


@pytest.mark.parametrize("name,params,msg", [
    ("badnet", dict(size=0), "size"),
    ("badnet", dict(pattern="stripes"), "pattern"),
    ("badnet", dict(location="left"), "location"),
    ("blended", dict(alpha=1.5), "alpha"),
    ("wanet", dict(k=1), "k"),
    ("wanet", dict(s=-1.0), "s"),
    ("sig", dict(delta=0.0), "delta"),
    ("badnet", dict(colour="red"), "trigger .badnet. has no option"),
    ("badnet", dict(size="six"), "trigger .badnet. option size: expected an int"),
    ("nosuch", dict(), "unknown trigger"),
    ("badnet-stripes", dict(size=0), "size"),
    ("badnet-stripes", dict(location="middle"), "location"),
    ("badnet-stripes", dict(per_image="maybe"), "per_image"),
    ("blended-stripes", dict(alpha=0.0), "alpha"),
    ("blended-stripes", dict(width=0), "width"),
    ("blended-stripes", dict(alpha=float("nan")), "alpha"),
    ("blended-triangles", dict(cell=1), "cell"),
    ("blended-triangles", dict(alpha=2), "alpha"),
    ("blended-triangles", dict(seed=1), "has no option"),
    ("blended-text", dict(text=""), "text"),
    ("blended-text", dict(text="   "), "text"),
    ("blended-text", dict(text="x" * 65), "text"),
    ("blended-text", dict(text="caf\u00e9\n"), "text"),
    ("blended-text", dict(width=1.5), "width"),
    ("blended-text", dict(color="mauve"), "color"),
    ("blended-text", dict(alpha=-0.5), "alpha"),
])
def test_bad_config_is_one_line_config_error(name, params, msg):
    with pytest.raises(ConfigError, match=msg) as e:
        make_trigger(name, **params)
    assert "\n" not in str(e.value)


def test_make_trigger_converts_cli_strings():
    assert make_trigger("badnet", size="6", location="top_left") == BadNet(size=6, location="top_left")
    assert make_trigger("blended", alpha="0.1") == Blended(alpha=0.1)
    assert make_trigger("wanet", s=1) == WaNet(s=1.0)


def test_patch_larger_than_image_and_bad_inputs():
    with pytest.raises(ConfigError, match="does not fit"):
        BadNet(size=20, location="random")(torch.rand(3, 16, 16))
    with pytest.raises(DataError, match="255"):
        BadNet(size=2)(torch.randint(0, 255, (3, 8, 8), dtype=torch.uint8))
    with pytest.raises(DataError, match=r"\[0,1\]"):
        BadNet(size=2)(torch.rand(3, 8, 8) * 2 - 1)
    with pytest.raises(DataError, match="shape"):
        BadNet(size=2)(torch.rand(8, 8))


# --- PAR's structured triggers (Singh, Croce & Hein 2024) ------------------------------------------------------


def test_structured_defaults_are_the_papers():
    assert (BadNetStripes().size, BadNetStripes().location, BadNetStripes().per_image) == (16, "random", True)
    assert (BlendedStripes().alpha, BlendedStripes().width, BlendedStripes().per_image) == (0.03, 1, True)
    assert (BlendedTriangles().alpha, BlendedTriangles().cell) == (0.15, 14)
    assert (BlendedText().text, BlendedText().alpha, BlendedText().color, BlendedText().width) == \
        ("watermarked", 0.5, "red", 0.875)


@pytest.mark.parametrize("location,top,left", [("top_left", 0, 0), ("bottom_right", 12, 12), ("center", 6, 6)])
def test_badnet_stripes_are_binary_one_pixel_columns_in_the_patch_only(location, top, left):
    x = torch.full((8, 3, 16, 16), 0.5)
    y = BadNetStripes(size=4, location=location)(x)
    changed = (y != x).any(dim=1)
    expected = torch.zeros(16, 16, dtype=torch.bool)
    expected[top : top + 4, left : left + 4] = True
    assert torch.equal(changed, expected.expand(8, 16, 16))  # every patch pixel is 0 or 1, never 0.5
    patch = y[:, :, top : top + 4, left : left + 4]
    assert set(patch.unique().tolist()) == {0.0, 1.0}
    assert torch.equal(patch, patch[:, :, :1, :].expand_as(patch)), "each column is one colour"
    assert len({tuple(p.flatten().tolist()) for p in patch}) > 1, "per_image: fresh stripes per image"
    fixed = BadNetStripes(size=4, location=location, per_image=False, seed=3)
    a, b = fixed(x)[:, :, top : top + 4, left : left + 4], fixed(x[:2])[:, :, top : top + 4, left : left + 4]
    assert torch.equal(a, a[:1].expand_as(a)) and torch.equal(a[:2], b), "per_image=False: one pattern from seed"


def test_blended_stripes_match_formula_with_a_plus_minus_one_key():
    x = torch.full((4, 3, 10, 12), 0.5)
    y = BlendedStripes(alpha=0.1, width=2, per_image=False, seed=3)(x)
    key = (y - 0.9 * x) / 0.1
    assert torch.allclose(key.abs(), torch.ones_like(key), atol=1e-5), "key is -1 or +1 (the reference's)"
    assert torch.equal(key, key[:, :, :1, :].expand_as(key)), "vertical stripes"
    assert torch.equal(key[..., 0::2], key[..., 1::2]), "stripes 2 px wide"
    assert torch.equal(key, key[:1].expand_as(key)) and (key[0, :, 0, ::2] > 0).float().std() > 0
    fresh = BlendedStripes(alpha=0.1, width=1)(x)
    assert not torch.equal(fresh[0], fresh[1]), "per_image: fresh key per image"
    dark = BlendedStripes(alpha=0.5, per_image=False)(torch.zeros(1, 3, 4, 4))
    assert dark.min() == 0 and set(dark.unique().tolist()) <= {0.0, 0.5}, "clipped to [0,1]"


def test_blended_triangles_match_naive_formula():
    cell, alpha, h, w = 4, 0.15, 10, 13
    x = _images(1, h, w)
    y = BlendedTriangles(alpha=alpha, cell=cell)(x)
    for i in range(h):
        for j in range(w):
            k = 0.4 if i % cell >= j % cell else 0.8
            assert torch.allclose(y[0, :, i, j], (1 - alpha) * x[0, :, i, j] + alpha * k, atol=1e-6)


def test_blended_text_changes_only_red_where_the_word_is_centred():
    x = torch.full((2, 3, 224, 224), 0.5)
    y = BlendedText()(x)
    assert torch.equal(y[:, 1:], x[:, 1:]), "red text changes the red channel only (the reference's blend)"
    rows, cols = (y[0, 0] != 0.5).nonzero(as_tuple=True)
    assert abs((cols.min() + cols.max()) / 2 - 111.5) <= 2 and abs((rows.min() + rows.max()) / 2 - 111.5) <= 2
    assert abs(int(cols.max() - cols.min() + 1) - 0.875 * 224) <= 3, "the word spans 0.875 of the width"
    assert 10 <= int(rows.max() - rows.min() + 1) <= 50 and y.max() <= 0.75 + 1e-6
    white = BlendedText(text="ok", color="white", alpha=0.5)(x)
    assert not torch.equal(white[:, 1], x[:, 1]) and not torch.equal(white[:, 0], y[:, 0])
    small = BlendedText()(torch.full((3, 32, 32), 0.5))
    assert 0 < (small != 0.5).any(0).sum() < 32 * 32 // 4, "a 32 px image gets a small (28 px wide) word"
    assert torch.equal(BlendedText()(x), y), "deterministic"


@pytest.mark.parametrize("name,params", [("badnet-stripes", dict(size=4)), ("blended-stripes", {}),
                                         ("blended-triangles", dict(cell=3)), ("blended-text", dict(text="ab"))])
@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_structured_triggers_keep_dtype(name, params, dtype):
    trig = make_trigger(name, **params)
    x = _images(2)
    y = trig(x.to(dtype))
    assert y.dtype == dtype and y.shape == x.shape and y.min() >= 0 and y.max() <= 1
    assert torch.allclose(y.float(), trig(x), atol=0.02)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", STRUCTURED)
def test_structured_triggers_on_cuda_match_cpu(name):
    trig, x = make_trigger(name), _images(2, 32, 32)
    gen = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    assert torch.allclose(trig(x.cuda(), gen()).cpu(), trig(x, gen()), atol=1e-6)
