"""Robust accuracy of a CLIP under a test-time defense: the paper's protocol and the adaptive attack, side by side.

For a registered defense (``mmrobust.registry.DEFENSES``, e.g. "ttc": Xing et al., CVPR 2025), on the same seeded
test images, per eps:

* **no defense**: the attack (``attack``, e.g. APGD-CE) on the plain model;
* **paper protocol** (not robustness): the images of the paper's attack on the plain model (``paper_attack``;
  TTC's: PGD, 10 steps of 1/255), then the defense. Most test-time defense papers report this number; the
  attack never sees the defense;
* **through the defense**: ``attack`` on the defended model, test-time procedure in the loop (autograd through
  it, or BPDA), with EOT over the defense's randomness when it is randomized;
* **adaptive**: the strongest of all this, the way AutoAttack takes the worst case over attacks (Croce & Hein
  2020; Athalye et al. 2018; Tramer et al. 2020): the lowest of the paper-protocol, transfer (``attack``'s images
  on the plain model, then defended), through and per-image worst-case accuracies. The defense's robustness
  number, an upper bound like every attack's.

A randomized defense is scored in expectation: an image's accuracy is the share of ``draws`` forward passes that
classify it right (one pass for a deterministic model), drawn by a copy of the defense with its own seed, so the
scores do not depend on how many draws the attacks took. The per-image worst case (of the clean image and the
three attacks' images) is picked on those draws and scored on fresh ones: the minimum of noisy estimates would
be biased low. A resumed run reuses the finished attack chunks; the attack's later draws of the defense then
differ from an uninterrupted run's (same distribution).

Example::

    record = run_evaluation("robust-defended", model=clip, data=test, settings={"defense": "ttc", "eps": (4/255,)})
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from mmrobust.attacks.adaptive import BACKWARDS
from mmrobust.errors import ConfigError
from mmrobust.eval.attack_chunks import Attacked, WarmStart, attack_all, expected_correct
from mmrobust.eval.contract import evaluation
from mmrobust.eval.randomized import probe_randomness
from mmrobust.eval.robust import (RobustSettings, checked_run, load_images, robust_protocol, sample_ids,
                                  skipped_rows, typed_attack_options)
from mmrobust.eval.zeroshot import Classifier, model_classifier
from mmrobust.registry import ATTACKS, DEFENSES
from mmrobust.reports.contract import Record, Table
from mmrobust.reports.protocol import eps_label
from mmrobust.reports.sanity import collect, robust_above_clean
from mmrobust.values import check_int, setting

_DEFENSE_GIVEN = ("model", "seed", "backward")  # what the evaluation passes to a defense itself
RANDOMIZED_PREFIX = "the model is not deterministic"  # reports.sanity.randomized_model's warning
MASKING_MARGIN = 0.05  # the attack through the defense above the transfer by more than this: a warning
CANDIDATES = ("clean", "paper", "transfer", "through")  # the images the per-image worst case is taken over
SCORE_STREAM = 10_000  # the scoring copy of the defense draws from seed + this: scores do not depend on the attacks
WARM_STARTS = ("none", "paper", "undefended")  # where the attack through the defense starts (DefendedSettings)
_WARM_FROM = {"paper": "the paper-protocol images", "undefended": "its undefended-model images"}


def _paper_pgd() -> dict[str, Any]:
    return {"steps": 10, "step_size": 1 / 255}  # TTC.sh: --test_numsteps 10 --test_stepsize 1 (PGD, CE)


@dataclass(frozen=True)
class DefendedSettings(RobustSettings):
    """The robust evaluation's settings plus the defense, its options, the paper's attack and how the adaptive
    attack sees the defense."""

    defense: str = setting("ttc", "test-time defense (mmrobust.registry.DEFENSES)")
    defense_options: dict[str, Any] = setting(help="defense option, e.g. steps=2", flag="--defense-opt",
                                              factory=dict)
    paper_attack: str = setting("pgd", "the attack of the paper protocol, on the undefended model")
    paper_attack_options: dict[str, Any] = setting(help="its options (default: TTC's PGD, steps=10 and "
                                                        "step_size=1/255)", flag="--paper-attack-opt",
                                                   factory=_paper_pgd)
    eot_samples: int = setting(10, "EOT samples of the attack through a randomized defense (its gradient "
                                   "averaged over that many draws); a deterministic defense is attacked with 1")
    backward: str = setting("through", "how the attack's gradient crosses the defense: through (autograd "
                                       "through the test-time procedure) or bpda (identity)")
    draws: int = setting(10, "forward passes per image scoring a randomized defense (accuracy: their mean)")
    warm_start: str = setting("paper", "where the attack through the defense starts (Tramer et al. 2020): paper "
                                       "(the paper-protocol images), undefended (the attack's images on the "
                                       "undefended model) or none (its own random start)")

    def __post_init__(self) -> None:
        super().__post_init__()
        if "eot_samples" in self.attack_options:
            raise ConfigError("give the adaptive attack's EOT samples with --eot-samples, not --attack-opt "
                              "eot_samples (the attack on the undefended model needs none)")
        check_int("eot_samples", self.eot_samples, low=1, fix="--eot-samples 10")
        check_int("draws", self.draws, low=1, fix="--draws 10")
        if self.backward not in BACKWARDS:
            raise ConfigError(f"backward {self.backward!r} is not one of {', '.join(BACKWARDS)} (--backward)")
        _check_warm_start(self.warm_start, self.attack)
        object.__setattr__(self, "defense_options",
                           DEFENSES.typed(self.defense, self.defense_options, skip=_DEFENSE_GIVEN))
        object.__setattr__(self, "paper_attack_options",
                           typed_attack_options(self.paper_attack, self.paper_attack_options))


def _check_warm_start(warm_start: str, attack: str) -> None:
    if warm_start not in WARM_STARTS:
        raise ConfigError(f"warm start {warm_start!r} is not one of {', '.join(WARM_STARTS)} (--warm-start)")
    if warm_start != "none" and "x_init" not in inspect.signature(ATTACKS.get(attack)).parameters:
        raise ConfigError(f"attack {attack!r} takes no warm start; use --attack apgd-ce (or apgd-dlr) or "
                          "--warm-start none")


def _warm(s: DefendedSettings, attacked: dict[str, dict[float, Attacked]]) -> WarmStart | None:
    """The warm start of the attack through the defense: the paper protocol's or the undefended attack's
    images at each eps (inside the same eps-ball around the clean image), or None."""
    if s.warm_start == "none":
        return None
    paper = s.warm_start == "paper"
    name, options = (s.paper_attack, s.paper_attack_options) if paper else (s.attack, s.attack_options)
    return WarmStart({e: a.x_adv for e, a in attacked["paper" if paper else "transfer"].items()},
                     {"from": s.warm_start, "attack": name, "options": dict(options)})


def _mean(t: torch.Tensor) -> float:
    return float(t.float().mean()) if len(t) else float("nan")


def evaluate_defended(model: Any, data: Any, clf: Classifier, s: DefendedSettings, *, partial: Path | None = None
                      ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The numbers per eps (see the module docstring) with classifier ``clf``. Returns (metrics, per-sample rows:
    the plain model's clean / robust flags and the defended model's accuracy per image in expectation)."""
    wanted = sample_ids(len(data), s.n_samples, s.seed)
    x, y, ids = load_images(data, wanted)
    defended = DEFENSES.build(s.defense, s.defense_options, model=model, seed=s.seed, backward=s.backward)
    guarded = lambda z: clf.logits(defended, z)  # noqa: E731
    model.eval()
    xs, ys = x[:16].to(s.device), y[:16].to(s.device)
    found = checked_run(lambda z: clf.logits(model, z), xs, ys) + checked_run(guarded, xs, ys) if s.check else []
    probe = probe_randomness(guarded, xs)
    eot, draws = (s.eot_samples, s.draws) if probe["randomized"] else (1, 1)

    def run(m: Any, attack: str, options: dict[str, Any], tag: str, warm: WarmStart | None = None
            ) -> dict[float, Attacked]:
        return attack_all(m, clf, x, y, ids, s, attack, options, partial=partial, tag=tag, warm=warm)

    attacked = {"transfer": run(model, s.attack, dict(s.attack_options), "undefended"),
                "paper": run(model, s.paper_attack, dict(s.paper_attack_options), "paper")}
    attacked["through"] = run(defended, s.attack, {**s.attack_options, "eot_samples": eot}, "through-defense",
                              _warm(s, attacked))
    scorer = DEFENSES.build(s.defense, s.defense_options, model=model, seed=s.seed + SCORE_STREAM)
    score = lambda z: expected_correct(lambda b: clf.logits(scorer, b), z, y, draws=draws,  # noqa: E731
                                       batch_size=s.batch_size, device=s.device)
    clean = score(x)
    rows = [{"index": i, "label": int(t), "clean_correct": bool(ok), "defended_clean": float(p)}
            for i, t, ok, p in zip(ids, y, attacked["transfer"][s.eps[0]].clean, clean)]
    per_eps = {eps_label(e): _one_eps(e, x, clean, {k: v[e] for k, v in attacked.items()}, score, rows)
               for e in s.eps}
    for r in per_eps.values():
        r["defense_stats"] = _stats(defended, attacked["paper"][r["eps"]].x_adv, s)
    metrics = {"attack": s.attack, "paper_attack": s.paper_attack, "norm": s.norm, "n": len(ids),
               "n_skipped": len(skipped_rows(data, wanted)), "seed": s.seed,
               "clean_top1": _mean(attacked["transfer"][s.eps[0]].clean), "defended_clean_top1": _mean(clean),
               "eps": per_eps, "defense": s.defense, "defense_config": defended.defense_config,
               "randomness": probe, "eot_samples": eot, "draws": draws, "warm_start": s.warm_start,
               "defense_stats": _stats(defended, x, s), "check_warnings": found, "ids": ids}
    return metrics, rows


