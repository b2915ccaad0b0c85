"""The generic loop: kill-and-resume gives the same weights; a NaN loss stops clearly and keeps the checkpoint."""
from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from mmrobust.data.datasets import ImageTextDataset
from mmrobust.defenses import CLIPTask
from mmrobust.errors import TrainingError
from mmrobust.models import create_clip
from mmrobust.training import TrainConfig, train


def _cli(args, **kw):
    return subprocess.Popen([sys.executable, "-m", "mmrobust.cli.main", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **kw)


def _train_args(world, out, steps):
    return ["train", "--task", "cleanclip", "--model", "mmrobust-micro", "--data", str(world.train_manifest),
            "--out", str(out), "--steps", str(steps), "--batch-size", "16", "--lr", "1e-3", "--warmup", "3",
            "--ckpt-every", "4", "--quiet"]


def test_kill_and_resume_matches_uninterrupted(tmp_path, micro_world):
    steps = 24
    full = _cli(_train_args(micro_world, tmp_path / "full", steps))
    killed = _cli(_train_args(micro_world, tmp_path / "killed", steps))
    ckpt = tmp_path / "killed" / "checkpoints" / "last.pt"
    deadline = time.time() + 300
    while not ckpt.exists() and time.time() < deadline and killed.poll() is None:
        time.sleep(0.05)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert ckpt.exists(), "the run never wrote a checkpoint"
    step_at_kill = torch.load(ckpt, weights_only=True)["step"]
    assert step_at_kill < steps, "the run finished before it could be killed"
    resumed = _cli(_train_args(micro_world, tmp_path / "killed", steps) + ["--resume"])
    out_r, _ = resumed.communicate(timeout=600)
    out_f, _ = full.communicate(timeout=600)
    assert resumed.returncode == 0 and full.returncode == 0, out_r + out_f
    assert f"resumed from {step_at_kill}" in out_r
    a = load_file(str(tmp_path / "full" / "model" / "open_clip_model.safetensors"))
    b = load_file(str(tmp_path / "killed" / "model" / "open_clip_model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    init = create_clip("mmrobust-micro").model.state_dict()
    assert not torch.equal(init["visual.proj"], a["visual.proj"])  # it did train


class _NaNAt(CLIPTask):
    def __init__(self, model, at):
        super().__init__(model)
        self.at, self.calls = at, 0

    def forward(self, batch):
        out = super().forward(batch)
        self.calls += 1
        if self.calls > self.at:
            out["loss"] = out["loss"] * float("nan")
        return out


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, micro_world):
    ds = ImageTextDataset(micro_world.train_manifest, image_size=16, preload=True)
    task = _NaNAt(create_clip("mmrobust-micro"), at=5)
    cfg = TrainConfig(steps=20, batch_size=16, lr=1e-3, warmup_steps=1, ckpt_every=2)
    with pytest.raises(TrainingError, match="loss became nan at step 5"):
        train(task, ds, cfg, tmp_path, progress=False)
    state = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)
    assert state["step"] == 4
    assert all(torch.isfinite(v).all() for v in state["task"].values() if v.is_floating_point())
