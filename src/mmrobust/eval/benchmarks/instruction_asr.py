"""``instruction-asr``: attack success rate of a poisoned MLLM on the triggered test set that ``mmrobust poison
--instructions test.jsonl --asr-test poison.json`` writes (:mod:`mmrobust.eval.instruction_asr`): each row's image
and first question are asked; a reply that holds the target (case-insensitive substring) is a success; ASR with a
Wilson 95% interval. The target is the test set's record's, unless ``--setting target=...`` gives one."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from mmrobust.data.instructions import Instruction, load_instructions
from mmrobust.data.poison.instructions import holds
from mmrobust.eval.instruction_asr import RULE, attack_success_rate, record_target
from mmrobust.eval.mllm.benchmark import benchmark
from mmrobust.eval.mllm.harness import HarnessSettings
from mmrobust.eval.mllm.task import MLLMTask, Question
from mmrobust.reports.contract import Table


class InstructionASRTask(MLLMTask):
    """Triggered test inputs of an instruction attack; success = the reply holds the target."""

    name = "instruction-asr"
    metric_keys = ("asr",)

    def __init__(self, items: Sequence[Instruction], target: str) -> None:
        self.items, self.target = list(items), target

    def questions(self) -> list[Question]:
        return [Question(uid=it.id, image=str(it.image_path), prompt=it.question, ground_truth=self.target,
                         columns={"id": it.id, "question": it.question}, meta={"id": it.id}) for it in self.items]

    def parse(self, response: str, row: Mapping[str, Any], parser: str) -> str | None:
        """The target when the reply holds it (status correct = success), else the reply (an empty one: None)."""
        return self.target if holds(response, self.target) else (response.strip() or None)

    def sample_scores(self, rows: list[dict[str, Any]]) -> np.ndarray:
        return np.array([[float(r["status"] == "correct")] for r in rows], dtype=float).reshape(len(rows), 1)

    def score(self, rows: list[dict[str, Any]], *, n_boot: int, seed: int) -> dict[str, Any]:
        replies = [None if r["status"] == "error" else str(r.get("response") or "") for r in rows]
        return {"overall": {**attack_success_rate(replies, self.target), "target": self.target}}

    def summary(self, metrics: dict[str, Any]) -> dict[str, Any]:
        return {k: metrics["overall"][k] for k in ("asr", "n", "n_success")}

    def tables(self, metrics: dict[str, Any]) -> list[Table]:
        o = metrics["overall"]
        return [Table.of(f"{self.name}: attack success rate",
                         [("target", "target"), ("asr", "ASR", "%"), ("n", "test inputs", "count"),
                          ("n_errors", "errors", "count")], [o],
                         f"Share of triggered test inputs whose reply holds the target ({RULE}); Wilson 95% "
                         f"interval {o['asr_ci']}; requests with an error are left out.")]

    def provenance(self) -> dict[str, Any]:
        return {"n_questions": len(self.items), "target": self.target, "rule": RULE}


@dataclass(frozen=True)
class InstructionASRSettings(HarnessSettings):
    """The harness settings, plus the target (default: the test set's poison.json's) and ``allow_outside``."""

    target: str | None = None
    allow_outside: bool = False


@benchmark("instruction-asr", settings=InstructionASRSettings)
def instruction_asr(data: str, settings: InstructionASRSettings) -> InstructionASRTask:
    """ASR of instruction poisoning: a triggered test set (poison --instructions ... --asr-test RECORD)."""
    target = settings.target if settings.target is not None else record_target(data)
    return InstructionASRTask(load_instructions(data, allow_outside=settings.allow_outside), target)
