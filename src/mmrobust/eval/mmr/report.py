"""MMR report parts: the declared RA / MR table, the per-category chart (``mmr_categories.png``,
RA and MR with bootstrap CIs) and a plain-text table for the terminal."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from mmrobust.reports.contract import Table

CHART = "mmr_categories.png"


def mmr_tables(metrics: dict[str, Any]) -> list[Table]:
    """RA / MR per category, then per level and pooled, as declared report tables."""
    cols = [("group", "category"), ("n_pairs", "pairs", "count"), ("ra", "RA", "%"), ("mr", "MR", "%"),
            ("pos_acc", "POS accuracy", "%"), ("neg_acc", "leading-question accuracy", "%"),
            ("n_unparseable", "unparseable answers", "count"), ("n_pairs_error", "pairs with errors", "count")]
    cats = [{"group": c, **m} for c, m in metrics["per_category"].items()]
    levels = [{"group": f"level {lv}", **m} for lv, m in metrics["per_level"].items()]
    pooled = [{"group": "ALL (micro)", **metrics["overall"]}]
    what = ("RA: pairs with both the straightforward (POS) and the leading (NEG) question right, over pairs. "
            "MR: pairs whose POS is right but whose leading NEG is wrong, over pairs with POS right (the model saw "
            f"the image, then was misled). Parser: {metrics.get('parser')}; pairing: {_pairing_note(metrics)}; "
            "unparseable answers count as wrong; pooled numbers are over all pairs, not a mean of categories.")
    return [Table.of("MMR: RA and MR per category", cols, cats + levels + pooled, what)]


def _pairing_note(metrics: dict[str, Any]) -> str:
    mode = metrics.get("pairing", "id")
    if "reference_corrections" not in metrics:
        return f"{mode} (POS/NEG by id)"
    return f"{mode} (by file position; {len(metrics['reference_corrections'])} pairs kept despite their ids/tags)"


def plot_categories(metrics: dict[str, Any], path: str | Path) -> Path | None:
    """Horizontal bars of RA and MR per category (+ pooled), with CI whiskers; None if nothing to plot."""
    from mmrobust.reports.plots import new_figure

    groups = dict(metrics.get("per_category", {}))
    if not groups:
        return None
    groups["ALL (micro)"] = metrics["overall"]
    names = list(groups)
    fig = new_figure(10, 0.42 * len(names) + 1.6, dpi=110)
    for ax, key, title in zip(fig.subplots(1, 2, sharey=True), ("ra", "mr"),
                              ("RA: both right (higher is better)", "MR: POS right, misled on NEG (lower is better)")):
        vals = [groups[n][key] if groups[n][key] is not None else 0.0 for n in names]
        cis = [groups[n].get(f"{key}_ci") for n in names]
        lo = [v - c[0] if c else 0.0 for v, c in zip(vals, cis)]
        hi = [c[1] - v if c else 0.0 for v, c in zip(vals, cis)]
        colors = ["#4c72b0" if n != "ALL (micro)" else "#222222" for n in names]
        ax.barh(range(len(names)), vals, xerr=[lo, hi], color=colors, capsize=2)
        for y, n in enumerate(names):
            label = "n/a" if groups[n][key] is None else f"{vals[y]:.2f}"
            inside = vals[y] > 0.6  # label inside long bars, after short ones
            ax.text(vals[y] - 0.02 if inside else vals[y] + hi[y] + 0.02, y, f"{label} (n={groups[n]['n_pairs']})",
                    va="center", ha="right" if inside else "left", fontsize=7, color="white" if inside else "black")
        ax.set_xlim(0, 1)
        ax.set_title(title, fontsize=9)
    fig.axes[0].invert_yaxis()  # shared y: invert once, categories read top-down
    fig.axes[0].set_yticks(range(len(names)), names, fontsize=8)
    fig.suptitle(f"MMR per category (parser: {metrics.get('parser', '?')}, pairing: {metrics.get('pairing', 'id')}, "
                 "95% bootstrap CI)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return Path(path)


def _pct(v: float | None) -> str:
    return "  n/a" if v is None else f"{100 * v:5.1f}"


def format_table(metrics: dict[str, Any]) -> str:
    """RA / MR per category, per level and pooled, as a fixed-width text table."""
    lines = [f"{'group':<28} {'pairs':>5} {'RA%':>6} {'MR%':>6} {'unparsed':>8} {'err pairs':>9}"]

    def row(name: str, m: dict[str, Any]) -> str:
        return (f"{name:<28} {m['n_pairs']:>5} {_pct(m['ra']):>6} {_pct(m['mr']):>6} "
                f"{m['n_unparseable']:>8} {m['n_pairs_error']:>9}")

    lines += [row(c, m) for c, m in metrics["per_category"].items()]
    lines.append("-" * len(lines[0]))
    lines += [row(f"level {lv}", m) for lv, m in metrics["per_level"].items()]
    lines.append(row("ALL (micro)", metrics["overall"]))
    o = metrics["overall"]
    if o.get("ra_ci"):
        lines.append(f"RA 95% CI [{_pct(o['ra_ci'][0]).strip()}, {_pct(o['ra_ci'][1]).strip()}]"
                     + (f"   MR 95% CI [{_pct(o['mr_ci'][0]).strip()}, {_pct(o['mr_ci'][1]).strip()}]" if o.get("mr_ci") else ""))
    return "\n".join(lines)
