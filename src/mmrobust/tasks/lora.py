"""LoRA adapters on a CLIP image tower (Hu et al. 2022, "LoRA: Low-Rank Adaptation of Large Language Models",
through ``peft``), for cheaper robust finetuning: FARE / TeCoA train only the low-rank adapters, and the export
merges them into the weights so the tower is a plain open_clip model again.

open_clip's ViT blocks hold ``attn`` (``nn.MultiheadAttention``) and ``mlp.c_fc`` / ``mlp.c_proj``
(``nn.Linear``). The default adapts the MLP linears: peft adapts a ``MultiheadAttention`` by merging the adapter
into its weights before each forward and subtracting it after, which leaves the frozen weights moved by float
rounding (about 1e-8 per step, measured); ``targets`` may still name ``attn``. The adapters start with B = 0, so
the adapted tower computes exactly what the original did until the first step.

Example::

    record = add_lora(clip.visual, r=8, alpha=16, targets=("c_fc", "c_proj"), seed=0)
    ...                                    # train: only the lora_A / lora_B weights have requires_grad
    plain = merged_copy(clip.visual)       # same function, open_clip module names, no peft layers
"""
from __future__ import annotations

import copy
from typing import Any, Sequence

import torch
from torch import nn

from mmrobust.errors import ConfigError

TARGETS = ("c_fc", "c_proj")


def _peft() -> Any:
    try:
        import peft
    except ImportError:
        raise ConfigError("lora_r > 0 needs peft: pip install peft (or pip install 'mmrobust[mllm]'), or use "
                          "lora_r=0 for full finetuning") from None
    return peft


def add_lora(tower: nn.Module, *, r: int, alpha: float, targets: Sequence[str], seed: int) -> dict[str, Any]:
    """Inject LoRA adapters of rank ``r`` into ``tower`` in place (modules whose name ends in one of
    ``targets``), freeze every other parameter of it; adapter init drawn under ``seed`` (global RNG restored).
    Returns the record: rank, alpha, targets, adapted modules and trainable / total parameter counts."""
    peft = _peft()
    names = [n for n, _ in tower.named_modules() if n and n.split(".")[-1] in set(targets)]
    if not names:
        raise ConfigError(f"lora_targets {','.join(targets)} match no module of the image tower; use names of "
                          f"its layers, e.g. {','.join(TARGETS)}")
    config = peft.LoraConfig(r=r, lora_alpha=alpha, lora_dropout=0.0, target_modules=list(targets))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        peft.inject_adapter_in_model(config, tower)
    for name, p in tower.named_parameters():
        p.requires_grad_("lora_" in name)
    trainable = sum(p.numel() for p in tower.parameters() if p.requires_grad)
    return {"r": r, "alpha": alpha, "targets": list(targets), "modules": len(names), "trainable_params": trainable,
            "tower_params": sum(p.numel() for p in tower.parameters()) - trainable}


def merged_copy(tower: nn.Module) -> nn.Module:
    """A copy of ``tower`` with every LoRA adapter merged into its base weights and the peft wrappers
    replaced by their base layers: the same function, the module names (and state-dict keys) of the
    original open_clip tower. The tower itself keeps its adapters."""
    from peft.tuners.lora import LoraLayer

    out = copy.deepcopy(tower)
    layers = [(n, m) for n, m in out.named_modules() if isinstance(m, LoraLayer)]
    for _, layer in layers:  # outer first: an adapted MultiheadAttention merges its inner out_proj too
        if not layer.merged:
            layer.merge()
    for name, layer in sorted(layers, key=lambda item: -item[0].count(".")):  # innermost wrappers first
        parent, _, child = name.rpartition(".")
        setattr(out.get_submodule(parent) if parent else out, child, layer.get_base_layer())
    for p in out.parameters():
        p.requires_grad_(True)
    return out
