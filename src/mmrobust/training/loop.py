"""The generic training loop. It knows nothing about which method it runs: a Task returns
``{"loss": scalar, <named terms>}`` for a batch and says which parameters train.

Features: AdamW (no decay on norms/biases/logit scale), cosine schedule with warmup, gradient
clipping, gradient accumulation (``accum_steps`` micro-batches per optimizer step), bf16/fp16 autocast
and TF32 on CUDA, gradient checkpointing, periodic atomic checkpoints, ``resume=True`` after a kill
(bit-identical continuation on CPU), a clear stop on a non-finite loss keeping the last good checkpoint.

Under torchrun (a process group, see :mod:`mmrobust.training.distributed`) every rank takes its
:func:`~mmrobust.training.sampler.rank_share` of each global batch and the trainable gradients are
averaged once per optimizer step, so a run ends with the weights of one process on the same global
batch (up to float summation order); rank 0 alone writes checkpoints, logs and the progress bar.
"""
from __future__ import annotations

import contextlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from tqdm.auto import tqdm

from mmrobust.data.datasets import collate
from mmrobust.values import SEED_MAX, check_int, check_number, setting
from mmrobust.errors import ConfigError, DataError, TrainingError
from mmrobust.jsonio import Journal
from mmrobust.models.checkpoint import load_torch_file
from mmrobust.training.distributed import (all_reduce_mean_, barrier, broadcast_, max_across_ranks,
                                           mean_across_ranks, rank_and_size)
from mmrobust.training.optim import cosine_with_warmup, param_groups
from mmrobust.training.sampler import EpochBatches

