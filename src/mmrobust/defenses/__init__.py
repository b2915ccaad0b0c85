"""Training methods as Tasks (one per method); importing this package registers them in TASKS."""
from mmrobust.defenses.base import Task
from mmrobust.defenses.cleanclip import CleanCLIPTask
from mmrobust.defenses.clip import CLIPTask
from mmrobust.defenses.fare import FARETask
from mmrobust.defenses.mllm_sft import MLLMSFTTask
from mmrobust.defenses.par import PARTask
from mmrobust.defenses.supervised import SupervisedTask
from mmrobust.defenses.tecoa import TeCoATask

__all__ = ["CLIPTask", "CleanCLIPTask", "FARETask", "MLLMSFTTask", "PARTask", "SupervisedTask", "Task", "TeCoATask"]
