"""One generic registry for everything users pick by name (triggers, tasks, attacks, parsers, adapters).

Usage::

    from mmrobust.registry import TRIGGERS

    @TRIGGERS.register("badnet")
    def badnet(images, *, size=4, ...): ...

    TRIGGERS.get("badnet"); TRIGGERS.create("badnet", **kw); TRIGGERS.list("b*")
    TRIGGERS.build("badnet", {"size": "6"})   # text options typed from the signature / dataclass fields

Each registry knows which modules populate it and imports them on first lookup, so the
registered objects need not be imported by hand and heavy imports stay lazy.
"""
from __future__ import annotations

import difflib
import fnmatch
import importlib
import pkgutil
from typing import Any, Callable, Iterable, TypeVar

from mmrobust.errors import ConfigError
from mmrobust.values import Slot, option_slots, typed_options

T = TypeVar("T")


class Registry:
    """A name -> object table for one kind of thing (e.g. "trigger")."""

    def __init__(self, kind: str, modules: tuple[str, ...] = ()) -> None:
        self.kind = kind
        self._modules = modules
        self._loaded = False
        self._items: dict[str, Any] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator that registers a function or class under ``name``."""

        def deco(obj: T) -> T:
            if name in self._items and self._items[name] is not obj:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._items[name] = obj
            return obj

        return deco

    def _load(self) -> None:
        if not self._loaded:
            self._loaded = True
            for mod in self._modules:
                importlib.import_module(mod)

    def get(self, name: str) -> Any:
        """The object registered as ``name``; a one-line error with suggestions otherwise."""
        self._load()
        if name not in self._items:
            choices = sorted(self._items)
            close = difflib.get_close_matches(name, choices, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"unknown {self.kind} {name!r}{hint}; choose one of: {', '.join(choices)}")
        return self._items[name]

    def create(self, name: str, **kwargs: Any) -> Any:
        """Call the registered factory ``name`` with keyword arguments."""
        return self.get(name)(**kwargs)

    def slots(self, name: str, *, skip: tuple[str, ...] = ()) -> dict[str, Slot]:
        """The options ``name`` takes by keyword (its dataclass fields or signature), minus ``skip``."""
        return option_slots(self.get(name), skip=skip)

    def typed(self, name: str, options: dict[str, Any] | None, *, skip: tuple[str, ...] = (),
              hint: str = "") -> dict[str, Any]:
        """``options`` (text from ``--opt key=value`` or typed values) checked against ``name``'s options
        (minus ``skip``, the ones the caller passes itself) and typed by their defaults / type hints; the
        registered object's ``check_options(values)`` hook, if it has one, then checks the values. An unknown
        option, a value of the wrong type or one refused is a one-line ConfigError."""
        values = typed_options(f"{self.kind} {name!r}", self.slots(name, skip=skip), options, hint=hint)
        check = getattr(self.get(name), "check_options", None)
        if callable(check):
            check(values)
        return values

    def build(self, name: str, options: dict[str, Any] | None = None, **fixed: Any) -> Any:
        """``name`` called with ``options`` typed and checked by :meth:`typed` and the ``fixed`` keyword
        arguments the caller supplies (a model, data) as they are. The one way to build from a name and
        text options.

        Example::

            TASKS.build("par", {"tau": "2.15"}, model=clip)   # PARTask(clip, tau=2.15)
        """
        return self.get(name)(**fixed, **self.typed(name, options, skip=tuple(fixed)))

    def list(self, pattern: str = "*") -> list[str]:
        """Registered names matching a shell-style pattern, sorted."""
        self._load()
        return sorted(n for n in self._items if fnmatch.fnmatch(n, pattern))

    def __contains__(self, name: str) -> bool:
        self._load()
        return name in self._items


def summary(*objects: Any, default: str = "") -> str:
    """The first line of the first docstring among ``objects`` (what ``list`` commands show for a registered
    entry), else ``default``."""
    doc = next((o.__doc__ for o in objects if getattr(o, "__doc__", None)), "") or ""
    return doc.strip().splitlines()[0] if doc.strip() else default


# Each registry names the package (or module) that fills it: a module registers what it defines, and a package
# imports every module in it (:func:`import_modules`), so a new entry is one new file, with no list to edit.
TRIGGERS = Registry("trigger", ("mmrobust.data.poison.triggers", "mmrobust.data.poison.structured",
                                "mmrobust.data.poison.patch"))
TASKS = Registry("task", ("mmrobust.tasks",))
ATTACKS = Registry("attack", ("mmrobust.attacks",))
DEFENSES = Registry("defense", ("mmrobust.defenses",))  # test-time defenses: `mmrobust eval robust --defense NAME`
PARSERS = Registry("answer parser", ("mmrobust.eval.mllm.parsing",))
MLLM_ADAPTERS = Registry("MLLM adapter", ("mmrobust.models.mllm",))
EVALS = Registry("evaluation", ("mmrobust.eval",))
LVLM_TASKS = Registry("LVLM task", ("mmrobust.eval.lvlm",))  # tasks `mmrobust lvlm eval --task` attacks
LVLM_ATTACKS = Registry("LVLM attack", ("mmrobust.lvlm.attacks",))  # `mmrobust lvlm eval --attack`
BENCHMARKS = Registry("benchmark", ("mmrobust.eval.benchmarks",))  # `mmrobust bench run NAME`
DETECTORS = Registry("detector", ("mmrobust.eval.detect",))  # `mmrobust audit --detector NAME`
PUSHBACKS = Registry("pushback template", ("mmrobust.eval.challenge.templates",))  # `bench run --challenge NAME`
# `mmrobust card --sections NAME,...`: what the card evaluates, CLIP and LVLM sections (mmrobust.pipelines.card)
CARD_SECTIONS = Registry("card section", ("mmrobust.pipelines.card_clip", "mmrobust.pipelines.card_lvlm"))
# `mmrobust poison --instructions FILE --attack NAME`: image-trigger, text-trigger, shadowcast
INSTRUCTION_ATTACKS = Registry("instruction attack", ("mmrobust.data.poison.instructions",))


def import_modules(package: str, path: Iterable[str]) -> list[str]:
    """Import every public module (name without a leading ``_``) of ``package`` found on ``path`` (its
    ``__path__``), in name order; each registers what it defines. Returns the imported module names."""
    names = sorted({m.name for m in pkgutil.iter_modules(list(path)) if not m.name.startswith("_")})
    return [importlib.import_module(f"{package}.{n}").__name__ for n in names]
