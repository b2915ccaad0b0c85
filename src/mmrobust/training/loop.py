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
from typing import Any, Callable

import torch
from tqdm.auto import tqdm

from mmrobust.data.datasets import collate
from mmrobust.values import SEED_MAX, check_int
from mmrobust.errors import ConfigError, DataError, TrainingError
from mmrobust.models.checkpoint import load_torch_file
from mmrobust.training.optim import cosine_with_warmup, param_groups
from mmrobust.training.sampler import EpochBatches

CKPT_NAME = "last.pt"
LOG_NAME = "train_log.jsonl"


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
        for name, low, flag in (("steps", 1, "--steps"), ("batch_size", 1, "--batch-size"),
                                ("warmup_steps", 0, "--warmup"), ("ckpt_every", 0, "--ckpt-every"),
                                ("log_every", 1, "log_every"), ("num_workers", 0, "--workers"), ("seed", 0, "--seed")):
            _check_int(name, getattr(self, name), low, flag)
        if not _finite(self.lr) or self.lr <= 0:
            raise ConfigError(f"learning rate {self.lr!r} must be a positive finite number, e.g. 1e-5 (--lr)")
        if not _finite(self.weight_decay) or self.weight_decay < 0:
            raise ConfigError(f"weight decay {self.weight_decay!r} must be a finite number >= 0, e.g. 0.1 "
                              "(--weight-decay); a negative one pushes weights up")
        if self.grad_clip is not None and (not _finite(self.grad_clip) or self.grad_clip < 0):
            raise ConfigError(f"grad clip {self.grad_clip!r} must be a finite max norm >= 0 (0 or None disables "
                              "clipping, --grad-clip 0); a negative one reverses the update")
        if not _finite(self.adam_eps) or self.adam_eps <= 0:
            raise ConfigError(f"adam_eps {self.adam_eps!r} must be a positive finite number, e.g. 1e-6")
        betas = self.betas if isinstance(self.betas, (tuple, list)) else ()
        if len(betas) != 2 or not all(_finite(b) and 0 <= b < 1 for b in betas):
            raise ConfigError(f"betas {self.betas!r} must be two numbers in [0, 1), e.g. (0.9, 0.98)")
        if self.precision not in ("auto", "fp32", "bf16", "fp16"):
            raise ConfigError(f"precision {self.precision!r} must be one of auto, fp32, bf16, fp16")
        try:
            torch.device(self.device)
        except (RuntimeError, TypeError):
            raise ConfigError(f"device {self.device!r} is not cpu, cuda or cuda:N") from None


