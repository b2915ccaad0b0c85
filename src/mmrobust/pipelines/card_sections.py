"""The pieces a card is built of: a registered :class:`CardSection` (``registry.CARD_SECTIONS``) plans one
resumable run directory under the card folder (:class:`SectionPlan`: the settings it is keyed by and the work
that writes its records), and turns the stage's output into summary lines (:class:`Verdict`). Every section
reads the model and data through one :class:`CardContext`, which loads the model once, on first need.

A new section is one registration in ``card_clip.py`` / ``card_lvlm.py`` (or a new module listed in the
registry)::

    CARD_SECTIONS.register("retrieval")(CardSection("retrieval", "clip", 25, "Retrieval", "...", plan, verdicts))
"""
from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

from mmrobust.pipelines.card_model import load_or_explain
from mmrobust.pipelines.card_settings import THRESHOLD_RULES, CardJob
from mmrobust.pipelines.stages import run_stage

VERDICTS = ("PASS", "FAIL", "INFO", "N/A")


@dataclass(frozen=True)
class Verdict:
    """One summary line: a threat, its headline number, and the verdict against a named threshold
    (``threshold`` None: information, no verdict)."""

    section: str
    threat: str  # "adversarial l-inf 4/255"
    headline: str  # "robust accuracy 12.0% (clean 85.3%)"
    value: float | None = None  # the number judged
    threshold: str | None = None  # a CardThresholds field
    limit: float | None = None
    verdict: str = "INFO"
    rule: str = ""  # "below 30%"

    @property
    def line(self) -> str:
        """``threat: headline — FAIL below 30%`` (PASS: ``— PASS (at least 30%)``; N/A: the reason; INFO: none)."""
        text = f"{self.threat}: {self.headline}"
        if self.verdict == "PASS":  # the rule says where it would fail: "below 30%" passes "at least 30%"
            side, limit = self.rule.split(" ", 1)
            return f"{text} — PASS ({'at least' if side == 'below' else 'at most'} {limit})"
        return text + {"FAIL": f" — FAIL {self.rule}", "N/A": f" — N/A ({self.rule})"}.get(self.verdict, "")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "line": self.line}


def pct(v: float | None) -> str:
    return "n/a" if v is None else f"{100 * v:.1f}%"


def judge(section: str, threat: str, headline: str, value: float | None, *, name: str, limit: float,
          why_none: str = "no number to judge") -> Verdict:
    """The verdict of ``value`` against threshold ``name`` (``THRESHOLD_RULES``: min fails below, max above)."""
    rule = f"{'below' if THRESHOLD_RULES[name] == 'min' else 'above'} {100 * limit:g}%"
    if value is None:
        return Verdict(section, threat, headline, None, name, limit, "N/A", why_none)
    failed = value < limit if THRESHOLD_RULES[name] == "min" else value > limit
    return Verdict(section, threat, headline, value, name, limit, "FAIL" if failed else "PASS", rule)


@dataclass(frozen=True)
class SectionPlan:
    """A section's run: the settings its stage is keyed by (the model identity is added), and the work that
    writes its records into the section folder and returns the headline numbers (kept in ``stage.json``)."""

    config: dict[str, Any]
    run: Callable[[Path], dict[str, Any]]


Plan = Callable[["CardContext"], "SectionPlan | str"]  # a str: why the section is skipped
Verdicts = Callable[["CardContext", dict[str, Any]], list[Verdict]]


@dataclass(frozen=True)
class CardSection:
    """A registered card section: ``kind`` (clip or lvlm) says which models it fits, ``order`` where it
    stands on the page, ``model`` which loaded form of the model its run uses (:meth:`CardContext.load`)."""

    name: str
    kind: str
    order: int
    title: str
    description: str
    plan: Plan
    verdicts: Verdicts
    model: str | None = "clip"  # clip | lvlm (model + processor) | adapter (the hf MLLM adapter) | None: none


class CardContext:
    """What every section reads: the job, the card folder, the model's identity, the model itself (loaded
    once, on first need: a card whose sections are all finished never loads it) and the data stages."""

    def __init__(self, job: CardJob, *, kind: str, identity: dict[str, Any], log: Callable[[str], None]) -> None:
        self.job, self.kind, self.identity, self.log = job, kind, identity, log
        self.out = Path(job.out_dir)
        self._cache: dict[str, Any] = {}

    @property
    def budget(self) -> Any:
        return self.job.budget

    def once(self, key: str, make: Callable[[], Any]) -> Any:
        """``make()`` the first time ``key`` is asked for, the same object after."""
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    def load(self, which: str | None) -> Any:
        """The model as ``which`` (clip, lvlm or adapter; None: nothing) needs it. An LVLM is held in one form at a
        time: loading the adapter drops the (model, processor) pair and back, so a large model is never twice in
        memory."""
        if which is None:
            return None
        other = {"lvlm": "adapter", "adapter": "lvlm"}.get(which)
        if other is not None:
            self._cache.pop(other, None)
        return {"clip": self.clip, "lvlm": self.lvlm, "adapter": self.adapter}[which]()

    def clip(self) -> Any:
        """The CLIP under evaluation (:func:`mmrobust.pipelines.evaluate.load_model`)."""
        from mmrobust.pipelines.evaluate import load_model

        j = self.job
        return self.once("clip", lambda: load_or_explain("model", j.model, lambda: load_model(
            j.model, pretrained=j.pretrained, device=j.device)))

    def lvlm(self) -> tuple[Any, Any]:
        """(model, processor) of the LVLM under evaluation, in eval mode on the job's device."""
        from mmrobust.tasks.mllm_sft import load_hf_mllm

        def load() -> tuple[Any, Any]:
            m = load_hf_mllm(self.job.model, dtype=self.job.dtype)
            return m.model.to(self.job.device).eval(), m.processor

        return self.once("lvlm", lambda: load_or_explain("model", self.job.model, load))

    def adapter_options(self) -> dict[str, Any]:
        return {"device": self.job.device, "dtype": self.job.dtype, "batch_size": self.budget.lvlm_batch}

    def adapter(self) -> Any:
        """The ``hf`` MLLM adapter of the LVLM (MMR and the challenge ask through it)."""
        from mmrobust.models.mllm import build_adapter

        return self.once("adapter", lambda: load_or_explain("model", self.job.model, lambda: build_adapter(
            "hf", model=self.job.model, options=self.adapter_options())))

    def data(self, name: str, config: dict[str, Any], make: Callable[[Path], Path]) -> str:
        """A generated data file under ``OUT/data/<name>`` (a resumable stage: made once per config)."""
        folder = self.out / "data" / name
        return run_stage(folder, config, lambda: {"path": str(make(folder))})["path"]


def file_digest(path: str | Path | None) -> str | None:
    """sha256 of a file's bytes (a data file regenerated with the same content keeps its key); for a folder,
    of its JSON / JSONL files (a question folder); None for none."""
    if path is None or not str(path) or not Path(path).exists():
        return None
    p = Path(path)
    files = sorted(f for f in p.iterdir() if f.suffix in (".json", ".jsonl") and f.is_file()) if p.is_dir() else [p]
    h = hashlib.sha256()
    for file in files:
        h.update(file.name.encode())
        with open(file, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()
