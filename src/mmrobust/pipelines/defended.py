"""`mmrobust eval robust --defense NAME` as a library function: a CLIP under a test-time defense, evaluated with
the paper's (non-adaptive) protocol and adaptively, side by side (:mod:`mmrobust.eval.defended`)."""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from mmrobust.eval.contract import run_evaluation
from mmrobust.eval.defended import DefendedSettings
from mmrobust.eval.robust import clear_partial
from mmrobust.models.clip import CLIPModel
from mmrobust.pipelines.evaluate import EvalData, robust_setup
from mmrobust.reports.contract import write_record


def eval_defended(*, model: str, data: EvalData, out_dir: str | Path, settings: DefendedSettings | None = None,
                  weights: dict | None = None, clip: CLIPModel | None = None, resume: bool = True) -> dict[str, Any]:
    """Clean and robust zero-shot accuracy per eps: no defense, the defense under the paper's protocol (attack
    the undefended model, then defend) and under the adaptive attack (through the defense, EOT). Writes
    ``results_robust-defended.json`` and its per-sample JSONL into ``out_dir``; returns the metrics.

    Finished attack chunks go to ``out_dir/partial_robust.jsonl`` (both attacks, keyed by their settings), so
    a killed run resumes (``resume=False`` starts over); the file is removed once the results are written."""
    s = settings or DefendedSettings()
    clip, ds, out, partial = robust_setup(model=model, data=data, out_dir=out_dir, device=s.device, weights=weights,
                                          clip=clip, resume=resume)
    record = run_evaluation("robust-defended", model=clip, data=ds, settings=s, partial=partial)
    record.config = {"model": model, "data": asdict(data), **asdict(s), "eps": list(s.eps), **record.config}
    write_record(out, record, name="robust-defended")
    clear_partial(partial)
    return record.metrics
