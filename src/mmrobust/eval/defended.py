"""Robust accuracy of a CLIP under a test-time defense: the paper's protocol and the adaptive attack, side by side.

For a registered defense (``mmrobust.registry.DEFENSES``, e.g. "ttc": Xing et al., CVPR 2025) and one attack,
on the same seeded test images, per eps:

* **no defense**: the attack on the plain model;
* **paper protocol** (not robustness): the plain model's adversarial images, then the defense. Most test-time
  defense papers report this; the attack never sees the defense;
* **through the defense**: the same attack on the defended model, test-time procedure in the loop (autograd
  through it, or BPDA), with EOT over the defense's randomness when it is randomized;
* **adaptive (worst case)**: per image, the worst of the clean image and both attacks' images, the way AutoAttack
  takes the worst case over attacks (Croce & Hein 2020; Athalye et al. 2018; Tramer et al. 2020). This is the
  defense's robustness number, an upper bound like every attack's.

A randomized defense is scored in expectation: an image's accuracy is the share of ``draws`` forward passes that
classify it right (one pass for a deterministic model). The worst image is picked on those draws and scored on
fresh ones, since the minimum of noisy estimates would understate the accuracy.

Example::

    record = run_evaluation("robust-defended", model=clip, data=test, settings={"defense": "ttc", "eps": (4/255,)})
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mmrobust.attacks.adaptive import BACKWARDS
from mmrobust.errors import ConfigError
from mmrobust.eval.attack_chunks import attack_all, expected_correct
from mmrobust.eval.contract import evaluation
from mmrobust.eval.randomized import probe_randomness
from mmrobust.eval.robust import (RobustSettings, checked_run, load_images, robust_protocol, sample_ids,
                                  skipped_rows)
from mmrobust.eval.zeroshot import Classifier, model_classifier
from mmrobust.registry import DEFENSES
from mmrobust.reports.contract import Record, Table
from mmrobust.reports.protocol import eps_label
from mmrobust.reports.sanity import collect, robust_above_clean
from mmrobust.values import check_int, setting

_DEFENSE_GIVEN = ("model", "seed", "backward")  # what the evaluation passes to a defense itself
RANDOMIZED_PREFIX = "the model is not deterministic"  # reports.sanity.randomized_model's warning
MASKING_MARGIN = 0.05  # the attack through the defense above the paper protocol by more than this: a warning
CANDIDATES = ("clean", "transfer", "through")  # the images the worst case per image is taken over


@dataclass(frozen=True)
class DefendedSettings(RobustSettings):
    """The robust evaluation's settings plus the defense, its options and how the adaptive attack sees it."""

    defense: str = setting("ttc", "test-time defense (mmrobust.registry.DEFENSES)")
    defense_options: dict[str, Any] = setting(help="defense option, e.g. steps=2", flag="--defense-opt",
                                              factory=dict)
    eot_samples: int = setting(10, "EOT samples of the attack through a randomized defense (its gradient "
                                   "averaged over that many draws); a deterministic defense is attacked with 1")
    backward: str = setting("through", "how the attack's gradient crosses the defense: through (autograd "
                                       "through the test-time procedure) or bpda (identity)")
    draws: int = setting(10, "forward passes per image scoring a randomized defense (accuracy: their mean)")

    def __post_init__(self) -> None:
        super().__post_init__()
        if "eot_samples" in self.attack_options:
            raise ConfigError("give the adaptive attack's EOT samples with --eot-samples, not --attack-opt "
                              "eot_samples (the attack on the undefended model needs none)")
        check_int("eot_samples", self.eot_samples, low=1, fix="--eot-samples 10")
        check_int("draws", self.draws, low=1, fix="--draws 10")
        if self.backward not in BACKWARDS:
            raise ConfigError(f"backward {self.backward!r} is not one of {', '.join(BACKWARDS)} (--backward)")
        object.__setattr__(self, "defense_options",
                           DEFENSES.typed(self.defense, self.defense_options, skip=_DEFENSE_GIVEN))

    def plain(self) -> RobustSettings:
        """The robust-evaluation settings alone."""
        return RobustSettings(**{f.name: getattr(self, f.name) for f in dataclasses.fields(RobustSettings)})