def _one_eps(e: float, x: torch.Tensor, clean: torch.Tensor, attacked: dict[str, Attacked],
             score: Callable[[torch.Tensor], torch.Tensor], rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The defended model's accuracy at one eps on each attack's images, the per-image worst case (picked on
    the draws, scored on fresh ones) and the adaptive number; fills the rows' per-image values."""
    name = eps_label(e)
    images = {"clean": x, **{k: attacked[k].x_adv for k in CANDIDATES[1:]}}
    acc = {"clean": clean, **{k: score(images[k]) for k in CANDIDATES[1:]}}
    pick, worst_x = _worst_images(tuple(images[k] for k in CANDIDATES), tuple(acc[k] for k in CANDIDATES))
    worst = score(worst_x)  # fresh draws: no selection bias
    picked = [CANDIDATES[int(i)] for i in pick]
    out = {"eps": e, "undefended_top1": _mean(attacked["transfer"].robust),
           **{f"{k}_top1": _mean(acc[k]) for k in CANDIDATES[1:]}, "worst_per_image_top1": _mean(worst),
           "through_one_draw_top1": _mean(attacked["through"].robust),
           "configs": {k: attacked[k].config for k in CANDIDATES[1:]},
           "worst_from": {c: picked.count(c) for c in CANDIDATES}}
    out["adaptive_top1"] = min(out["paper_top1"], out["transfer_top1"], out["through_top1"],
                               out["worst_per_image_top1"])
    for i, row in enumerate(rows):
        row.update({f"robust@{name}": bool(attacked["transfer"].robust[i]),
                    **{f"{k}@{name}": float(acc[k][i]) for k in CANDIDATES[1:]},
                    f"worst@{name}": float(worst[i]), f"worst_from@{name}": picked[i]})
    return out


def _worst_images(images: tuple[torch.Tensor, ...], accuracy: tuple[torch.Tensor, ...]
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image, the index of the candidate (:data:`CANDIDATES`) with the lowest accuracy and its image."""
    pick = torch.stack(accuracy).argmin(dim=0)  # (N,) ties: the first candidate
    return pick, torch.stack(images)[pick, torch.arange(len(pick))]


def _stats(defended: Any, x: torch.Tensor, s: RobustSettings) -> dict[str, float]:
    """The defense's own description of (the first batch of) these images, e.g. TTC's share counterattacked."""
    return defended.defense_stats(x[:s.batch_size].to(s.device)) if len(x) else {}


def defended_table(metrics: dict[str, Any], s: DefendedSettings) -> Table:
    """One row per eps (clean first): no defense, the paper protocol, through the defense, adaptive."""
    name, eot = s.defense.upper(), metrics["eot_samples"]
    through = f"{name}, {s.attack} through it ({s.backward}" + (f", EOT {eot}" if eot > 1 else "") + \
        (f", from {_WARM_FROM[s.warm_start]})" if s.warm_start != "none" else ")")
    cols = [("eps", "eps"), ("undefended", f"no defense ({s.attack})", "%"),
            ("paper", f"{name}, paper protocol: {s.paper_attack} on the undefended model (not robustness)", "%"),
            ("through", through, "%"), ("adaptive", f"{name}, adaptive: worst case", "%")]
    c = metrics["defended_clean_top1"]
    rows = [{"eps": "0 (clean)", "undefended": metrics["clean_top1"], "paper": c, "through": c, "adaptive": c}]
    rows += [{"eps": e, "undefended": r["undefended_top1"], "paper": r["paper_top1"], "through": r["through_top1"],
              "adaptive": r["adaptive_top1"]} for e, r in metrics["eps"].items()]
    draws = f"the mean over {metrics['draws']} draws of the defense per image" if metrics["draws"] > 1 else "one pass"
    return Table.of(f"Robust accuracy with {name} ({s.norm})", cols, rows,
                    f"Zero-shot accuracy of {metrics['n']} seeded test images; the defended model is scored by "
                    f"{draws}. Paper protocol: {s.paper_attack} {_options(s.paper_attack_options)} on the "
                    f"undefended model, then {name} (the attack never sees it). Through: {s.attack} "
                    f"{_options(s.attack_options)} on the defended model, the test-time procedure in the loop"
                    f"{_warm_text(s)}. "
                    f"Adaptive: the lowest of the paper protocol, {s.attack}'s undefended images then {name}, "
                    "through, and per image the worst of its clean image and the three attacks' images.")


def _warm_text(s: DefendedSettings) -> str:
    return "" if s.warm_start == "none" else (f", started from {_WARM_FROM[s.warm_start]} (projected onto the "
                                              "eps-ball of the clean image; Tramer et al. 2020)")


def _options(options: dict[str, Any]) -> str:
    return "(" + ", ".join(f"{k}={eps_label(v) if isinstance(v, float) else v}" for k, v in options.items()) + ")" \
        if options else "(defaults)"


def defended_warnings(metrics: dict[str, Any]) -> list[str]:
    """Sanity warnings: the checks (the advice to use EOT dropped when it was used), robust above clean, and an
    attack through the defense weaker than the same attack ignoring it (a sign of masked gradients)."""
    checks = metrics.pop("check_warnings")
    if metrics["eot_samples"] > 1:
        checks = [w for w in checks if not w.startswith(RANDOMIZED_PREFIX)]
    robust = {name: r["adaptive_top1"] for name, r in metrics["eps"].items()}
    found = collect(checks, robust_above_clean(metrics["defended_clean_top1"], robust, n=metrics["n"]))
    for name, r in metrics["eps"].items():
        if r["through_top1"] > r["transfer_top1"] + MASKING_MARGIN:
            found.append(f"at eps {name} {metrics['attack']} through the defense leaves "
                         f"{100 * r['through_top1']:.1f}% accuracy, more than its images made on the undefended "
                         f"model ({100 * r['transfer_top1']:.1f}%): its gradient through the defense is masked or "
                         "too noisy (Athalye et al. 2018); the adaptive column counts both, and more --steps, "
                         "--eot-samples or --backward bpda may do better.")
    return found


@evaluation("robust-defended", settings=DefendedSettings)
def defended_record(model: Any, data: Any, settings: DefendedSettings, *, partial: Path | None = None) -> Record:
    """Robust zero-shot accuracy under a test-time defense: no defense, paper protocol, adaptive attack."""
    s = settings
    clf = model_classifier(model, data)
    metrics, rows = evaluate_defended(model, data, clf, s, partial=partial)
    ids = metrics.pop("ids")
    table, found = defended_table(metrics, s), defended_warnings(metrics)
    protocol = {**robust_protocol(data, clf.source, s), "defense": metrics["defense_config"],
                "paper_attack": s.paper_attack, "paper_attack_options": dict(s.paper_attack_options),
                "eot_samples": metrics["eot_samples"], "draws": metrics["draws"], "backward": s.backward,
                "warm_start": s.warm_start}
    return Record(kind="robust-defended", metrics=metrics, samples=rows, tables=[table],
                  seeds={"sample": s.seed, "attack": s.seed, "defense": s.seed}, extra={"sample_ids": ids},
                  warnings=found, protocol=protocol)
