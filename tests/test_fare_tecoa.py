"""FARE / TeCoA tasks: losses equal naive formulas, the frozen reference never changes, only the
vision tower trains, and the exported encoder loads back as a full CLIP."""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from mmrobust.data.datasets import ClassInfo, ImageTextDataset
from mmrobust.tasks import FARETask, TeCoATask
from mmrobust.models import create_clip
from mmrobust.training import TrainConfig, train

CLASSES = ClassInfo(("star", "ring", "bar"), ("a photo of a {}.",))


def _nudge(model, scale=0.05):
    with torch.no_grad():
        for p in model.visual.parameters():
            p.add_(scale * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))


def test_fare_loss_equals_naive_formula_and_attack_raises_it():
    model = create_clip("mmrobust-micro", seed=0)
    task = FARETask(model, eps=4 / 255, attack_steps=0)
    original = copy.deepcopy(model)
    _nudge(model)
    x = torch.rand(5, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        a, b = model.encode_image(x), original.encode_image(x)
        naive = sum(float(((a[i] - b[i]) ** 2).sum()) for i in range(5)) / 5
    assert abs(task({"image": x})["loss"].item() - naive) < 1e-4
    task.attack_steps = 10
    adv = task({"image": x})["loss"].item()
    assert adv > naive  # the inner maximization finds a worse point inside the ball


def test_tecoa_loss_equals_naive_formula():
    model = create_clip("mmrobust-micro", seed=0)
    task = TeCoATask(model, classes=CLASSES, attack_steps=0)
    x, y = torch.rand(4, 3, 16, 16), torch.tensor([0, 2, 1, 1])
    with torch.no_grad():
        T = torch.stack([F.normalize(model.encode_text(model.tokenize([f"This is a photo of a {c}"]))[0], dim=0)
                         for c in CLASSES.classnames])
        img = F.normalize(model.encode_image(x), dim=-1)
        naive = sum(float(F.cross_entropy(100 * img[i:i + 1] @ T.T, y[i:i + 1])) for i in range(4)) / 4
    assert abs(task({"image": x, "label": y})["loss"].item() - naive) < 1e-4


def test_fare_training_changes_only_vision_and_keeps_reference(tmp_path, micro_world):
    model = create_clip("mmrobust-micro", seed=0)
    task = FARETask(model, eps=4 / 255, attack_steps=2, seed=0)
    ref_before = copy.deepcopy(task.reference.state_dict())
    text_before = {k: v.clone() for k, v in model.model.state_dict().items() if not k.startswith("visual.")}
    vis_before = model.visual.proj.detach().clone()
    ds = ImageTextDataset(micro_world.train_manifest, image_size=16, preload=True)
    train(task, ds, TrainConfig(steps=4, batch_size=16, lr=1e-3, warmup_steps=1), tmp_path, progress=False)
    assert all(torch.equal(ref_before[k], v) for k, v in task.reference.state_dict().items())
    assert all(p.grad is None for p in task.reference.parameters())
    after = model.model.state_dict()
    assert all(torch.equal(text_before[k], after[k]) for k in text_before)
    assert not torch.equal(vis_before, model.visual.proj)
    out = task.export(tmp_path / "model")
    loaded = create_clip(str(out))
    x = torch.rand(2, 3, 16, 16)
    assert torch.allclose(loaded.encode_image(x), model.encode_image(x), atol=1e-6)
