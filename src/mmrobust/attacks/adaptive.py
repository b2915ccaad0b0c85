"""Defense in the loop: attack the defended classifier, test-time procedure included.

Croce & Hein 2020 and Athalye et al. 2018 ("Obfuscated Gradients Give a False Sense of Security", ICML);
Tramer, Carlini, Brendel & Madry 2020 ("On Adaptive Attacks to Adversarial Example Defenses", NeurIPS):
a defense that changes the input at test time (a counterattack, a purifier, random noise) is evaluated by
attacking ``classifier(defense(x))``, not ``classifier(x)``. How the backward pass crosses the defense:

* ``"through"``: autograd differentiates the procedure itself (its own inner gradient steps included);
* ``"bpda"``: the procedure runs without a graph and the backward pass is the identity (or ``approx``), see
  :func:`~mmrobust.attacks.bpda.bpda`.

Randomness of the defense is handled by EOT (the attacks' ``eot_samples`` option, :mod:`.eot`).

Example::

    >>> logits = through_defense(classifier, purify, backward="through")
    >>> res = ATTACKS.get("apgd-ce")(logits, x, y, eps=4/255, eot_samples=10)
"""
from __future__ import annotations

from typing import Callable

from torch import Tensor

from mmrobust.attacks.bpda import Step, bpda
from mmrobust.errors import ConfigError

BACKWARDS = ("through", "bpda")


def defense_step(defense: Step, backward: str = "through", approx: Step | None = None) -> Step:
    """The defense as an attack sees it: differentiated through (``"through"``) or by BPDA (``"bpda"``)."""
    if backward not in BACKWARDS:
        raise ConfigError(f"unknown backward pass {backward!r} through the defense; choose one of: "
                          f"{', '.join(BACKWARDS)}")
    if approx is not None and backward != "bpda":
        raise ConfigError("an approximation of the defense is used only with backward='bpda'")
    return defense if backward == "through" else bpda(defense, approx)


def through_defense(logits_fn: Callable[[Tensor], Tensor], defense: Step, *, backward: str = "through",
                    approx: Step | None = None) -> Callable[[Tensor], Tensor]:
    """``x -> logits_fn(defense(x))``, for an attack to differentiate (see the module docstring)."""
    step = defense_step(defense, backward, approx)
    return lambda x: logits_fn(step(x))
