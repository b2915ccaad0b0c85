"""Backward Pass Differentiable Approximation (BPDA) for non-differentiable steps of a defense.

Paper: Athalye, Carlini & Wagner 2018, "Obfuscated Gradients Give a False Sense of Security" (ICML), sec. 4.1.
A preprocessing step g (quantization, JPEG, a purifier run without gradients, an argmax) gives a zero, a
missing or a useless gradient; BPDA runs g on the forward pass and, on the backward pass, the gradient of a
differentiable approximation h with h(x) ~ g(x) (the identity for steps with g(x) ~ x).

Example::

    >>> quantize = lambda x: torch.round(x * 8) / 8          # zero gradient almost everywhere
    >>> step = bpda(quantize)                                 # forward: quantize; backward: identity
    >>> res = ATTACKS.get("apgd-ce")(lambda x: model(step(x)), x, y, eps=8/255)
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from mmrobust.errors import ConfigError

Step = Callable[[Tensor], Tensor]


def bpda(forward: Step, approx: Step | None = None) -> Step:
    """``x -> forward(x)`` whose backward pass is the gradient of ``approx(x)`` (the identity if None).

    ``forward`` runs without a graph; the result is ``approx(x) + (forward(x) - approx(x)).detach()``,
    which has the value of ``forward(x)`` and the gradient of ``approx``. Both must keep x's shape.
    """

    def step(x: Tensor) -> Tensor:
        with torch.no_grad():
            out = forward(x)
        surrogate = x if approx is None else approx(x)
        if out.shape != surrogate.shape:
            raise ConfigError(f"BPDA: the step returns shape {tuple(out.shape)} but its approximation "
                              f"{tuple(surrogate.shape)}; give an approximation of the step's output shape")
        return surrogate + (out.to(surrogate.dtype) - surrogate).detach()

    return step
