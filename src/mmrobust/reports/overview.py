"""The part of a report that spans runs: robust accuracy against eps, one line per robust record (a model), so
models evaluated in separate runs (CLIP, FARE, TeCoA) are compared on one plot.

Records are files: a value that is not what ``eval robust`` writes (a hand-edited or foreign record) leaves that
record out of the plot, never fails the report.
"""
from __future__ import annotations

import html
import math
import tempfile
from pathlib import Path
from typing import Any, Sequence

Points = list[tuple[float, float]]


def _share(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and 0 <= v <= 1


def robust_points(record: Any) -> tuple[str, Points] | None:
    """(attack, [(eps, accuracy)] with clean accuracy at eps 0) of a robust record; None for anything else."""
    m = record.get("metrics") if isinstance(record, dict) and record.get("kind") == "robust" else None
    if not isinstance(m, dict) or not _share(m.get("clean_top1")) or not isinstance(m.get("eps"), dict):
        return None
    pts = [(0.0, float(m["clean_top1"]))]
    for r in m["eps"].values():
        if not isinstance(r, dict) or not _share(r.get("eps")) or not _share(r.get("robust_top1")):
            return None
        if r["eps"] > 0:
            pts.append((float(r["eps"]), float(r["robust_top1"])))
    return f"{m.get('attack', '?')} ({m.get('norm', '?')})", pts


def _labels(runs: Sequence[Path]) -> list[str]:
    """Run names, made unique with their parent folders where two share a name."""
    names = [r.name for r in runs]
    return [f"{r.parent.name}/{r.name}" if names.count(r.name) > 1 else r.name for r in runs]


def robust_series(loaded: Sequence[tuple[Path, Sequence[tuple[str, Any]]]]) -> dict[str, Points]:
    """One series per robust record of the loaded runs ((run, [(file name, record)])), labelled by its run (and
    its attack where the runs' attacks differ)."""
    found = [(run, pts) for run, records in loaded for _, rec in records if (pts := robust_points(rec)) is not None]
    labels = _labels([run for run, _ in found])
    attacks = {attack for _, (attack, _) in found}
    series: dict[str, Points] = {}
    for label, (_, (attack, points)) in zip(labels, found):
        key = f"{label} [{attack}]" if len(attacks) > 1 else label
        while key in series:  # two robust records in one run
            key += "'"
        series[key] = points
    return series


def overview_html(loaded: Sequence[tuple[Path, Sequence[tuple[str, Any]]]]) -> str:
    """The cross-run section: the robust-accuracy curve of every robust record, when there are two or more."""
    from mmrobust.reports.plots import eps_curve
    from mmrobust.reports.png import img_html

    series = robust_series(loaded)
    if len(series) < 2:
        return ""
    attacks = sorted({p[0] for _, recs in loaded for _, r in recs if (p := robust_points(r)) is not None})
    try:
        with tempfile.TemporaryDirectory() as tmp:
            image = img_html(eps_curve(Path(tmp) / "robust_overview.png", series=series,
                                       title=f"Robust accuracy across runs ({', '.join(attacks)})"))
    except Exception as e:  # noqa: BLE001 - a picture never fails the report
        return f"<p class='meta'>robust accuracy across runs: not drawn ({html.escape(type(e).__name__)})</p>"
    return (f"<h2>Robust accuracy across runs</h2>{image}<p class='caption'>{len(series)} robust evaluations: "
            "zero-shot accuracy on clean images (eps 0) and under attack per eps. Compare lines only where the "
            "attack, its budget and the test images match (each run's section below lists them).</p>")
