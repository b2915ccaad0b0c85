"""Pictures of a trigger: on a mid-grey image (what it adds on its own), a patch file as it is pasted, and, for a
poisoned manifest, one poisoned row before and after (``trigger.png`` beside ``poison.json``).

Example::

    rec = poison_manifest(manifest="world/train.csv", out_dir="runs/p", trigger="badnet", target="star", rate=0.05)
    path, note = write_poison_preview(rec)   # runs/p/trigger.png, or None and why not
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from mmrobust.data.manifest import PathPolicy
from mmrobust.data.poison.patch import Patch
from mmrobust.data.poison.poison import PoisonRecord, _load_image, _resolve, _subseed
from mmrobust.data.poison.triggers import Trigger
from mmrobust.jsonio import read_json

log = logging.getLogger(__name__)
PREVIEW_NAME = "trigger.png"


def trigger_panels(trigger: Trigger, *, height: int, width: int, seed: int = 0) -> list[tuple[str, torch.Tensor]]:
    """(title, (3,H,W) image) panels of ``trigger`` alone: applied to a mid-grey ``height`` x ``width`` image, and
    for a patch trigger (BadCLIP's) the patch itself as it is pasted."""
    grey = torch.full((3, height, width), 0.5)
    panels = [("the trigger on mid-grey", trigger(grey, generator=torch.Generator().manual_seed(seed)))]
    if isinstance(trigger, Patch):
        side = int(trigger.patch.shape[-1])
        panels.append((f"the patch as pasted ({side}x{side} px)", trigger.patch))
    return panels


def trigger_title(spec: dict[str, Any]) -> str:
    """'badnet (size=6, pattern=checkerboard, ...)': a trigger spec in one line (file paths by their name)."""
    config = spec.get("config") if isinstance(spec.get("config"), dict) else {}
    shown = [f"{k}={Path(str(v)).name if k == 'file' else v}" for k, v in config.items() if k != "sha256"]
    return f"{spec.get('name', '?')} ({', '.join(shown)})" if shown else str(spec.get("name", "?"))


def _first_poisoned(rec: PoisonRecord, policy: PathPolicy) -> list[tuple[str, Any]]:
    """Panels of the first poisoned row: its source image (read as poisoning read it), the poisoned copy and the
    change magnified."""
    from mmrobust.reports.gallery import magnification, magnified

    info = read_json(rec.record_path)
    entry = next((p for p in info.get("poisoned", []) if isinstance(p, dict)), None)
    if entry is None:
        return []
    row, size = int(entry["row"]), info.get("image_size")
    clean = _load_image(policy.check(_resolve(Path(info["source_manifest"]).parent, str(entry["source_image"]))), size)
    gen = torch.Generator().manual_seed(_subseed(rec.seed, "trigger", row))
    poisoned = rec.build_trigger()(clean, gen)  # exactly the written image (before its 8-bit rounding)
    k = magnification([(clean, poisoned)])
    return [(f"row {row} clean", clean), (f"row {row} poisoned", poisoned), (f"change x{k} (grey: none)",
                                                                              magnified(clean, poisoned, k))]


def write_poison_preview(rec: PoisonRecord, *, data_root: str | Path | None = None,
                         allow_outside: bool = False) -> tuple[Path | None, str]:
    """Draw ``trigger.png`` beside ``rec``'s poison.json: the first poisoned row before and after (manifests; its
    source is read only inside ``data_root`` as poisoning did) and the trigger alone. Returns (path, '') or
    (None, why not): a preview is an illustration, its failure never fails the poisoning."""
    from mmrobust.reports.gallery import image_row

    try:
        panels: list[tuple[str, Any]] = []
        if rec.kind == "manifest":
            info = read_json(rec.record_path)
            policy = PathPolicy.of(info["source_manifest"], data_root, allow_outside)
            panels = _first_poisoned(rec, policy)
        h, w = (panels[0][1].shape[-2:] if panels else (64, 64))
        panels += trigger_panels(rec.build_trigger(), height=int(h), width=int(w), seed=rec.seed)
        title = (f"Trigger {trigger_title(rec.trigger)} -> target '{rec.target}' "
                 f"({len(rec.keys) or len(rec.poisoned_ids)} of {rec.n_rows} poisoned)")
        return image_row(rec.out_dir / PREVIEW_NAME, panels, title=title), ""
    except Exception as e:  # noqa: BLE001 - the poisoned data is written; only its picture is missing
        log.warning("no trigger preview: %s: %s", type(e).__name__, e)
        return None, f"{type(e).__name__}: {e}"
