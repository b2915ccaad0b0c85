"""Randomized models in a robust evaluation: detect them, and label a number that did not use EOT.

Athalye, Carlini & Wagner 2018 ("Obfuscated Gradients Give a False Sense of Security", ICML) and Croce & Hein
2020 (AutoAttack's ``rand`` version): a model that draws randomness at every forward pass (dropout left on,
random noise, a test-time counterattack's random start) shows a plain attack one random gradient per step,
so the attack's robust accuracy overestimates the model's robustness. Before attacking, two forward passes of
the same batch are compared; if they differ, the record says so (``metrics["randomness"]``) and a number from
an attack without EOT (option ``eot_samples`` > 1, :mod:`mmrobust.attacks.eot`) is warned about and labelled.

Example::

    probe = probe_randomness(logits_fn, x[:16])          # {"randomized": True, "max_logit_diff": 0.3, ...}
    randomized_warnings(probe, "apgd-ce", {"steps": 100})  # ['the model is randomized ... not a robustness ...']
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

import torch
from torch import Tensor

LABEL = "randomized model, attack without EOT: not a robustness number"


def probe_randomness(logits_fn: Callable[[Tensor], Tensor], x: Tensor, *, tol: float = 1e-5) -> dict[str, Any]:
    """Two forward passes of ``x`` compared: randomized when the logits differ by more than ``tol`` relative to
    their scale (or the predictions differ)."""
    with torch.no_grad():
        a, b = logits_fn(x), logits_fn(x)
    diff = float((a - b).abs().max()) if a.numel() else 0.0
    scale = float(a.abs().max()) if a.numel() else 0.0
    changed = int((a.argmax(1) != b.argmax(1)).sum()) if a.dim() == 2 else 0
    randomized = not diff <= tol * max(scale, 1.0) or changed > 0  # a NaN difference counts as randomized
    return {"randomized": randomized, "max_logit_diff": diff, "changed_predictions": changed, "n": int(len(x))}


def eot_samples_of(options: Mapping[str, Any]) -> int:
    """The EOT sample count an attack was called with (1 when it has no such option)."""
    value = options.get("eot_samples", 1)
    return int(value) if isinstance(value, int) and not isinstance(value, bool) else 1


def without_eot(probe: Mapping[str, Any] | None, options: Mapping[str, Any]) -> bool:
    """A randomized model attacked without EOT: the attack's number is not a robustness number."""
    return bool(probe and probe.get("randomized")) and eot_samples_of(options) <= 1


def randomized_warnings(probe: Mapping[str, Any] | None, attack: str, options: Mapping[str, Any]) -> list[str]:
    """The warning for a robust accuracy measured on a randomized model by an attack without EOT."""
    if not without_eot(probe, options):
        return []
    assert probe is not None
    return [f"the model is randomized (two forward passes of the same {probe['n']} images differ by up to "
            f"{probe['max_logit_diff']:.3g} in the logits) and {attack} ran without EOT, so its robust accuracy "
            "is not a robustness number (a plain attack follows one random gradient per step); rerun with "
            "--attack-opt eot_samples=20 (Athalye et al. 2018)."]


def table_label(probe: Mapping[str, Any] | None, options: Mapping[str, Any]) -> str:
    """A suffix for the robust table's title: what kind of number it shows on a randomized model."""
    if without_eot(probe, options):
        return f" [{LABEL}]"
    if probe and probe.get("randomized"):
        return f" [randomized model, EOT over {eot_samples_of(options)} samples]"
    return ""
