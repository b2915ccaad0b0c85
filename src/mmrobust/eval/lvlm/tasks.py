"""The tasks `mmrobust lvlm eval|targeted --task NAME` can attack, by name (``registry.LVLM_TASKS``).

A task registers a loader from the run's data options (:class:`LVLMData`) to the task, beside the task class::

    @attack_task("vqa", VQATask)
    def load_vqa_task(source: LVLMData) -> VQATask:
        return VQATask(load_vqa(source.data, allow_outside=source.allow_outside))

The task class gives the under-attack protocol of :class:`mmrobust.eval.mllm.task.MLLMTask` (``references``,
``sample_scores``, ``metric_keys``). Every module of this package is imported on the registry's first lookup,
so a new attackable task is one new file here.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, TypeVar

from mmrobust.errors import ConfigError
from mmrobust.eval.mllm.task import MLLMTask
from mmrobust.registry import LVLM_TASKS, summary

T = TypeVar("T", bound=Callable[..., MLLMTask])


@dataclass(frozen=True)
class LVLMData:
    """Where an LVLM task's questions come from: ``data`` (a file, folder or ``karpathy:PATH``), whether image
    paths may leave its folder, MMR's ``prompt`` variant, and a Karpathy file's ``split`` / image ``data_root``."""

    data: str
    allow_outside: bool = False
    prompt: str = "official"
    split: str = "test"
    data_root: str | None = None


@dataclass(frozen=True)
class LVLMTaskSpec:
    """A registered LVLM task: its class (``metric_keys``, docstring), its loader, and whether it reads
    ``karpathy:PATH`` files (then ``split`` / ``data_root`` are its business, else they are refused)."""

    name: str
    cls: type[MLLMTask]
    load: Callable[[LVLMData], MLLMTask]
    karpathy: bool = False

    @property
    def metric_keys(self) -> tuple[str, ...]:
        return tuple(self.cls.metric_keys)

    @property
    def description(self) -> str:
        """The first line of the loader's (else the class's) docstring."""
        return summary(self.load, self.cls, default=self.name)


def attack_task(name: str, cls: type[MLLMTask], *, karpathy: bool = False) -> Callable[[T], T]:
    """Register ``load(source: LVLMData) -> cls`` as the LVLM task ``name``."""

    def deco(load: T) -> T:
        LVLM_TASKS.register(name)(LVLMTaskSpec(name, cls, load, karpathy))
        return load

    return deco


def load_attack_task(name: str, source: LVLMData) -> MLLMTask:
    """The task ``name`` over ``source`` (a one-line error for an unknown name, or for a Karpathy file, split
    or data root given to a task that does not read them)."""
    from mmrobust.data.captions import parse_caption_spec

    spec: LVLMTaskSpec = LVLM_TASKS.get(name)
    if not spec.karpathy:  # a task that reads them checks them itself
        if parse_caption_spec(source.data) is not None or source.data_root is not None:
            raise ConfigError(f"--data karpathy:PATH and --data-root are for captions; add --task caption (got "
                              f"--task {name})")
        if source.split != "test":
            raise ConfigError(f"--split {source.split} picks a split of a karpathy:PATH caption file; --task "
                              f"{name} reads all of {source.data}: drop --split")
    return spec.load(source)
