"""Building blocks of evaluations that attack more than one model on the same images (a test-time defense:
the undefended model and the defended one): every (eps, batch) chunk attacked once and kept with its adversarial
images (resumable through :class:`~mmrobust.eval.robust.PartialResults`), and the accuracy of a randomized
model as its mean over several draws of its randomness."""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor

from mmrobust.eval.robust import PartialResults, RobustSettings, AttackRun, run_key
from mmrobust.eval.zeroshot import Classifier
from mmrobust.registry import ATTACKS

LogitsFn = Callable[[Tensor], Tensor]


@dataclass(frozen=True)
class Attacked:
    """One attack at one eps over all sampled images (one draw per prediction for a randomized model)."""

    x_adv: Tensor  # (N, C, H, W) in [0, 1]; the clean image where the attack's clean prediction was wrong (not
    # when warm-started: then the better of the start and the attack's image, see apgd_logits)
    clean: Tensor  # (N,) bool: clean prediction right
    robust: Tensor  # (N,) bool: clean and adversarial predictions right
    config: dict[str, Any]


@dataclass(frozen=True)
class WarmStart:
    """Where an attack starts instead of a random point (Tramer et al. 2020): per eps, one image per sampled
    image (another attack's adversarial images at that eps), and what made them (part of the resume key)."""

    images: dict[float, Tensor]  # eps -> (N, C, H, W) in [0, 1]
    source: dict[str, Any]  # e.g. {"from": "paper", "attack": "pgd", "options": {...}}


def attack_all(model: Any, classifier: Classifier, x: Tensor, y: Tensor, ids: list[int], s: RobustSettings,
               attack: str, options: dict[str, Any], *, partial: Path | None, tag: str,
               warm: WarmStart | None = None) -> dict[float, Attacked]:
    """Registered ``attack`` with ``options`` on ``classifier.logits(model, .)`` at every eps of ``s``, chunk by
    chunk (each chunk starts from ``s.seed``, or from ``warm``'s images: the attack's ``x_init``); chunks
    finished by a killed run with the same ``tag``, attack, settings, warm start, model and images are read back
    from ``partial`` with their adversarial images."""
    fn = ATTACKS.get(attack)
    logits_fn: LogitsFn = lambda z: classifier.logits(model, z)  # noqa: E731
    config = getattr(model, "defense_config", None)
    key = {"tag": tag, "attack": attack, "norm": s.norm, "seed": s.seed, "batch_size": s.batch_size,
           "options": options, "device": torch.device(s.device).type, "defense": config,
           **({"warm_start": warm.source} if warm is not None else {})}
    store = PartialResults(partial, run_key(model, classifier, x, y, ids, key)) if partial else None
    call = {"check": False, **options} if "check" in inspect.signature(fn).parameters else options
    run = AttackRun(fn, logits_fn, x, y, ids, s, call, store, True,
                    starts=None if warm is None else {float(e): v for e, v in warm.images.items()})
    done = store.load() if store is not None else {}
    out = {}
    for e in s.eps:
        chunks, advs = zip(*(run.chunk(e, start, done) for start in range(0, len(ids), s.batch_size)))
        out[e] = Attacked(torch.cat(advs), torch.tensor([ok for c in chunks for ok in c["clean"]]),
                          torch.tensor([ok for c in chunks for ok in c["robust"]]), chunks[-1]["config"])
    return out


def expected_correct(logits_fn: LogitsFn, x: Tensor, y: Tensor, *, draws: int, batch_size: int,
                     device: str) -> Tensor:
    """(N,) share of ``draws`` forward passes that predict ``y`` (0 or 1 for a deterministic model), in batches,
    without a graph: the accuracy of a randomized model in expectation over its randomness, per image."""
    out = []
    with torch.no_grad():
        for start in range(0, len(x), batch_size):
            xb, yb = x[start:start + batch_size].to(device), y[start:start + batch_size].to(device)
            hits = sum((logits_fn(xb).argmax(dim=1) == yb).float() for _ in range(draws))
            out.append((hits / draws).cpu())
    return torch.cat(out) if out else torch.zeros(0)