def _mean(t: torch.Tensor) -> float:
    return float(t.float().mean()) if len(t) else float("nan")


def evaluate_defended(model: Any, data: Any, clf: Classifier, s: DefendedSettings, *, partial: Path | None = None
                      ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The four numbers per eps (see the module docstring) with classifier ``clf``. Returns (metrics, per-sample
    rows: the plain model's clean / robust flags and the defended model's accuracy per image in expectation)."""
    wanted = sample_ids(len(data), s.n_samples, s.seed)
    x, y, ids = load_images(data, wanted)
    defended = DEFENSES.build(s.defense, s.defense_options, model=model, seed=s.seed, backward=s.backward)
    guarded = lambda z: clf.logits(defended, z)  # noqa: E731
    model.eval()
    xs, ys = x[:16].to(s.device), y[:16].to(s.device)
    found = checked_run(lambda z: clf.logits(model, z), xs, ys) + checked_run(guarded, xs, ys) if s.check else []
    probe = probe_randomness(guarded, xs)
    eot, draws = (s.eot_samples, s.draws) if probe["randomized"] else (1, 1)
    plain = attack_all(model, clf, x, y, ids, s, dict(s.attack_options), partial=partial, tag="undefended")
    through = attack_all(defended, clf, x, y, ids, s, {**s.attack_options, "eot_samples": eot}, partial=partial,
                         tag="through-defense")
    score = lambda z: expected_correct(guarded, z, y, draws=draws, batch_size=s.batch_size, device=s.device)  # noqa
    clean = score(x)
    rows = [{"index": i, "label": int(t), "clean_correct": bool(ok), "defended_clean": float(p)}
            for i, t, ok, p in zip(ids, y, plain[s.eps[0]].clean, clean)]
    per_eps: dict[str, Any] = {}
    for e in s.eps:
        name, u, t = eps_label(e), plain[e], through[e]
        after_u, after_t = score(u.x_adv), score(t.x_adv)
        pick, worst_x = _worst_images((x, u.x_adv, t.x_adv), (clean, after_u, after_t))
        worst = score(worst_x)  # fresh draws: no selection bias
        picked = [CANDIDATES[int(i)] for i in pick]
        per_eps[name] = {"eps": e, "undefended_top1": _mean(u.robust), "transfer_top1": _mean(after_u),
                         "through_top1": _mean(after_t), "adaptive_top1": _mean(worst),
                         "through_one_draw_top1": _mean(t.robust), "config": t.config,
                         "worst_from": {c: picked.count(c) for c in CANDIDATES},
                         "defense_stats": _stats(defended, u.x_adv, s)}
        for row, *vals in zip(rows, u.robust, after_u, after_t, worst, picked):
            row.update({f"robust@{name}": bool(vals[0]), f"transfer@{name}": float(vals[1]),
                        f"through@{name}": float(vals[2]), f"adaptive@{name}": float(vals[3]),
                        f"worst_from@{name}": vals[4]})
    metrics = {"attack": s.attack, "norm": s.norm, "n": len(ids), "n_skipped": len(skipped_rows(data, wanted)),
               "seed": s.seed, "clean_top1": _mean(plain[s.eps[0]].clean), "defended_clean_top1": _mean(clean),
               "eps": per_eps, "defense": s.defense, "defense_config": defended.defense_config,
               "randomness": probe, "eot_samples": eot, "draws": draws, "defense_stats": _stats(defended, x, s),
               "check_warnings": found, "ids": ids}
    return metrics, rows


def _worst_images(images: tuple[torch.Tensor, ...], accuracy: tuple[torch.Tensor, ...]
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image, the index of the candidate (:data:`CANDIDATES`) with the lowest accuracy and its image. Its
    accuracy is then scored on fresh draws: the minimum of noisy estimates would be biased low."""
    pick = torch.stack(accuracy).argmin(dim=0)  # (N,) ties: the first candidate
    return pick, torch.stack(images)[pick, torch.arange(len(pick))]


def _stats(defended: Any, x: torch.Tensor, s: RobustSettings) -> dict[str, float]:
    """The defense's own description of (the first batch of) these images, e.g. TTC's share counterattacked."""
    return defended.defense_stats(x[:s.batch_size].to(s.device)) if len(x) else {}


def defended_table(metrics: dict[str, Any], s: DefendedSettings) -> Table:
    """One row per eps (clean first): no defense, the paper protocol, through the defense, the worst case."""
    name, eot = s.defense.upper(), metrics["eot_samples"]
    through = f"{name}, attack through it ({s.backward}" + (f", EOT {eot})" if eot > 1 else ")")
    cols = [("eps", "eps"), ("undefended", "no defense", "%"),
            ("transfer", f"{name}, paper protocol: attack on the undefended model (not robustness)", "%"),
            ("through", through, "%"), ("adaptive", f"{name}, adaptive: worst case per image", "%")]
    c = metrics["defended_clean_top1"]
    rows = [{"eps": "0 (clean)", "undefended": metrics["clean_top1"], "transfer": c, "through": c, "adaptive": c}]
    rows += [{"eps": e, "undefended": r["undefended_top1"], "transfer": r["transfer_top1"],
              "through": r["through_top1"], "adaptive": r["adaptive_top1"]} for e, r in metrics["eps"].items()]
    draws = f"the mean over {metrics['draws']} draws of the defense per image" if metrics["draws"] > 1 else "one pass"
    return Table.of(f"Robust accuracy with {name} under {s.attack} ({s.norm})", cols, rows,
                    f"Zero-shot accuracy of {metrics['n']} seeded test images (seed {s.seed}); the defended model is "
                    f"scored by {draws}. Paper protocol: adversarial images made on the undefended model, then "
                    f"defended (the attack never sees {name}). Through: the same attack on the defended model, the "
                    "test-time procedure in the loop. Adaptive: per image the worst of its clean image and both "
                    "attacks' images, the robustness number.")


def defended_warnings(metrics: dict[str, Any]) -> list[str]:
    """Sanity warnings: the checks (the advice to use EOT dropped when it was used), robust above clean, and an
    attack through the defense weaker than the attack that ignores it (a sign of masked gradients)."""
    checks = metrics.pop("check_warnings")
    if metrics["eot_samples"] > 1:
        checks = [w for w in checks if not w.startswith(RANDOMIZED_PREFIX)]
    robust = {name: r["adaptive_top1"] for name, r in metrics["eps"].items()}
    found = collect(checks, robust_above_clean(metrics["defended_clean_top1"], robust, n=metrics["n"]))
    for name, r in metrics["eps"].items():
        if r["through_top1"] > r["transfer_top1"] + MASKING_MARGIN:
            found.append(f"at eps {name} the attack through the defense leaves {100 * r['through_top1']:.1f}% "
                         f"accuracy, more than the attack that ignores it ({100 * r['transfer_top1']:.1f}%): its "
                         "gradient through the defense is masked or too noisy (Athalye et al. 2018); the worst-case "
                         "column counts both, and more --steps, --eot-samples or --backward bpda may do better.")
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
                "eot_samples": metrics["eot_samples"], "draws": metrics["draws"], "backward": s.backward}
    return Record(kind="robust-defended", metrics=metrics, samples=rows, tables=[table],
                  seeds={"sample": s.seed, "attack": s.seed, "defense": s.seed}, extra={"sample_ids": ids},
                  warnings=found, protocol=protocol)
