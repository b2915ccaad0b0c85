"""Captioning CIDEr under attack: the caption benchmark (:mod:`mmrobust.eval.caption`) as an LVLM task."""
from __future__ import annotations

from mmrobust.eval.caption import CaptionTask, load_caption_data
from mmrobust.eval.lvlm.tasks import LVLMData, attack_task


@attack_task("caption", CaptionTask, karpathy=True)
def load_caption_task(source: LVLMData) -> CaptionTask:
    """Captioning CIDEr under attack: a caption JSONL, or karpathy:PATH (its split, images below data_root)."""
    return CaptionTask(load_caption_data(source.data, split=source.split, image_root=source.data_root,
                                         allow_outside=source.allow_outside))
