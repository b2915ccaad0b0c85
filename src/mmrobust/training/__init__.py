"""One generic training loop for every Task (AMP, clipping, checkpoints, resume)."""
from mmrobust.training.loop import TrainConfig, TrainResult, train

__all__ = ["TrainConfig", "TrainResult", "train"]
