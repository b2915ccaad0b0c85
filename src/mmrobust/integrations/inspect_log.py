"""The replies of an Inspect log of the MMR task (``inspect_mmr.mmr``), read with ``inspect_ai.log``.

A sample's id is mmrobust's uid and its target the ground truth; the reply is the text the scorer parsed
(its row in the score's metadata) or, for a sample that never reached the scorer, the model's completion.
A sample that errored (the server died, a timeout) is an error, never a reply. A log that did not finish
(status ``error`` / ``cancelled`` / ``started``) is refused unless ``allow_errors``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from mmrobust.errors import ConfigError, DataError
from mmrobust.integrations.replies import HarnessReply
from mmrobust.safety import ensure_regular_file

RERUN = ("rerun `inspect eval ... --log-dir DIR` (or `inspect eval-retry LOG`) against a live server and pass its "
         "new log")


def _read(path: Path) -> Any:
    try:
        from inspect_ai.log import read_eval_log
    except ImportError:
        raise ConfigError("reading an Inspect log needs inspect-ai: pip install 'mmrobust[harness]'") from None
    try:
        return read_eval_log(str(path))
    except Exception as e:  # inspect raises its own errors for a cut-off zip or foreign JSON
        raise DataError(f"{path} is not an Inspect log Inspect can read ({type(e).__name__}: {str(e)[:160]}); pass "
                        "the .eval or .json file `inspect eval` wrote") from None


def _prompt(sample: Any) -> str | None:
    """The text of the sample's user turn (the MMR task sends one: image, then text)."""
    messages = sample.input if isinstance(sample.input, list) else []
    content = messages[0].content if len(messages) == 1 else None
    texts = [c.text for c in content if getattr(c, "type", None) == "text"] if isinstance(content, list) else []
    return texts[0] if len(texts) == 1 else None


def _sample_reply(sample: Any, n: int) -> HarnessReply:
    reply = _raw_reply(sample, f"sample {n}")
    return HarnessReply(reply.uid, reply.response, reply.error, reply.ground_truth, reply.where, _prompt(sample))


def _raw_reply(sample: Any, where: str) -> HarnessReply:
    if sample.error is not None:
        message = getattr(sample.error, "message", None) or str(sample.error)
        return HarnessReply(str(sample.id), None, f"inspect sample error: {message}", str(sample.target), where)
    score = (sample.scores or {}).get("mmr_scorer")
    row = score.metadata.get("row") if score is not None and score.metadata else None
    if isinstance(row, dict):
        return HarnessReply(str(sample.id), row.get("response"), row.get("error"), str(sample.target), where)
    output = sample.output
    if output is None or output.error:
        return HarnessReply(str(sample.id), None, (output and output.error) or "no model output", str(sample.target),
                            where)
    return HarnessReply(str(sample.id), output.completion, None, str(sample.target), where)


def read_inspect_log(path: str | Path, *, allow_errors: bool = False) -> list[HarnessReply]:
    """One reply per sample of the Inspect log at ``path``; a one-line DataError for an unfinished or foreign log."""
    p = ensure_regular_file(Path(path), "Inspect log")
    log = _read(p)
    if log.eval.task.split("/")[-1] != "mmr":
        raise DataError(f"{p} is a log of the Inspect task {log.eval.task!r}, not mmr; pass the log of "
                        "`inspect eval mmrobust/mmr`")
    if log.status != "success" and not allow_errors:
        why = f": {str(log.error.message)[:160]}" if log.error is not None else ""
        raise DataError(f"{p}: the Inspect run did not finish (status {log.status}{why}); {RERUN}, or pass "
                        "--allow-errors to score the samples it has")
    if not log.samples:
        raise DataError(f"{p} holds no samples (status {log.status}); {RERUN}")
    return [_sample_reply(s, n) for n, s in enumerate(log.samples, start=1)]
