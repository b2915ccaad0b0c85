"""A defense's number under an attack that does not see it: attack the undefended model, then defend.

This is the protocol of most test-time defense papers (e.g. TTC, Xing et al., CVPR 2025: PGD on the plain CLIP,
then the counterattack on its adversarial images). It measures how well the defense undoes a fixed, non-adaptive
perturbation, not robustness (Athalye et al. 2018; Tramer et al. 2020): reports label it so, beside the adaptive
number (:mod:`mmrobust.eval.defended`).

Finished (eps, batch) chunks of the attack on the undefended model, adversarial images included, go to the
``partial`` file as in :func:`mmrobust.eval.robust.evaluate_robust`, so a killed run resumes; the defended
predictions are recomputed (one draw of a randomized defense per image, from the defense's own generator).
"""
from __future__ import annotations

import inspect
from typing import Any, Callable

import torch
from torch import Tensor

from mmrobust.eval.robust import (PartialResults, RobustSettings, _Run, checked_run, load_images, run_key,
                                  sample_ids, skipped_rows)
from mmrobust.eval.zeroshot import Classifier
from mmrobust.registry import ATTACKS
from mmrobust.reports.protocol import eps_label

LogitsFn = Callable[[Tensor], Tensor]


def correct(logits_fn: LogitsFn, x: Tensor, y: Tensor, *, batch_size: int, device: str) -> Tensor:
    """(B,) bool: the prediction of ``logits_fn`` is ``y``, in batches, without a graph."""
    out = []
    with torch.no_grad():
        for start in range(0, len(x), batch_size):
            xb, yb = x[start:start + batch_size].to(device), y[start:start + batch_size].to(device)
            out.append((logits_fn(xb).argmax(dim=1) == yb).cpu())
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.bool)


def evaluate_transfer(model: Any, defended: Any, dataset: Any, classifier: Classifier, settings: RobustSettings, *,
                      partial: Any = None) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """Clean and robust accuracy of ``model`` under ``settings.attack`` and of ``defended`` on the same adversarial
    images (robust = right on its own clean draw and on the adversarial image). Returns (metrics, per-sample flags:
    ``clean``, ``defended_clean``, ``undefended@EPS``, ``transfer@EPS``)."""
    s = settings
    fn, options = ATTACKS.get(s.attack), dict(s.attack_options)
    wanted = sample_ids(len(dataset), s.n_samples, s.seed)
    x, y, ids = load_images(dataset, wanted)
    base: LogitsFn = lambda z: classifier.logits(model, z)  # noqa: E731
    guarded: LogitsFn = lambda z: classifier.logits(defended, z)  # noqa: E731
    model.eval()
    found = checked_run(base, x[:16].to(s.device), y[:16].to(s.device)) if s.check else []
    key = {"protocol": "transfer", "attack": s.attack, "norm": s.norm, "seed": s.seed, "batch_size": s.batch_size,
           "options": options, "device": torch.device(s.device).type}
    store = PartialResults(partial, run_key(model, classifier, x, y, ids, key)) if partial else None
    call = {"check": False, **options} if s.check and "check" in inspect.signature(fn).parameters else options
    run = _Run(fn, base, x, y, ids, s, call, store, True)
    done = store.load() if store is not None else {}
    flags = {"defended_clean": correct(guarded, x, y, batch_size=s.batch_size, device=s.device)}
    metrics: dict[str, Any] = {"attack": s.attack, "norm": s.norm, "n": len(ids), "seed": s.seed, "ids": ids,
                               "n_skipped": len(skipped_rows(dataset, wanted)), "check_warnings": found, "eps": {},
                               "defended_clean_top1": float(flags["defended_clean"].float().mean())}
    for e in s.eps:
        chunks, advs = zip(*(run.chunk(e, start, done) for start in range(0, len(ids), s.batch_size)))
        flags["clean"] = torch.tensor([ok for c in chunks for ok in c["clean"]])
        undefended = torch.tensor([ok for c in chunks for ok in c["robust"]])
        x_adv = torch.cat([a for a in advs if a is not None])
        after = flags["defended_clean"] & correct(guarded, x_adv, y, batch_size=s.batch_size, device=s.device)
        flags[f"undefended@{eps_label(e)}"], flags[f"transfer@{eps_label(e)}"] = undefended, after
        metrics["eps"][eps_label(e)] = {"eps": e, "undefended_top1": float(undefended.float().mean()),
                                        "transfer_top1": float(after.float().mean()), "config": chunks[-1]["config"],
                                        "defense_stats": _stats(defended, x_adv, s)}
    metrics["clean_top1"] = float(flags["clean"].float().mean()) if "clean" in flags else float("nan")
    metrics["defense_stats"] = _stats(defended, x, s)
    return metrics, flags


def _stats(defended: Any, x: Tensor, s: RobustSettings) -> dict[str, float]:
    """The defense's own description of (the first batch of) these images, e.g. TTC's share counterattacked."""
    stats = getattr(defended, "defense_stats", None)
    return stats(x[:s.batch_size].to(s.device)) if callable(stats) and len(x) else {}
