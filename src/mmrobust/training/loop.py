"""The generic training loop. It knows nothing about which method it runs: a Task returns
``{"loss": scalar, <named terms>}`` for a batch and says which parameters train.

Features: AdamW (no decay on norms/biases/logit scale), cosine schedule with warmup, gradient
clipping, bf16/fp16 autocast on CUDA, periodic atomic checkpoints, ``resume=True`` after a kill
(bit-identical continuation on CPU), a clear stop on a non-finite loss keeping the last good checkpoint.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from mmrobust.data.datasets import collate
from mmrobust.errors import ConfigError, TrainingError
from mmrobust.training.optim import cosine_with_warmup, param_groups
from mmrobust.training.sampler import EpochBatches

CKPT_NAME = "last.pt"


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings (paper recipes live in configs/*.yaml)."""

    steps: int
    batch_size: int = 64
    lr: float = 1e-5
    weight_decay: float = 0.1
    warmup_steps: int = 50
    betas: tuple[float, float] = (0.9, 0.98)
    adam_eps: float = 1e-6
    grad_clip: float | None = 1.0
    precision: str = "auto"  # auto | fp32 | bf16 | fp16 (autocast only on CUDA)
    ckpt_every: int = 0  # 0: only at the end
    log_every: int = 10
    seed: int = 0
    num_workers: int = 0
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.steps <= 0 or self.batch_size <= 0:
            raise ConfigError("steps and batch size must be positive")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ConfigError(f"learning rate {self.lr} must be a positive number, e.g. 1e-5")
        if self.precision not in ("auto", "fp32", "bf16", "fp16"):
            raise ConfigError(f"precision {self.precision!r} must be one of auto, fp32, bf16, fp16")


@dataclass
class TrainResult:
    steps_done: int
    resumed_from: int
    history: list[dict[str, float]] = field(default_factory=list)
    n_dropped: int = 0


def _autocast(cfg: TrainConfig, device: torch.device) -> contextlib.AbstractContextManager:
    if device.type != "cuda" or cfg.precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.float16 if cfg.precision == "fp16" else torch.bfloat16
    return torch.autocast("cuda", dtype=dtype)


RESUME_FREE = ("ckpt_every", "log_every", "num_workers", "device", "steps")


def _fingerprint(task: Any, cfg: TrainConfig) -> str:
    """What must match for a checkpoint to be continued (settings that do not change the math excluded)."""
    keep = {k: v for k, v in asdict(cfg).items() if k not in RESUME_FREE}
    return json.dumps({"task": task.name, "optim": keep}, sort_keys=True, default=str)


def _save(path: Path, task: Any, opt: torch.optim.Optimizer, sched: Any, scaler: Any, step: int,
          fingerprint: str) -> None:
    state = {"task": task.checkpoint_state(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
             "scaler": scaler.state_dict(), "step": step, "fingerprint": fingerprint}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)  # atomic: a kill never leaves half a checkpoint


def _load(path: Path, task: Any, opt: torch.optim.Optimizer, sched: Any, scaler: Any, fingerprint: str) -> int:
    state = torch.load(path, map_location="cpu", weights_only=True)  # no pickled code runs
    if state.get("fingerprint") != fingerprint:
        raise ConfigError(f"checkpoint {path} was written with other settings (task or optimisation); "
                          "resume with the same settings, or use a fresh --out / drop --resume")
    task.load_checkpoint_state(state["task"])
    opt.load_state_dict(state["optimizer"])
    sched.load_state_dict(state["scheduler"])
    scaler.load_state_dict(state["scaler"])
    return int(state["step"])


def _to(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def _step(task: Any, batch: dict, opt: torch.optim.Optimizer, sched: Any, scaler: Any, cfg: TrainConfig,
          device: torch.device, step: int) -> dict[str, float]:
    with _autocast(cfg, device):
        out = task(batch)
    loss = out["loss"]
    if not torch.isfinite(loss):
        raise TrainingError(f"loss became {loss.item()} at step {step}; the last good checkpoint is kept "
                            "(lower --lr, use --precision fp32, or check the data)")
    opt.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    params = [p for g in opt.param_groups for p in g["params"]]
    scaler.unscale_(opt)
    norm = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip or float("inf"))
    if not scaler.is_enabled() and not torch.isfinite(norm):  # (fp16's scaler skips such steps itself)
        raise TrainingError(f"gradients became non-finite at step {step}; the last good checkpoint is kept "
                            "(lower --lr, use --precision fp32, or check the data)")
    scaler.step(opt)
    scaler.update()
    sched.step()
    task.after_step()
    return {k: float(v.detach().mean()) for k, v in out.items() if isinstance(v, torch.Tensor)}


def train(task: Any, dataset: torch.utils.data.Dataset, cfg: TrainConfig, out_dir: str | Path, *,
          resume: bool = False, progress: bool = True, desc: str | None = None) -> TrainResult:
    """Train ``task`` on ``dataset`` for ``cfg.steps`` steps; checkpoints and logs go to ``out_dir``.

    With ``resume=True`` and ``out_dir/checkpoints/last.pt`` present, training continues from it.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device(cfg.device)
    task.to(device)
    opt = torch.optim.AdamW(param_groups(task.trainable_named_parameters(), cfg.weight_decay), lr=cfg.lr,
                            betas=cfg.betas, eps=cfg.adam_eps, fused=device.type in ("cpu", "cuda"))
    sched = cosine_with_warmup(opt, warmup_steps=cfg.warmup_steps, total_steps=cfg.steps)
    scaler = torch.amp.GradScaler(device.type, enabled=device.type == "cuda" and cfg.precision == "fp16")
    ckpt = out / "checkpoints" / CKPT_NAME
    fp = _fingerprint(task, cfg)
    start = _load(ckpt, task, opt, sched, scaler, fp) if resume and ckpt.is_file() else 0
    sampler = EpochBatches(len(dataset), batch_size=cfg.batch_size, seed=cfg.seed, total_steps=cfg.steps,
                           start_step=start)
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=sampler, collate_fn=collate,
                                         num_workers=cfg.num_workers, persistent_workers=False)
    result = TrainResult(steps_done=start, resumed_from=start)
    log = (out / "train_log.jsonl").open("a")
    bar = tqdm(total=cfg.steps, initial=start, desc=desc or task.name, disable=not progress, dynamic_ncols=True,
               leave=False)
    task.train()
    try:
        for step, batch in enumerate(loader, start=start):
            result.n_dropped += batch.pop("n_dropped", 0)
            if "image" not in batch:
                continue
            terms = _step(task, _to(batch, device), opt, sched, scaler, cfg, device, step)
            result.steps_done = step + 1
            if step % cfg.log_every == 0 or step + 1 == cfg.steps:
                row = {"step": step + 1, "lr": sched.get_last_lr()[-1], **terms}
                result.history.append(row)
                log.write(json.dumps(row) + "\n")
                log.flush()
                bar.set_postfix(loss=f"{terms['loss']:.3f}")
            bar.update(1)
            if cfg.ckpt_every and (step + 1) % cfg.ckpt_every == 0:
                _save(ckpt, task, opt, sched, scaler, step + 1, fp)
    finally:
        bar.close()
        log.close()
        task.eval()
    if result.steps_done == start and start < cfg.steps:
        raise TrainingError("no batch had a readable image; check the image paths of the manifest")
    _save(ckpt, task, opt, sched, scaler, result.steps_done, fp)
    return result
