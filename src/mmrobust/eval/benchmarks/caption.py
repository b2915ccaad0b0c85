"""``caption``: image captioning CIDEr of a caption JSONL or ``karpathy:PATH`` (:mod:`mmrobust.eval.caption`)."""
from __future__ import annotations

from mmrobust.eval.caption import CaptionSettings, evaluate_caption
from mmrobust.eval.mllm.benchmark import benchmark


@benchmark("caption", settings=CaptionSettings, evaluate=evaluate_caption)
def caption(data: str, settings: CaptionSettings) -> str:
    """Captioning CIDEr: a JSONL of {id, image, captions}, or karpathy:PATH (settings split, data_root)."""
    return data  # evaluate_caption reads the file (and split) itself
