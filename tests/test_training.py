"""The generic loop: kill-and-resume gives the same weights; a NaN loss stops clearly and keeps the checkpoint."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from mmrobust.data.datasets import ImageTextDataset
from mmrobust.tasks import CLIPTask
from mmrobust.errors import ConfigError, TrainingError
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


# --- silently wrong settings are refused (library and CLI), damaged checkpoints are one line ---

def _main(argv, capsys):
    from mmrobust.cli.main import main

    try:
        rc = main([str(a) for a in argv])
    except SystemExit as e:  # argparse
        rc = e.code
    return rc, capsys.readouterr().err.strip()


@pytest.mark.parametrize("kw,msg", [
    (dict(grad_clip=-1.0), "grad clip"), (dict(grad_clip=float("nan")), "grad clip"),
    (dict(weight_decay=-0.1), "weight decay"), (dict(weight_decay=float("inf")), "weight decay"),
    (dict(warmup_steps=-1), "warmup_steps"), (dict(lr=float("nan")), "learning rate"),
    (dict(lr=float("inf")), "learning rate"), (dict(lr=0.0), "learning rate"), (dict(lr=-1e-3), "learning rate"),
    (dict(seed=2**64), "seed"), (dict(seed=-1), "seed"), (dict(seed=1.5), "seed"), (dict(steps=True), "steps"),
    (dict(steps=10**23), "steps"), (dict(batch_size=0), "batch_size"), (dict(ckpt_every=-1), "ckpt_every"),
    (dict(log_every=0), "log_every"), (dict(num_workers=-2), "num_workers"), (dict(betas=(1.0, 0.9)), "betas"),
    (dict(adam_eps=0.0), "adam_eps"), (dict(precision="fp8"), "precision"), (dict(device="gpu9"), "device"),
    (dict(accum_steps=0), "accum_steps"), (dict(batch_size=10, accum_steps=3), "not divisible by accum steps 3"),
    (dict(tf32="yes"), "tf32"), (dict(grad_checkpointing=1), "grad_checkpointing"),
])
def test_train_config_refuses_out_of_range_values(kw, msg):
    with pytest.raises(ConfigError, match=msg) as e:
        TrainConfig(**{"steps": 10, **kw})
    assert "\n" not in str(e.value)


def test_train_config_accepts_edge_values():
    cfg = TrainConfig(steps=1, warmup_steps=0, weight_decay=0.0, grad_clip=0.0, seed=2**63 - 1)
    assert cfg.grad_clip == 0.0


TRAIN = ["train", "--task", "clip", "--model", "mmrobust-micro", "--steps", "2", "--batch-size", "8", "--quiet"]


@pytest.mark.parametrize("argv,msg", [
    (["--grad-clip=-1"], "--grad-clip"), (["--weight-decay", "-0.1"], "--weight-decay"),
    (["--warmup", "-1"], "--warmup"), (["--lr", "nan"], "--lr"), (["--lr", "inf"], "--lr"), (["--lr", "0"], "--lr"),
    (["--seed", str(2**64)], "--seed"), (["--seed", "-1"], "--seed"), (["--init-seed", str(2**64)], "--init-seed"),
    (["--init-seed", "-3"], "--init-seed"), (["--delimiter", ";;"], "--delimiter"),
    (["--steps", "99999999999999999999999"], "steps"),
])
def test_cli_refuses_out_of_range_options(argv, msg, tmp_path, micro_world, capsys):
    rc, err = _main([*TRAIN, "--data", micro_world.train_manifest, "--out", tmp_path / "run", *argv], capsys)
    assert rc == 2 and msg in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("task,opt,msg", [
    ("par", "tau=abc", "expected a float"), ("par", "tau=-1", "must be a finite number > 0"),
    ("par", "tau=nan", "finite"), ("fare", "eps=4/0", "expected a float"), ("fare", "eps=-0.1", "must be"),
    ("fare", "eps=2", "write 4/255, not 4"), ("fare", "attack_steps=0", "without an adversary"),
    ("fare", "attack_steps=1.5", "attack_steps"), ("fare", "step_size=0", "in (0, 1], got 0.0"),
    ("fare", f"seed={2**64}", "seed"), ("fare", "momentum=2", "momentum"), ("cleanclip", "l1=-1", "l1"),
    ("cleanclip", "l2=-0.5", "l2"), ("par", "view=1", "view"),
])
def test_bad_task_options_are_one_line(task, opt, msg, tmp_path, micro_world, capsys):
    rc, err = _main([*TRAIN, "--task", task, "--data", micro_world.train_manifest, "--out", tmp_path / "run",
                     "--opt", opt], capsys)
    assert rc == 2 and msg in err, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "run" / "config.yaml").exists()


def test_task_options_are_typed_from_the_signature():
    from mmrobust.tasks.build import task_option_values

    assert task_option_values("fare", {"eps": "4/255", "attack_steps": "3", "momentum": "none"}) == {
        "eps": 4 / 255, "attack_steps": 3, "momentum": None}
    assert task_option_values("par", {"tau": 2}) == {"tau": 2.0}
    assert task_option_values("fare", {"momentum": "0.9"}) == {"momentum": 0.9}


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


@pytest.mark.parametrize("damage,msg", [
    ("truncate", "truncated or not a PyTorch"), ("garbage", "truncated or not a PyTorch"),
    ("empty", "truncated or not a PyTorch"), ("pickled_code", "holds pickled code"),
    ("foreign_dict", "not a checkpoint written by mmrobust train"),
])
def test_damaged_last_pt_on_resume_is_one_line_and_touches_nothing(damage, msg, tmp_path, micro_world, capsys):
    out = tmp_path / "run"
    argv = [*TRAIN, "--data", micro_world.train_manifest, "--out", out]
    assert _main(argv, capsys)[0] == 0
    ckpt = out / "checkpoints" / "last.pt"
    if damage == "truncate":
        ckpt.write_bytes(ckpt.read_bytes()[:3000])
    elif damage == "garbage":
        ckpt.write_bytes(b"hello world" * 10)
    elif damage == "empty":
        ckpt.write_bytes(b"")
    elif damage == "pickled_code":
        torch.save({"x": _Evil()}, ckpt)
    else:
        torch.save({"step": 1}, ckpt)
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    rc, err = _main([*argv, "--resume"], capsys)
    assert rc == 2 and msg in err and "--overwrite" in err, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before  # config.yaml included


def test_resume_drops_log_rows_written_after_the_checkpoint(tmp_path, micro_world):
    ds = ImageTextDataset(micro_world.train_manifest, image_size=16, preload=True)
    cfg = dict(batch_size=16, lr=1e-3, warmup_steps=1, log_every=1, ckpt_every=2)
    train(CLIPTask(create_clip("mmrobust-micro")), ds, TrainConfig(steps=2, **cfg), tmp_path, progress=False)
    log = tmp_path / "train_log.jsonl"
    log.write_text(log.read_text() + '{"step": 3, "loss": 9.0}\n{"step": 4, "lo')  # killed before the next checkpoint
    res = train(CLIPTask(create_clip("mmrobust-micro")), ds, TrainConfig(steps=4, **cfg), tmp_path, resume=True,
                progress=False)
    assert res.resumed_from == 2
    steps = [json.loads(line)["step"] for line in log.read_text().splitlines()]
    assert steps == [1, 2, 3, 4]
    with pytest.raises(ConfigError, match="already holds a training run"):  # a fresh run never mixes into it
        train(CLIPTask(create_clip("mmrobust-micro")), ds, TrainConfig(steps=4, **cfg), tmp_path, progress=False)


def test_sampler_takes_any_64_bit_seed():
    from mmrobust.training.sampler import EpochBatches

    batches = list(EpochBatches(10, batch_size=4, seed=2**63 - 1, total_steps=3))
    assert len(batches) == 3 and all(len(b) == 4 for b in batches)


def test_run_of_an_earlier_version_still_resumes(tmp_path, micro_world, capsys):
    """config.yaml and checkpoints written before accum_steps, tf32 and grad_checkpointing existed."""
    import yaml

    from mmrobust.training.loop import _fingerprint

    assert not {"accum_steps", "tf32", "grad_checkpointing"} & set(json.loads(
        _fingerprint(CLIPTask(create_clip("mmrobust-micro")), TrainConfig(steps=2)))["optim"])
    out = tmp_path / "run"
    argv = [*TRAIN, "--data", micro_world.train_manifest, "--out", out]
    assert _main(argv, capsys)[0] == 0
    saved = yaml.safe_load((out / "config.yaml").read_text())
    for key in ("accum_steps", "tf32", "grad_checkpointing"):
        del saved["optim"][key]
    (out / "config.yaml").write_text(yaml.safe_dump(saved, sort_keys=False))
    rc, err = _main([*argv[:argv.index("--steps")], "--steps", "3", *argv[argv.index("--steps") + 2:], "--resume"],
                    capsys)
    assert rc == 0, err
