"""Cheaper robust finetuning: FGSM with a random start (Wong et al. 2020) as FARE's / TeCoA's inner attack, and
LoRA adapters on the image tower (only they train; merged on export into a plain open_clip tower)."""
from __future__ import annotations

import json
from pathlib import Path

import open_clip
import pytest
import torch

from mmrobust.cli.main import main
from mmrobust.data.datasets import ClassInfo
from mmrobust.errors import ConfigError
from mmrobust.losses.embedding import fare_loss
from mmrobust.models.clip import create_clip
from mmrobust.tasks import FARETask, TeCoATask
from mmrobust.tasks.build import task_option_values

EPS = 4 / 255


def _nudged(seed: int = 0):
    model = create_clip("mmrobust-micro", seed=seed)
    with torch.no_grad():
        for p in model.visual.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    return model


def test_fgsm_rs_is_one_step_of_1_25_eps_from_the_random_start_inside_the_ball_and_raises_the_loss() -> None:
    task = FARETask(_nudged(), eps=EPS, attack="fgsm-rs", seed=3)
    assert (task.attack_steps, task.step_size) == (1, pytest.approx(1.25 * EPS))
    x = torch.rand(6, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    ids = torch.arange(6)
    target = task.reference_embedding(x)
    loss = lambda xa: fare_loss(task.model.encode_image(xa), target)  # noqa: E731
    state = task.generator.get_state()
    start = task.random_start(x, ids)  # the draw perturb will make
    task.generator.set_state(state)
    x_adv = task.perturb(loss, x, ids)

    x0 = (x + start).clamp(0, 1).requires_grad_(True)  # oracle: Wong et al.'s FGSM-RS, written out
    (grad,) = torch.autograd.grad(loss(x0).sum(), x0)
    delta = (x0.detach() + 1.25 * EPS * grad.sign() - x).clamp(-EPS, EPS)
    torch.testing.assert_close(x_adv, (x + delta).clamp(0, 1), atol=1e-6, rtol=0)
    assert float((x_adv - x).abs().max()) <= EPS + 1e-6 and 0 <= float(x_adv.min()) and float(x_adv.max()) <= 1
    with torch.no_grad():
        assert float(loss(x_adv).mean()) > float(loss(x0.detach()).mean()) > float(loss(x).mean())


def test_fgsm_rs_works_for_tecoa_and_its_preset_is_not_mixed_with_pgd_settings() -> None:
    classes = ClassInfo(("star", "ring", "bar"), ("a photo of a {}.",))
    task = TeCoATask(_nudged(), classes=classes, eps=EPS, attack="fgsm-rs")
    x, y = torch.rand(4, 3, 16, 16), torch.tensor([0, 1, 2, 0])
    assert torch.isfinite(task({"image": x, "label": y, "index": torch.arange(4)})["loss"])
    with pytest.raises(ConfigError, match="drop attack_steps, step_size"):
        task_option_values("fare", {"attack": "fgsm-rs", "attack_steps": "3", "step_size": "1/255"})
    with pytest.raises(ConfigError, match="not one of pgd, fgsm-rs"):
        FARETask(_nudged(), attack="fgsm")
    with pytest.raises(ConfigError, match="drop momentum"):
        FARETask(_nudged(), attack="fgsm-rs", momentum=0.9)


def test_lora_trains_only_the_adapters_and_merges_into_the_same_plain_tower(tmp_path: Path) -> None:
    model = _nudged()
    before = {k: v.clone() for k, v in model.model.state_dict().items()}
    task = FARETask(model, eps=EPS, attack="fgsm-rs", lora_r=4, lora_alpha=8.0, seed=0)
    names = [n for n, _ in task.trainable_named_parameters()]
    assert names and all("lora_" in n for n in names)
    assert task.lora["trainable_params"] == sum(p.numel() for _, p in task.trainable_named_parameters())
    assert not any("lora" in n for n, _ in task.reference.named_parameters())  # FARE's reference stays plain
    x = torch.rand(8, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    opt = torch.optim.AdamW([p for _, p in task.trainable_named_parameters()], lr=1e-2)
    for _ in range(3):
        task({"image": x, "index": torch.arange(8)})["loss"].backward()
        opt.step()
        opt.zero_grad()
    after = task.model.model.state_dict()
    base_keys = [k for k in after if "lora_" not in k]
    unwrap = lambda k: k.replace(".base_layer", "")  # noqa: E731  (peft's wrapper in the key)
    assert all(torch.equal(after[k], before[unwrap(k)]) for k in base_keys)  # base weights untouched
    assert any(float(after[k].abs().sum()) > 0 for k in after if "lora_B" in k)  # adapters moved from B = 0

    out = task.export(tmp_path / "model")
    config = json.loads((out / "open_clip_config.json").read_text())
    assert config["mmrobust"]["lora"]["merged"] is True and config["mmrobust"]["lora"]["r"] == 4
    plain = create_clip(str(out))
    assert not any("lora" in k or "base_layer" in k for k in plain.model.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(plain.encode_image(x), task.model.encode_image(x), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(plain.encode_text(plain.tokenize(["a star"])),
                                   task.model.encode_text(task.model.tokenize(["a star"])))
        merged = before | {f"visual.{k}": v for k, v in plain.visual.state_dict().items()}
        assert any(not torch.equal(merged[k], before[k]) for k in before if k.startswith("visual."))
    ref = open_clip.create_model(f"local-dir:{out}")  # open_clip itself loads the merged tower
    assert ref.visual.state_dict().keys() == plain.visual.state_dict().keys()


def test_cli_fare_fgsm_lora_run_resumes_and_exports(micro_world, tmp_path: Path) -> None:
    args = ["train", "--task", "fare", "--model", "mmrobust-micro", "--data", str(micro_world.root / "train.csv"),
            "--out", str(tmp_path / "run"), "--batch-size", "8", "--lr", "1e-3", "--warmup", "0", "--quiet",
            "--ckpt-every", "2", "--opt", "attack=fgsm-rs", "--opt", "lora_r=2"]
    assert main([*args, "--steps", "2"]) == 0
    assert main([*args, "--steps", "4", "--resume"]) == 0
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["metrics"]["steps"] == 4 and results["config"]["task_options"] == {"attack": "fgsm-rs",
                                                                                      "lora_r": 2}
    assert create_clip(str(tmp_path / "run" / "model")).image_size == 16
