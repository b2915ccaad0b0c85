"""Training methods as Tasks (one per method); importing this package registers them in TASKS."""
from mmrobust.tasks.base import Task
from mmrobust.tasks.cleanclip import CleanCLIPTask
from mmrobust.tasks.clip import CLIPTask
from mmrobust.tasks.fare import FARETask
from mmrobust.tasks.mllm_sft import MLLMSFTTask
from mmrobust.tasks.par import PARTask
from mmrobust.tasks.supervised import SupervisedTask
from mmrobust.tasks.tecoa import TeCoATask

__all__ = ["CLIPTask", "CleanCLIPTask", "FARETask", "MLLMSFTTask", "PARTask", "SupervisedTask", "Task", "TeCoATask"]

from mmrobust.registry import import_modules  # noqa: E402

import_modules(__name__, __path__)  # every module registers what it defines: a new one is one new file
