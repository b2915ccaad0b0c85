"""Score the rows of an instruction file by their answers' loss under a reference MLLM.

Wan, Wallace, Shen & Klein (ICML 2023, "Poisoning Language Models During Instruction Tuning") find that
poisoned examples have high loss under the model before it is tuned on them, and filter the highest-loss
examples as a defense. A row whose answer was replaced by an attacker's target (a trigger backdoor in
``replace`` mode) is one the reference model finds unlikely; a clean-label row (Shadowcast) is not, so this
view complements the audit's embedding densities. Example::

    losses = answer_losses("runs/llava", "runs/ip-badnet/instructions.jsonl")   # (N,), NaN: unreadable image
"""
from __future__ import annotations

from pathlib import Path

import torch

from mmrobust.data.instruction_dataset import InstructionDataset


def answer_losses(model: str, instructions: str | Path, *, batch_size: int = 64, device: str = "cpu",
                  allow_outside: bool = False) -> torch.Tensor:
    """Per-row mean cross-entropy (nats per answer token, the end of turn included) of every assistant turn of
    ``instructions`` under the LLaVA-family ``model`` (a folder or hub id), teacher-forced as ``mllm-sft`` trains;
    float64 (N,) in file order, NaN for a row whose image cannot be read."""
    from mmrobust.lvlm.attack import answer_ce, normalizer, tower_size
    from mmrobust.tasks.mllm_sft import load_hf_mllm, sft_batch

    mllm = load_hf_mllm(model)
    net = mllm.model.eval().to(device)
    size = tower_size(net)
    rows = InstructionDataset(instructions, image_size=size, allow_outside=allow_outside)
    out = torch.full((len(rows),), float("nan"), dtype=torch.float64)
    with torch.no_grad():
        for start in range(0, len(rows), batch_size):
            items = [it for it in (rows[i] for i in range(start, min(len(rows), start + batch_size))) if it is not None]
            if not items:
                continue
            x = torch.stack([it["image"] for it in items]).to(device)
            ids, mask, labels = (t.to(device) for t in sft_batch(mllm.processor, [it["messages"] for it in items],
                                                                 image_size=size))
            logits = net(pixel_values=normalizer(mllm.processor, x)(x), input_ids=ids, attention_mask=mask).logits
            out[[it["index"] for it in items]] = answer_ce(logits, labels).double().cpu()
    return out
