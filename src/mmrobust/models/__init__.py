"""Models: CLIP wrapper over open_clip, checkpoints, and MLLM adapters (``mmrobust.models.mllm``)."""
from mmrobust.models.clip import CLIPModel, create_clip, save_clip

__all__ = ["CLIPModel", "create_clip", "save_clip"]
