"""``vqa``: open-ended VQA (VQAv2 soft accuracy and exact match) of a VQA JSONL file
(:mod:`mmrobust.eval.vqa`)."""
from __future__ import annotations

from mmrobust.eval.vqa import VQASettings, evaluate_vqa, vqa_task
from mmrobust.eval.mllm.benchmark import benchmark


@benchmark("vqa", settings=VQASettings, evaluate=evaluate_vqa, task=vqa_task)
def vqa(data: str, settings: VQASettings) -> str:
    """Open-ended VQA accuracy: a JSONL of {id, image, question, answers} (images relative to it)."""
    return data  # evaluate_vqa reads the file itself
