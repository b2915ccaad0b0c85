"""Plots for run reports. They draw on a bare matplotlib ``Figure`` with its own Agg canvas: no
pyplot, so importing mmrobust never changes the user's matplotlib backend or global state."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def new_figure(width: float, height: float, dpi: int = 120) -> Figure:
    """A figure with an Agg canvas of its own (no display, no pyplot state)."""
    fig = Figure(figsize=(width, height), dpi=dpi)
    FigureCanvasAgg(fig)
    return fig


def grouped_bars(path: str | Path, *, groups: Sequence[str], series: dict[str, Sequence[float]], title: str,
                 ylabel: str = "%", colors: Sequence[str] | None = None) -> Path:
    """One cluster of bars per group (e.g. per stage), one bar per series (e.g. clean acc, ASR), in percent."""
    fig = new_figure(max(6.0, 1.2 * len(groups) + 2), 3.8)
    ax = fig.subplots()
    n = len(series)
    width = 0.8 / max(1, n)
    colors = colors or ["#3b7dd8", "#d8453b", "#4caf50", "#f0a030", "#8e5bd8"]
    for k, (name, values) in enumerate(series.items()):
        xs = [i - 0.4 + width * (k + 0.5) for i in range(len(groups))]
        vals = [100 * v for v in values]
        bars = ax.bar(xs, vals, width, label=name, color=colors[k % len(colors)])
        for b, v in zip(bars, vals):
            ax.text(b.get_x() + b.get_width() / 2, b.get_height() + 1, f"{v:.0f}", ha="center", va="bottom", fontsize=7)
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels(groups, rotation=15, ha="right", fontsize=8)
    ax.set_ylim(0, 118)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10, pad=4)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, 1.0), ncol=n, frameon=False)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path
