"""``ensemble``: RobustVLM's multi-pass ensemble (one low-precision APGD pass per reference, keep the worst
case, one full-precision pass from it; :func:`mmrobust.lvlm.attack.attack_lvlm_ensemble`)."""
from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor

from mmrobust.errors import ConfigError
from mmrobust.lvlm.attack import LVLMEnsembleRecord, attack_lvlm_ensemble
from mmrobust.lvlm.attacks import lvlm_attack

PRECISIONS = {"float16": torch.float16, "bfloat16": torch.bfloat16, "none": None}


@lvlm_attack("ensemble", protocol="apgd-ensemble-lm-loss", options=("low_precision",))
def ensemble(model: Any, processor: Any, images: Tensor, prompts: Sequence[str],
             references: Sequence[str | Sequence[str]], *, eps: float, steps: int = 100, seed: int = 0,
             max_new_tokens: int = 20, low_precision: str = "float16") -> tuple[Tensor, LVLMEnsembleRecord]:
    """RobustVLM's multi-pass ensemble APGD on the LM loss of the references (Schlarmann et al. 2024).

    Per reference a low-precision APGD pass, the worst case kept, then a full-precision pass from it
    (``low_precision``: float16, bfloat16, or none for full-precision passes only).

    Example::

        mmrobust lvlm eval --attack ensemble --attack-arg low_precision=bfloat16 --task caption ...
    """
    if low_precision not in PRECISIONS:
        raise ConfigError(f"low_precision must be one of {', '.join(PRECISIONS)}, got {low_precision!r}")
    return attack_lvlm_ensemble(model, processor, images, prompts, references, eps=eps, steps=steps, seed=seed,
                                low_precision=PRECISIONS[low_precision], max_new_tokens=max_new_tokens)
