"""Robust accuracy of a CLIP under a test-time defense: the paper's protocol and the adaptive attack, side by side.

For a registered defense (``mmrobust.registry.DEFENSES``, e.g. "ttc": Xing et al., CVPR 2025) and one attack:

* **no defense**: the attack on the plain model;
* **non-adaptive (paper protocol)**: the plain model's adversarial images, then the defense
  (:mod:`mmrobust.eval.transfer`); labelled "not robustness": the attack never saw the defense;
* **adaptive**: the same attack on the defended model, test-time procedure in the loop (autograd through it, or
  BPDA), with EOT over the defense's randomness when it is randomized (Athalye et al. 2018; Croce & Hein 2020;
  Tramer et al. 2020). This is the defense's robustness number.

Example::

    record = run_evaluation("robust-defended", model=clip, data=test, settings={"defense": "ttc", "eps": (4/255,)})
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmrobust.attacks.adaptive import BACKWARDS
from mmrobust.errors import ConfigError
from mmrobust.eval.contract import evaluation
from mmrobust.eval.randomized import probe_randomness
from mmrobust.eval.robust import RobustSettings, evaluate_robust, load_images, robust_protocol, robust_warnings
from mmrobust.eval.transfer import evaluate_transfer
from mmrobust.eval.zeroshot import Classifier, model_classifier
from mmrobust.registry import DEFENSES
from mmrobust.reports.contract import Record, Table
from mmrobust.reports.sanity import collect
from mmrobust.values import check_int, setting

_DEFENSE_GIVEN = ("model", "seed", "backward")  # what the evaluation passes to a defense itself
RANDOMIZED_PREFIX = "the model is not deterministic"  # reports.sanity.randomized_model's warning
WEAK_MARGIN = 0.05  # adaptive above non-adaptive by more than this: the adaptive attack is too weak


@dataclass(frozen=True)
class DefendedSettings(RobustSettings):
    """The robust evaluation's settings plus the defense, its options and how the adaptive attack sees it."""

    defense: str = setting("ttc", "test-time defense (mmrobust.registry.DEFENSES)")
    defense_options: dict[str, Any] = setting(help="defense option, e.g. steps=2", flag="--defense-opt",
                                              factory=dict)
    eot_samples: int = setting(10, "EOT samples of the adaptive attack on a randomized defense (its gradient "
                                   "averaged over that many draws); a deterministic defense is attacked with 1")
    backward: str = setting("through", "how the adaptive attack's gradient crosses the defense: through "
                                       "(autograd through the test-time procedure) or bpda (identity)")

    def __post_init__(self) -> None:
        super().__post_init__()
        if "eot_samples" in self.attack_options:
            raise ConfigError("give the adaptive attack's EOT samples with --eot-samples, not --attack-opt "
                              "eot_samples (the attack on the undefended model needs none)")
        check_int("eot_samples", self.eot_samples, low=1, fix="--eot-samples 10")
        if self.backward not in BACKWARDS:
            raise ConfigError(f"backward {self.backward!r} is not one of {', '.join(BACKWARDS)} (--backward)")
        object.__setattr__(self, "defense_options",
                           DEFENSES.typed(self.defense, self.defense_options, skip=_DEFENSE_GIVEN))

    def plain(self, **changes: Any) -> RobustSettings:
        """The robust-evaluation settings alone (with ``changes``)."""
        own = {f.name: getattr(self, f.name) for f in dataclasses.fields(RobustSettings)}
        return RobustSettings(**{**own, **changes})


