"""MMR under an untargeted pixel attack (Liu et al. 2024 meets Schlarmann et al. 2024): each POS and NEG
question's image is attacked on the LM loss of its right option (the letter, or the option's text for the
``option-text`` prompt), then the clean and the attacked replies are both scored with MMR's own RA / MR,
pooled and per category. Run through :func:`mmrobust.eval.lvlm.under_attack.evaluate_under_attack`.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from mmrobust.eval.lvlm.tasks import LVLMData, attack_task
from mmrobust.eval.mllm.task import Question
from mmrobust.eval.mmr.dataset import load_mmr
from mmrobust.eval.mmr.task import MMRTask


class MMRAttackTask(MMRTask):
    """MMR's paired questions with attack references; metrics ``ra`` / ``mr`` (pairs), per sample ``correct``."""

    metric_keys = ("ra", "mr")
    sample_keys = ("correct",)

    def references(self, q: Question) -> list[str]:
        """What the untargeted attack pushes away from: the answer the prompt asks for."""
        letter = str(q.ground_truth)
        return [q.options[letter]] if self.variant.name == "option-text" and letter in q.options else [letter]

    def sample_scores(self, rows: list[dict[str, Any]]) -> np.ndarray:
        """(N, 1): 1 where the parsed answer is the right letter."""
        return np.array([[float(r["status"] == "correct")] for r in rows], dtype=float).reshape(len(rows), 1)

    def score(self, rows: list[dict[str, Any]], *, n_boot: int, seed: int) -> dict[str, Any]:
        """MMR's metrics in the under-attack layout: ``overall`` and ``per_group`` (categories), with ``n`` pairs."""
        m = super().score(rows, n_boot=n_boot, seed=seed)

        def block(b: dict[str, Any]) -> dict[str, Any]:
            return {**b, "n": b["n_pairs"]}

        return {"overall": block(m["overall"]), "per_group": {c: block(b) for c, b in m["per_category"].items()},
                "bootstrap": m["bootstrap"]}


@attack_task("mmr", MMRAttackTask)
def load_mmr_attack_task(source: LVLMData) -> MMRAttackTask:
    """MMR's RA / MR under attack: an MMR question file or folder, asked with its prompt variant."""
    return MMRAttackTask(load_mmr(source.data, allow_outside=source.allow_outside), prompt=source.prompt)
