"""The pictures of a backdoor evaluation: a few test images (a seeded choice among those whose true class is not
the target) clean and triggered, with the model's predictions (a triggered prediction of the target in red: the
backdoor fired), the change magnified, and the trigger on its own.

The triggered images are rebuilt with the very generator the evaluation used for them (passed in:
:func:`~mmrobust.eval.backdoor.trigger_generator`); the predictions are the evaluation's own per-sample rows.
"""
from __future__ import annotations

import hashlib
from functools import partial
from pathlib import Path
from typing import Any, Callable, Sequence

from mmrobust.data.poison.preview import trigger_panels, trigger_title
from mmrobust.data.poison.triggers import Trigger, trigger_spec
from mmrobust.reports.contract import Picture
from mmrobust.reports.gallery import Shown, example_grid, image_row

N_EXAMPLES = 6


def choose_rows(rows: Sequence[dict[str, Any]], *, target: int, n: int, seed: int) -> list[dict[str, Any]]:
    """Up to ``n`` rows whose true class is not the target and that were triggered, in a seeded order."""
    def key(r: dict[str, Any]) -> bytes:
        return hashlib.sha256(f"{seed}:{r['index']}".encode()).digest()

    return sorted((r for r in rows if r["label"] != target and r.get("pred_triggered") is not None), key=key)[:n]


def _examples(data: Any, rows: Sequence[dict[str, Any]], trigger: Trigger, names: Sequence[str], target: int,
              seed: int, generator: Callable[[int, int], Any]) -> list[Shown]:
    shown = []
    for r in rows:
        item = data[r["index"]]
        if item is None:  # unreadable since: left out of the picture
            continue
        x = item["image"]
        hit = r["pred_triggered"] == target
        shown.append(Shown(clean=x, altered=trigger(x, generator=generator(seed, r["index"])),
                           header=f"#{r['index']} true: {names[r['label']]}",
                           clean_text=f"pred: {names[r['pred_clean']]}",
                           altered_text=f"pred: {names[r['pred_triggered']]}" + (" (target)" if hit else ""),
                           clean_bad=r["pred_clean"] != r["label"], altered_bad=hit))
    return shown


def _draw_examples(path: Path, *, data: Any, rows: Sequence[dict[str, Any]], trigger: Trigger, target: str,
                   seed: int, generator: Callable[[int, int], Any]) -> Path:
    names = data.classes.classnames
    shown = _examples(data, rows, trigger, names, names.index(target), seed, generator)
    hits = sum(e.altered_bad for e in shown)
    title = (f"Backdoor {trigger_title(trigger_spec(trigger))} -> '{target}': {hits} of {len(shown)} seeded "
             f"triggered images predicted as the target (red)")
    return example_grid(path, shown, title=title, altered_name="triggered")


def _draw_trigger(path: Path, *, data: Any, rows: Sequence[dict[str, Any]], trigger: Trigger, seed: int) -> Path:
    item = next((data[r["index"]] for r in rows if data[r["index"]] is not None), None)
    h, w = (int(s) for s in item["image"].shape[-2:]) if item is not None else (64, 64)
    panels = trigger_panels(trigger, height=h, width=w, seed=seed)
    return image_row(path, panels, title=f"The trigger: {trigger_title(trigger_spec(trigger))}")


def backdoor_pictures(data: Any, rows: Sequence[dict[str, Any]], trigger: Trigger, *, target: str, seed: int,
                      generator: Callable[[int, int], Any], n: int = N_EXAMPLES) -> list[Picture]:
    """``backdoor_examples.png`` (clean vs triggered test images with predictions) and ``backdoor_trigger.png``
    (the trigger on mid-grey; a patch as it is), drawn when the record is written; ``generator(seed, index)`` is
    the evaluation's per-image trigger stream (:func:`~mmrobust.eval.backdoor.trigger_generator`)."""
    chosen = choose_rows(rows, target=data.classes.classnames.index(target), n=n, seed=seed)
    pics = [Picture("backdoor_trigger.png", partial(_draw_trigger, data=data, rows=chosen, trigger=trigger,
                                                    seed=seed))]
    if chosen:
        pics.insert(0, Picture("backdoor_examples.png", partial(_draw_examples, data=data, rows=chosen,
                                                                trigger=trigger, target=target, seed=seed,
                                                                generator=generator)))
    return pics