def evaluate_defended(model: Any, data: Any, clf: Classifier, s: DefendedSettings, *, partial: Path | None = None
                      ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The three numbers per eps (see the module docstring) with classifier ``clf``. Returns (metrics, per-sample
    rows: clean and defended-clean flags, then per eps undefended, transfer (paper protocol) and adaptive)."""
    defended = DEFENSES.build(s.defense, s.defense_options, model=model, seed=s.seed, backward=s.backward)
    metrics, flags = evaluate_transfer(model, defended, data, clf, s.plain(), partial=partial)
    x_probe, _, _ = load_images(data, metrics["ids"][:16])
    probe = probe_randomness(lambda z: clf.logits(defended, z), x_probe.to(s.device))
    eot = s.eot_samples if probe["randomized"] else 1
    adaptive, adaptive_rows = evaluate_robust(defended, data, clf, s.plain(attack_options={**s.attack_options,
                                                                                  "eot_samples": eot}),
                                     partial=partial)
    for name, r in metrics["eps"].items():
        r["adaptive_top1"] = adaptive["eps"][name]["robust_top1"]
    metrics.update(defense=s.defense, defense_config=defended.defense_config, randomness=probe, eot_samples=eot,
                   adaptive=adaptive)
    rows = []
    for i, r in enumerate(adaptive_rows):
        assert r["index"] == metrics["ids"][i]  # both evaluations sample the same seeded ids
        rows.append({"index": r["index"], "label": r["label"], **{k: bool(v[i]) for k, v in flags.items()},
                     "adaptive_clean": r["clean_correct"],
                     **{f"adaptive@{e}": r[f"robust@{e}"] for e in metrics["eps"]}})
    return metrics, rows


def defended_table(metrics: dict[str, Any], s: DefendedSettings) -> Table:
    """One row per eps (clean first): no defense, the non-adaptive protocol, the adaptive attack."""
    name, eot = s.defense.upper(), metrics["eot_samples"]
    adaptive = f"{name}, adaptive: attack through it" + (f", EOT {eot}" if eot > 1 else "") + f" ({s.backward})"
    cols = [("eps", "eps"), ("undefended", "no defense", "%"),
            ("transfer", f"{name}, attack on the undefended model (paper protocol; not robustness)", "%"),
            ("adaptive", adaptive, "%")]
    rows = [{"eps": "0 (clean)", "undefended": metrics["clean_top1"], "transfer": metrics["defended_clean_top1"],
             "adaptive": metrics["adaptive"]["clean_top1"]}]
    rows += [{"eps": e, "undefended": r["undefended_top1"], "transfer": r["transfer_top1"],
              "adaptive": r["adaptive_top1"]} for e, r in metrics["eps"].items()]
    return Table.of(f"Robust accuracy with {name} under {s.attack} ({s.norm})", cols, rows,
                    f"Zero-shot accuracy of {metrics['n']} seeded test images (seed {s.seed}); a randomized defense "
                    "is scored on one draw per image. Paper protocol: adversarial images made on the undefended "
                    f"model, then defended (the attack never sees {name}). Adaptive: the same attack on the defended "
                    "model, the test-time procedure in the loop.")


def defended_warnings(metrics: dict[str, Any]) -> list[str]:
    """Sanity warnings of both evaluations, and an adaptive attack weaker than the non-adaptive one."""
    adaptive_checks = metrics["adaptive"].pop("check_warnings")
    if metrics["eot_samples"] > 1:  # the check's advice (use EOT) is followed: say so instead
        adaptive_checks = [w for w in adaptive_checks if not w.startswith(RANDOMIZED_PREFIX)]
    found = collect(metrics.pop("check_warnings"), adaptive_checks, robust_warnings(metrics["adaptive"]))
    for name, r in metrics["eps"].items():
        if r["adaptive_top1"] > r["transfer_top1"] + WEAK_MARGIN:
            found.append(f"at eps {name} the adaptive attack leaves {100 * r['adaptive_top1']:.1f}% robust, more "
                         f"than the non-adaptive one ({100 * r['transfer_top1']:.1f}%): the adaptive attack is too "
                         "weak; raise its steps (--steps) or --eot-samples, or try --backward bpda.")
    return found


@evaluation("robust-defended", settings=DefendedSettings)
def defended_record(model: Any, data: Any, settings: DefendedSettings, *, partial: Path | None = None) -> Record:
    """Robust zero-shot accuracy under a test-time defense: no defense, paper protocol, adaptive attack."""
    s = settings
    clf = model_classifier(model, data)
    metrics, rows = evaluate_defended(model, data, clf, s, partial=partial)
    ids = metrics.pop("ids")
    table, found = defended_table(metrics, s), defended_warnings(metrics)
    protocol = {**robust_protocol(data, clf.source, s),
                "defense": metrics["defense_config"], "eot_samples": metrics["eot_samples"], "backward": s.backward}
    return Record(kind="robust-defended", metrics=metrics, samples=rows, tables=[table],
                  seeds={"sample": s.seed, "attack": s.seed, "defense": s.seed}, extra={"sample_ids": ids},
                  warnings=found, protocol=protocol)