def _finite(value: Any) -> bool:
    """A real number (not bool), not NaN or infinite."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_int(name: str, value: Any, low: int, flag: str) -> None:
    """One-line ConfigError unless ``value`` is an int in [low, 2**63 - 1] (it must fit in 64 bits)."""
    check_int(name, value, low=low, high=SEED_MAX, fix=flag)


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


CKPT_KEYS = ("task", "optimizer", "scheduler", "scaler", "step", "fingerprint")
_RESTART = "delete it and start again with `mmrobust train --overwrite`, or restore it from a backup"


def _load(path: Path, task: Any, opt: torch.optim.Optimizer, sched: Any, scaler: Any, fingerprint: str) -> int:
    state = load_torch_file(path, what="training checkpoint", fix=_RESTART,  # no pickled code runs
                            code_fix=f"mmrobust train never writes such a file; {_RESTART}")
    if not isinstance(state, dict) or any(k not in state for k in CKPT_KEYS):
        raise DataError(f"{path} is not a checkpoint written by mmrobust train (it lacks "
                        f"{[k for k in CKPT_KEYS if not isinstance(state, dict) or k not in state]}); {_RESTART}")
    if state["fingerprint"] != fingerprint:
        raise ConfigError(f"checkpoint {path} was written with other settings (task or optimisation); "
                          "resume with the same settings, or use a fresh --out / drop --resume")
    try:
        task.load_checkpoint_state(state["task"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        return int(state["step"])
    except ConfigError:
        raise
    except (RuntimeError, ValueError, KeyError, TypeError, AttributeError) as e:
        first = (str(e).strip().splitlines() or [""])[0].split(". ")[0][:120]
        raise ConfigError(f"checkpoint {path} does not fit this task and model ({type(e).__name__}: {first}); "
                          "resume with the same --task/--model, or use a fresh --out") from e


def _trim_log(path: Path, step: int) -> None:
    """Keep only log rows up to ``step`` (rows after the checkpoint are recomputed by the resumed run)."""
    if not path.is_file():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except ValueError:  # a half-written line from a kill
            continue
        if isinstance(row, dict) and isinstance(row.get("step"), int) and row["step"] <= step:
            keep.append(line + "\n")
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(keep))
    os.replace(tmp, path)


def _refuse_existing(out: Path) -> None:
    """A fresh run must not replace another run's checkpoint or mix into its log."""
    found = [n for n in (f"checkpoints/{CKPT_NAME}", LOG_NAME) if (out / n).exists()]
    if found:
        raise ConfigError(f"{out} already holds a training run ({', '.join(found)}); pass resume=True "
                          "(--resume) to continue it, or use a fresh output directory")


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


def _optimizer(task: Any, cfg: TrainConfig, device: torch.device) -> tuple[torch.optim.Optimizer, Any, Any]:
    """AdamW over the task's trainable parameters, its cosine schedule and the (fp16-only) grad scaler."""
    opt = torch.optim.AdamW(param_groups(task.trainable_named_parameters(), cfg.weight_decay), lr=cfg.lr,
                            betas=cfg.betas, eps=cfg.adam_eps, fused=device.type in ("cpu", "cuda"))
    sched = cosine_with_warmup(opt, warmup_steps=cfg.warmup_steps, total_steps=cfg.steps)
    scaler = torch.amp.GradScaler(device.type, enabled=device.type == "cuda" and cfg.precision == "fp16")
    return opt, sched, scaler


def train(task: Any, dataset: torch.utils.data.Dataset, cfg: TrainConfig, out_dir: str | Path, *,
          resume: bool = False, progress: bool = True, desc: str | None = None,
          on_start: Callable[[int], None] | None = None) -> TrainResult:
    """Train ``task`` on ``dataset`` for ``cfg.steps`` steps; checkpoints and logs go to ``out_dir``.

    With ``resume=True`` and ``out_dir/checkpoints/last.pt`` present, training continues from it (log
    rows written after that checkpoint are dropped); without it, an existing checkpoint or log is an
    error. ``on_start(step)`` runs once the start step is settled (a resume was accepted), before any file
    is written, e.g. to record the run's config.
    """
    out = Path(out_dir)
    if not resume:
        _refuse_existing(out)
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device(cfg.device)
    task.to(device)
    opt, sched, scaler = _optimizer(task, cfg, device)
    ckpt = out / "checkpoints" / CKPT_NAME
    fp = _fingerprint(task, cfg)
    start = _load(ckpt, task, opt, sched, scaler, fp) if resume and ckpt.is_file() else 0
    if start > cfg.steps:
        raise ConfigError(f"checkpoint {ckpt} is at step {start}, past --steps {cfg.steps}; resume with "
                          f"--steps >= {start}")
    sampler = EpochBatches(len(dataset), batch_size=cfg.batch_size, seed=cfg.seed, total_steps=cfg.steps,
                           start_step=start)
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=sampler, collate_fn=collate,
                                         num_workers=cfg.num_workers, persistent_workers=False)
    if on_start is not None:
        on_start(start)
    _trim_log(out / LOG_NAME, start)
    result = TrainResult(steps_done=start, resumed_from=start)
    log = (out / LOG_NAME).open("a")
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
