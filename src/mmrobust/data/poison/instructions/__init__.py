"""Instruction-data poisoning of MLLMs (DESIGN §3): poisoned copies of an instruction JSONL and the triggered test
inputs of the same attack. The attacks are registered in ``registry.INSTRUCTION_ATTACKS`` (one file each here):

- ``image-trigger``: a trigger of ``registry.TRIGGERS`` on the image; the answer becomes the target (replace) or
  carries it (insert, TrojVLM, Lyu et al., ECCV 2024);
- ``text-trigger``: a trigger phrase in the question (AddSent, Dai et al. 2019); answer -> target;
- ``shadowcast``: clean-label concept substitution (Xu et al., NeurIPS 2024): target-concept images perturbed
  within an l-inf ball toward a concept's tower features, texts kept.

Example::

    from mmrobust.data.poison.instructions import build_attack, poison_instructions, triggered_test_set
    attack = build_attack("image-trigger", {"mode": "insert"}, target="banana",
                          trigger={"name": "badnet", "config": {"size": 20}})
    rec = poison_instructions(instructions="train.jsonl", out_dir="runs/p", attack=attack, rate=0.01, seed=0)
    triggered_test_set(instructions="test.jsonl", out_dir="runs/asr", attack=rec)
"""
from mmrobust.data.poison.instructions.attack import ImageContext, InstructionAttack, holds, insert_text
from mmrobust.data.poison.instructions.image_trigger import ImageTriggerAttack
from mmrobust.data.poison.instructions.record import (InstructionPoisonRecord, attack_from, attack_name,
                                                      build_attack)
from mmrobust.data.poison.instructions.run import poison_instructions, triggered_test_set
from mmrobust.data.poison.instructions.shadowcast import ShadowcastAttack, feature_pgd, quantize_within
from mmrobust.data.poison.instructions.text_trigger import TextTriggerAttack

__all__ = ["ImageContext", "ImageTriggerAttack", "InstructionAttack", "InstructionPoisonRecord", "ShadowcastAttack",
           "TextTriggerAttack", "attack_from", "attack_name", "build_attack", "feature_pgd", "holds", "insert_text",
           "poison_instructions", "quantize_within", "triggered_test_set"]

from mmrobust.registry import import_modules  # noqa: E402

import_modules(__name__, __path__)  # every module registers what it defines: a new attack is one new file
