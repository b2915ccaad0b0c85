"""Triggers: determinism, range, shapes, exact placement, oracles, config round trip, errors."""
from __future__ import annotations

import json
import math

import pytest
import torch

from mmrobust.data.poison import BadNet, Blended, SIG, WaNet, apply_trigger, make_trigger, trigger_from_dict, trigger_spec
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
]
IDS = [f"{n}-{p.get('pattern', '')}-{p.get('location', '')}" for n, p, _ in CASES]


def _images(b: int = 4, h: int = 16, w: int = 16, seed: int = 123) -> torch.Tensor:
    return torch.rand(b, 3, h, w, generator=torch.Generator().manual_seed(seed))


def test_registry_lists_all_triggers():
    assert {"badnet", "blended", "wanet", "sig"} <= set(TRIGGERS.list())


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
    a = make_trigger(name, **params, **({"seed": 0} if name != "sig" else {}))(x)
    b = make_trigger(name, **params, **({"seed": 1} if name != "sig" else {}))(x)
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
