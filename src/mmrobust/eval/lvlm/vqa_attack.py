"""VQA accuracy under attack: the VQA benchmark (:mod:`mmrobust.eval.vqa`) as an LVLM task."""
from __future__ import annotations

from mmrobust.eval.lvlm.tasks import LVLMData, attack_task
from mmrobust.eval.vqa import VQATask, load_vqa


@attack_task("vqa", VQATask)
def load_vqa_task(source: LVLMData) -> VQATask:
    """VQA accuracy under attack: the questions of a VQA JSONL file."""
    return VQATask(load_vqa(source.data, allow_outside=source.allow_outside))
