"""PAR (Singh, Croce & Hein 2024) loss against the naive formula, threshold included."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from mmrobust.tasks import PARTask
from mmrobust.errors import ConfigError
from mmrobust.losses import clip_loss
from mmrobust.models import create_clip


@torch.no_grad()
def _naive_par(model, ref, images, tokens, tau):
    img = F.normalize(model.encode_image(images), dim=-1)
    txt = F.normalize(model.encode_text(tokens), dim=-1)
    img0 = F.normalize(ref.encode_image(images), dim=-1)
    txt0 = F.normalize(ref.encode_text(tokens), dim=-1)
    d_img = sum(float(((img[i] - img0[i]) ** 2).sum()) for i in range(len(img))) / len(img)
    d_txt = sum(float(((txt[i] - txt0[i]) ** 2).sum()) for i in range(len(txt))) / len(txt)
    thr = lambda d: d if d <= tau else 0.0  # noqa: E731
    return float(clip_loss(img, txt, model.logit_scale).mean()) - 0.5 * (thr(d_img) + thr(d_txt)), d_img, d_txt


def test_par_loss_matches_naive_and_threshold_switches():
    model = create_clip("mmrobust-micro", seed=0)
    task = PARTask(model, tau=2.15)
    # move the trained copy away from the frozen reference so distances are non-trivial
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    images = torch.rand(6, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    captions = [f"a photo of a {c}." for c in ["star", "ring", "bar", "cross", "circle", "square"]]
    batch = {"image_noise_erase": images, "caption": captions}
    tokens = model.tokenize(captions)
    for tau in (2.15, 1e-6, 4.0):
        task.tau = tau
        out = task(batch)
        naive, d_img, d_txt = _naive_par(model, task.reference, images, tokens, tau)
        assert abs(out["loss"].item() - naive) < 1e-5
        assert abs(out["dist_image"].item() - d_img) < 1e-5 and abs(out["dist_text"].item() - d_txt) < 1e-5
    task.tau = 1e-6  # both distances above tau: no push, loss == contrastive term
    out = task(batch)
    assert torch.allclose(out["loss"], out["contrastive"])


def test_par_reference_is_frozen_and_untouched_by_training_step():
    model = create_clip("mmrobust-micro", seed=0)
    task = PARTask(model)
    before = copy.deepcopy(task.reference.state_dict())
    opt = torch.optim.SGD([p for _, p in task.trainable_named_parameters()], lr=0.1)
    out = task({"image_noise_erase": torch.rand(4, 3, 16, 16), "caption": ["a bar", "a star", "a ring", "a cross"]})
    out["loss"].backward()
    opt.step()
    assert all(p.grad is None for p in task.reference.parameters())
    assert all(torch.equal(before[k], v) for k, v in task.reference.state_dict().items())
    assert "reference.model.logit_scale" not in task.checkpoint_state()


def test_par_view_option_picks_the_dataset_view_and_rejects_unknown_names():
    model = create_clip("mmrobust-micro", seed=0)
    assert PARTask(model).views == ("image_noise_erase",)  # the reference code's view
    assert PARTask(model, view="autoaugment").views == ("image_aug",)
    with pytest.raises(ConfigError, match="noise-erase"):
        PARTask(model, view="mixup")
