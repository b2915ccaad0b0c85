"""The MLLM benchmarks of `mmrobust bench run NAME`, one file each (``registry.BENCHMARKS``).

Importing this package imports every module in it; each registers its benchmark with
:func:`mmrobust.eval.mllm.benchmark.benchmark`. A new benchmark is one new file here: an
:class:`~mmrobust.eval.mllm.task.MLLMTask` (questions, and optionally scorer, tables, plots) and its loader.
"""
from mmrobust.registry import import_modules

import_modules(__name__, __path__)
