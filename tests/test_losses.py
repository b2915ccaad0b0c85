"""Oracle tests: losses against naive per-sample formulas on fixed tensors."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from mmrobust.losses import cleanclip_loss, clip_loss, fare_loss, inmodal_loss, tecoa_loss, threshold_push


def _unit(*shape, seed):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(*shape, generator=g), dim=-1)


def _naive_ce(row, target):
    return -(row[target] - math.log(sum(math.exp(v) for v in row)))


def _naive_clip(img, txt, s):
    n = img.shape[0]
    out = []
    for i in range(n):
        i2t = [s * float(img[i] @ txt[j]) for j in range(n)]
        t2i = [s * float(txt[i] @ img[j]) for j in range(n)]
        out.append((_naive_ce(i2t, i) + _naive_ce(t2i, i)) / 2)
    return torch.tensor(out)


def _naive_inmodal(a, b, s):
    n = a.shape[0]
    return torch.tensor([_naive_ce([s * float(a[i] @ b[j]) for j in range(n)], i) for i in range(n)])


def test_clip_loss_matches_naive():
    img, txt = _unit(6, 8, seed=0), _unit(6, 8, seed=1)
    assert torch.allclose(clip_loss(img, txt, 7.0), _naive_clip(img, txt, 7.0), atol=1e-5)


def test_cleanclip_loss_matches_naive_formula():
    img, txt, img_a, txt_a = (_unit(5, 8, seed=k) for k in range(4))
    s, l1, l2 = 12.5, 0.7, 1.3
    out = cleanclip_loss(img, txt, img_a, txt_a, torch.tensor(s), l1=l1, l2=l2)
    naive = l1 * _naive_clip(img, txt, s) + l2 * (_naive_inmodal(img, img_a, s) + _naive_inmodal(txt, txt_a, s)) / 2
    assert out["loss"].shape == (5,)
    assert torch.allclose(out["loss"], naive, atol=1e-5)
    # in-modal terms are one-directional: originals as rows, augmented views as columns
    assert torch.allclose(inmodal_loss(img, img_a, s), _naive_inmodal(img, img_a, s), atol=1e-5)
    assert not torch.allclose(inmodal_loss(img, img_a, s), _naive_inmodal(img_a, img, s), atol=1e-3)


def test_threshold_push_stops_past_tau():
    d = torch.tensor([0.5, 2.0, 2.25, 3.875])
    assert threshold_push(d, 2.15).tolist() == [0.5, 2.0, 0.0, 0.0]


def test_fare_and_tecoa_match_naive():
    a, b = torch.randn(4, 6), torch.randn(4, 6)
    assert torch.allclose(fare_loss(a, b), torch.tensor([sum((a[i, j] - b[i, j]) ** 2 for j in range(6)) for i in range(4)]))
    T = _unit(3, 6, seed=3)
    y = torch.tensor([0, 2, 1, 1])
    naive = torch.tensor([_naive_ce([100 * float(F.normalize(a[i], dim=0) @ T[c]) for c in range(3)], int(y[i]))
                          for i in range(4)])
    assert torch.allclose(tecoa_loss(a, T, y), naive, atol=1e-3)
