"""One generic training loop for every Task (AMP, accumulation, clipping, checkpoints, resume, torchrun DDP)."""
from mmrobust.training.distributed import distributed_from_env, init_from_env
from mmrobust.training.loop import TrainConfig, TrainResult, train

__all__ = ["TrainConfig", "TrainResult", "distributed_from_env", "init_from_env", "train"]
