"""Training methods as Tasks (one per method); importing this package registers them in TASKS."""
from mmrobust.defenses.base import Task
from mmrobust.defenses.cleanclip import CleanCLIPTask
from mmrobust.defenses.clip import CLIPTask
from mmrobust.defenses.par import PARTask
from mmrobust.defenses.supervised import SupervisedTask

__all__ = ["CLIPTask", "CleanCLIPTask", "PARTask", "SupervisedTask", "Task"]