CKPT_NAME = "last.pt"
LOG_NAME = "train_log.jsonl"


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings (paper recipes live in configs/*.yaml)."""

    steps: int = setting(help="optimizer steps")
    batch_size: int = setting(64, "the global batch: under torchrun each of W ranks takes batch-size / W rows")
    lr: float = setting(1e-5, "peak learning rate (> 0)")
    weight_decay: float = setting(0.1, "AdamW weight decay (>= 0)")
    warmup_steps: int = setting(50, "warmup steps (>= 0)", flag="--warmup")
    betas: tuple[float, float] = (0.9, 0.98)
    adam_eps: float = 1e-6
    grad_clip: float | None = setting(1.0, "max grad norm (0 or None disables clipping)")
    precision: str = setting("auto", "auto: bf16 autocast on CUDA, fp32 on CPU (autocast only on CUDA)")
    ckpt_every: int = setting(100, "checkpoint every N steps (0: only at the end)")
    log_every: int = 10
    seed: int = setting(0, "data order and augmentation seed")
    num_workers: int = setting(0, "data loader worker processes", flag="--workers")
    device: str = setting("cpu", "cpu, cuda or cuda:N")
    accum_steps: int = setting(1, "micro-batches per optimizer step (gradient accumulation; divides the batch "
                                  "size; gradients synced once per step)")
    tf32: bool = setting(True, "strict fp32 matmuls on CUDA (TF32 is on by default)", flag="--no-tf32")
    grad_checkpointing: bool = setting(False, "recompute the trained towers' blocks in backward: less memory "
                                              "for large models")

    def __post_init__(self) -> None:
        for name, low, flag in (("steps", 1, "--steps"), ("batch_size", 1, "--batch-size"),
                                ("accum_steps", 1, "--accum-steps"),
                                ("warmup_steps", 0, "--warmup"), ("ckpt_every", 0, "--ckpt-every"),
                                ("log_every", 1, "log_every"), ("num_workers", 0, "--workers"), ("seed", 0, "--seed")):
            check_int(name, getattr(self, name), low=low, high=SEED_MAX, fix=flag)  # ints fit in 64 bits
        check_number("learning rate", self.lr, low=0, low_open=True, fix="e.g. 1e-5 (--lr)")
        check_number("weight decay", self.weight_decay, low=0,
                     fix="e.g. 0.1 (--weight-decay); a negative one pushes weights up")
        if self.grad_clip is not None:
            check_number("grad clip", self.grad_clip, low=0, fix="0 or None disables clipping (--grad-clip 0); a "
                                                                "negative one reverses the update")
        check_number("adam_eps", self.adam_eps, low=0, low_open=True, fix="e.g. 1e-6")
        betas = self.betas if isinstance(self.betas, (tuple, list)) else ()
        if len(betas) != 2:
            raise ConfigError(f"betas {self.betas!r} must be two numbers in [0, 1), e.g. (0.9, 0.98)")
        for b in betas:
            check_number("betas", b, low=0, high=1, high_open=True, fix="e.g. (0.9, 0.98)")
        if self.batch_size % self.accum_steps:
            raise ConfigError(f"batch size {self.batch_size} is not divisible by accum steps {self.accum_steps}; "
                              "each micro-batch holds batch_size / accum_steps rows (--batch-size, --accum-steps)")
        for flag in ("tf32", "grad_checkpointing"):
            if not isinstance(getattr(self, flag), bool):
                raise ConfigError(f"{flag} {getattr(self, flag)!r} must be true or false")
        if self.precision not in ("auto", "fp32", "bf16", "fp16"):
            raise ConfigError(f"precision {self.precision!r} must be one of auto, fp32, bf16, fp16")
        try:
            torch.device(self.device)
        except (RuntimeError, TypeError):
            raise ConfigError(f"device {self.device!r} is not cpu, cuda or cuda:N") from None


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


@contextlib.contextmanager
def fp32_matmuls(tf32: bool, device: torch.device) -> Iterator[None]:
    """TF32 (or strict IEEE fp32 with ``tf32=False``) for fp32 matmuls and convolutions on CUDA, through
    torch's ``fp32_precision`` API (mixing it with the legacy ``allow_tf32`` flags is an error in torch); the
    previous settings are restored afterwards. A no-op off CUDA. (The benchmarks use it for the peer's side.)"""
    if device.type != "cuda":
        yield
        return
    backends = (torch.backends.cuda.matmul, torch.backends.cudnn.conv)
    before = [b.fp32_precision for b in backends]
    for b in backends:
        b.fp32_precision = "tf32" if tf32 else "ieee"
    try:
        yield
    finally:
        for b, value in zip(backends, before):
            b.fp32_precision = value


RESUME_FREE = ("ckpt_every", "log_every", "num_workers", "device", "steps", "grad_checkpointing")
# Settings added after checkpoints were first written: left out of the fingerprint at their default,
# so a checkpoint of an earlier version still resumes.
LATER_DEFAULTS = {"accum_steps": 1, "tf32": True}


def _fingerprint(task: Any, cfg: TrainConfig) -> str:
    """What must match for a checkpoint to be continued (settings that do not change the math excluded;
    the world size is not part of it: a run may resume on another number of ranks)."""
    keep = {k: v for k, v in asdict(cfg).items()
            if k not in RESUME_FREE and not (k in LATER_DEFAULTS and v == LATER_DEFAULTS[k])}
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
    Journal(path, what="training log").keep(lambda row: isinstance(row.get("step"), int) and row["step"] <= step)


def _refuse_existing(out: Path) -> None:
    """A fresh run must not replace another run's checkpoint or mix into its log."""
    found = [n for n in (f"checkpoints/{CKPT_NAME}", LOG_NAME) if (out / n).exists()]
    if found:
        raise ConfigError(f"{out} already holds a training run ({', '.join(found)}); pass resume=True "
                          "(--resume) to continue it, or use a fresh output directory")


def _to(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def _split(batch: dict[str, Any], n: int) -> list[dict[str, Any]]:
    """``n`` contiguous micro-batches of a collated batch (tensors and lists cut along the rows)."""
    if n == 1:
        return [batch]
    size = len(batch["image"])
    bounds = [size * k // n for k in range(n + 1)]
    return [{k: v[a:b] for k, v in batch.items()} for a, b in zip(bounds, bounds[1:]) if b > a]


def _check_loss(loss: torch.Tensor, step: int) -> None:
    if not torch.isfinite(loss):
        raise TrainingError(f"loss became {loss.item()} at step {step}; the last good checkpoint is kept "
                            "(lower --lr, use --precision fp32, or check the data)")


def _forward_backward(task: Any, micro: list[dict], scaler: Any, cfg: TrainConfig, device: torch.device,
                      step: int, check: bool) -> dict[str, torch.Tensor]:
    """Loss and backward of each micro-batch (gradients accumulate); returns the terms' mean over them."""
    sums: dict[str, torch.Tensor] = {}
    for batch in micro:
        with _autocast(cfg, device):
            out = task(batch)
        if check:
            _check_loss(out["loss"], step)
        scaler.scale(out["loss"] if len(micro) == 1 else out["loss"] / len(micro)).backward()
        for k, v in out.items():
            if isinstance(v, torch.Tensor):
                sums[k] = v.detach().mean() if k not in sums else sums[k] + v.detach().mean()
    return sums if len(micro) == 1 else {k: v / len(micro) for k, v in sums.items()}


def _step(task: Any, micro: list[dict], opt: torch.optim.Optimizer, sched: Any, scaler: Any, cfg: TrainConfig,
          device: torch.device, step: int) -> dict[str, float]:
    """One optimizer step over this rank's micro-batches. Under torchrun the ranks' gradients are averaged
    once, after the last micro-batch (DDP's ``no_sync`` accumulation), and the logged terms are the
    ranks' means; a non-finite loss on any rank stops every rank at the same step."""
    distributed = rank_and_size()[1] > 1
    opt.zero_grad(set_to_none=True)
    terms = _forward_backward(task, micro, scaler, cfg, device, step, check=not distributed)
    params = [p for g in opt.param_groups for p in g["params"]]
    if distributed:
        terms = mean_across_ranks(terms)
        _check_loss(terms["loss"], step)
        all_reduce_mean_([p.grad for p in params if p.grad is not None])
    scaler.unscale_(opt)
    norm = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip or float("inf"))
    if not scaler.is_enabled() and not torch.isfinite(norm):  # (fp16's scaler skips such steps itself)
        raise TrainingError(f"gradients became non-finite at step {step}; the last good checkpoint is kept "
                            "(lower --lr, use --precision fp32, or check the data)")
    scaler.step(opt)
    scaler.update()
    sched.step()
    task.after_step()
    return {k: float(v) for k, v in terms.items()}


def _optimizer(task: Any, cfg: TrainConfig, device: torch.device) -> tuple[torch.optim.Optimizer, Any, Any]:
    """AdamW over the task's trainable parameters, its cosine schedule and the (fp16-only) grad scaler."""
    opt = torch.optim.AdamW(param_groups(task.trainable_named_parameters(), cfg.weight_decay), lr=cfg.lr,
                            betas=cfg.betas, eps=cfg.adam_eps, fused=device.type in ("cpu", "cuda"))
    sched = cosine_with_warmup(opt, warmup_steps=cfg.warmup_steps, total_steps=cfg.steps)
    scaler = torch.amp.GradScaler(device.type, enabled=device.type == "cuda" and cfg.precision == "fp16")
    return opt, sched, scaler


def _frozen_prefixes(task: Any) -> tuple[str, ...]:
    return tuple(f"{name}." for name in task.frozen)


def _replicated(task: Any) -> list[torch.Tensor]:
    """Parameters and buffers every rank must hold alike (frozen references excluded: never synced)."""
    frozen = _frozen_prefixes(task)
    named = [*task.named_parameters(), *task.named_buffers()]
    return [t for name, t in named if not name.startswith(frozen)]


def _batchnorm_buffers(task: Any) -> list[torch.Tensor]:
    """Running statistics of trained BatchNorm layers: broadcast from rank 0 before each step, as DDP does."""
    frozen = _frozen_prefixes(task)
    return [b for name, m in task.named_modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
            and not f"{name}.".startswith(frozen) for b in m.buffers(recurse=False)]


def _drop_error(step: int) -> DataError:
    return DataError(f"an image of step {step}'s batch could not be read; under torchrun every rank needs its "
                     "full slice: fix or remove the unreadable rows (skipped_images in results.json of a "
                     "one-process run lists them), or train in one process")


def _loop(task: Any, loader: Any, opt: torch.optim.Optimizer, sched: Any, scaler: Any, cfg: TrainConfig,
          device: torch.device, out: Path, result: TrainResult, bar: Any, fp: str) -> None:
    """The steps from ``result.steps_done`` on; rank 0 writes log rows and checkpoints."""
    main, distributed = rank_and_size()[0] == 0, rank_and_size()[1] > 1
    ckpt, synced = out / "checkpoints" / CKPT_NAME, _batchnorm_buffers(task) if distributed else []
    log = Journal(out / LOG_NAME, what="training log") if main else None
    for step, batch in enumerate(loader, start=result.steps_done):
        dropped = batch.pop("n_dropped", 0)
        result.n_dropped += dropped
        if distributed and max_across_ranks(dropped, device):
            raise _drop_error(step)
        if "image" not in batch:
            continue
        broadcast_(synced)
        terms = _step(task, _split(_to(batch, device), cfg.accum_steps), opt, sched, scaler, cfg, device, step)
        result.steps_done = step + 1
        if step % cfg.log_every == 0 or step + 1 == cfg.steps:
            row = {"step": step + 1, "lr": sched.get_last_lr()[-1], **terms}
            result.history.append(row)
            if log is not None:
                log.append(row)
            bar.set_postfix(loss=f"{terms['loss']:.3f}")
        bar.update(1)
        if main and cfg.ckpt_every and (step + 1) % cfg.ckpt_every == 0:
            _save(ckpt, task, opt, sched, scaler, step + 1, fp)


def _loader(dataset: torch.utils.data.Dataset, cfg: TrainConfig, start: int) -> torch.utils.data.DataLoader:
    """Batches from step ``start`` on: this rank's share of each global batch (all of it in one process)."""
    rank, world_size = rank_and_size()
    sampler = EpochBatches(len(dataset), batch_size=cfg.batch_size, seed=cfg.seed, total_steps=cfg.steps,
                           start_step=start, rank=rank, world_size=world_size, micro_batches=cfg.accum_steps)
    return torch.utils.data.DataLoader(dataset, batch_sampler=sampler, collate_fn=collate,
                                       num_workers=cfg.num_workers, persistent_workers=False)


def train(task: Any, dataset: torch.utils.data.Dataset, cfg: TrainConfig, out_dir: str | Path, *,
          resume: bool = False, progress: bool = True, desc: str | None = None,
          on_start: Callable[[int], None] | None = None) -> TrainResult:
    """Train ``task`` on ``dataset`` for ``cfg.steps`` steps; checkpoints and logs go to ``out_dir``.

    With ``resume=True`` and ``out_dir/checkpoints/last.pt`` present, training continues from it (log
    rows written after that checkpoint are dropped); without it, an existing checkpoint or log is an
    error. ``on_start(step)`` runs once the start step is settled (a resume was accepted), before any file
    is written, e.g. to record the run's config. Under torchrun, call it on every rank: all read the same
    checkpoint and start from rank 0's weights; only rank 0 runs ``on_start``, writes files and shows the
    progress bar (``out_dir`` must be on a filesystem every rank sees).
    """
    out = Path(out_dir)
    rank = rank_and_size()[0]
    if not resume:
        _refuse_existing(out)
    device = torch.device(cfg.device)
    task.to(device)
    opt, sched, scaler = _optimizer(task, cfg, device)
    ckpt = out / "checkpoints" / CKPT_NAME
    fp = _fingerprint(task, cfg)
    start = _load(ckpt, task, opt, sched, scaler, fp) if resume and ckpt.is_file() else 0
    if start > cfg.steps:
        raise ConfigError(f"checkpoint {ckpt} is at step {start}, past --steps {cfg.steps}; resume with "
                          f"--steps >= {start}")
    loader = _loader(dataset, cfg, start)
    broadcast_(_replicated(task))  # every rank starts from rank 0's weights, as DDP does
    barrier()  # every rank has checked and read out_dir before rank 0 writes into it
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        if on_start is not None:
            on_start(start)
        _trim_log(out / LOG_NAME, start)
    result = TrainResult(steps_done=start, resumed_from=start)
    bar = tqdm(total=cfg.steps, initial=start, desc=desc or task.name, disable=not progress or rank != 0,
               dynamic_ncols=True, leave=False)
    if cfg.grad_checkpointing:
        task.set_grad_checkpointing(True)
    task.train()
    try:
        with fp32_matmuls(cfg.tf32, device):
            _loop(task, loader, opt, sched, scaler, cfg, device, out, result, bar, fp)
    finally:
        bar.close()
        task.eval()
        if cfg.grad_checkpointing:
            task.set_grad_checkpointing(False)
    if result.steps_done == start and start < cfg.steps:
        raise TrainingError("no batch had a readable image; check the image paths of the manifest")
    if rank == 0:
        _save(ckpt, task, opt, sched, scaler, result.steps_done, fp)
    barrier()  # the final checkpoint exists when train returns on any rank
    return result
