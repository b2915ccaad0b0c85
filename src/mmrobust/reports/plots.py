"""Plots for run reports. They draw on a bare matplotlib ``Figure`` with its own Agg canvas: no
pyplot, so importing mmrobust never changes the user's matplotlib backend or global state."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def new_figure(width: float, height: float, dpi: int = 120) -> Figure:
    """A figure with an Agg canvas of its own (no display, no pyplot state)."""
    fig = Figure(figsize=(width, height), dpi=dpi)
    FigureCanvasAgg(fig)
    return fig


def _finish(fig: Figure, ax: Any, path: str | Path, *, groups: Sequence[str], title: str, ylabel: str,
            ncol: int) -> Path:
    """Axis labels, legend and grid of a bar chart in percent, then save it."""
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels(groups, rotation=15, ha="right", fontsize=8)
    ax.set_ylim(0, 118)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10, pad=4)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, 1.0), ncol=ncol, frameon=False)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def _bar_axes(n_groups: int, n_series: int,
              colors: Sequence[str] | None) -> tuple[Figure, Any, int, float, Sequence[str]]:
    """A figure sized for ``n_groups`` clusters of ``n_series`` bars: (figure, axes, n, bar width, colors)."""
    fig = new_figure(max(6.0, 1.2 * n_groups + 2), 3.8)
    return fig, fig.subplots(), n_series, 0.8 / max(1, n_series), colors or ["#3b7dd8", "#d8453b", "#4caf50",
                                                                               "#f0a030", "#8e5bd8"]


def grouped_bars(path: str | Path, *, groups: Sequence[str], series: dict[str, Sequence[float]], title: str,
                 ylabel: str = "%", colors: Sequence[str] | None = None) -> Path:
    """One cluster of bars per group (e.g. per stage), one bar per series (e.g. clean acc, ASR), in percent."""
    fig, ax, n, width, colors = _bar_axes(len(groups), len(series), colors)
    for k, (name, values) in enumerate(series.items()):
        xs = [i - 0.4 + width * (k + 0.5) for i in range(len(groups))]
        vals = [100 * v for v in values]
        bars = ax.bar(xs, vals, width, label=name, color=colors[k % len(colors)])
        for b, v in zip(bars, vals):
            ax.text(b.get_x() + b.get_width() / 2, b.get_height() + 1, f"{v:.0f}", ha="center", va="bottom", fontsize=7)
    return _finish(fig, ax, path, groups=groups, title=title, ylabel=ylabel, ncol=n)


def seed_bars(path: str | Path, *, groups: Sequence[str], series: dict[str, Sequence[Sequence[float]]], title: str,
              ylabel: str = "%", colors: Sequence[str] | None = None) -> Path:
    """Like :func:`grouped_bars`, over seeds: each bar is the mean of a group's per-seed values (in [0,1]),
    with a min-max error bar and one dot per seed, so the spread is seen, not only the mean."""
    fig, ax, n, width, colors = _bar_axes(len(groups), len(series), colors)
    for k, (name, per_group) in enumerate(series.items()):
        xs = [i - 0.4 + width * (k + 0.5) for i in range(len(groups))]
        means = [100 * sum(v) / len(v) for v in per_group]
        lo = [m - 100 * min(v) for m, v in zip(means, per_group)]
        hi = [100 * max(v) - m for m, v in zip(means, per_group)]
        ax.bar(xs, means, width, label=name, color=colors[k % len(colors)], alpha=0.75,
               yerr=[lo, hi], capsize=3, error_kw={"elinewidth": 0.8})
        for x, vals in zip(xs, per_group):
            ax.scatter([x] * len(vals), [100 * v for v in vals], s=8, color="#222", zorder=3)
    return _finish(fig, ax, path, groups=groups, title=title, ylabel=ylabel, ncol=n)


def heatmap(path: str | Path, *, rows: Sequence[str], cols: Sequence[str], values: Sequence[Sequence[float]],
            notes: Sequence[Sequence[str]], title: str, side: tuple[str, Sequence[float]] | None = None,
            colorbar: str = "%") -> Path:
    """A rows x cols grid coloured by ``values`` (fractions in [0,1], shown in percent; NaN: blank), each
    cell annotated with its ``notes`` text; ``side`` = (heading, one value per row in [0,1]) adds a narrow
    grey-scale column to the right (e.g. a detector's AUROC per attack)."""
    import numpy as np

    fig = new_figure(1.2 * len(cols) + (2.8 if side else 1.8), 0.5 * len(rows) + 1.6)
    fig.set_layout_engine("constrained")
    grid = fig.add_gridspec(1, 2, width_ratios=[len(cols), 0.9 if side else 0.01])
    ax = fig.add_subplot(grid[0])
    data = np.array(values, dtype=float) * 100
    im = ax.imshow(data, cmap="Reds", vmin=0, vmax=100, aspect="auto")
    for i in range(len(rows)):
        for j in range(len(cols)):
            dark = data[i, j] > 60
            ax.text(j, i, notes[i][j], ha="center", va="center", fontsize=7, color="white" if dark else "#111")
    ax.set_xticks(range(len(cols)), list(cols), rotation=20, ha="right", fontsize=8)
    ax.set_yticks(range(len(rows)), list(rows), fontsize=8)
    ax.set_title(title, fontsize=10, pad=6)
    axes = [ax]
    if side:
        sx = fig.add_subplot(grid[1])
        axes.append(sx)
        vals = np.array(side[1], dtype=float).reshape(-1, 1)
        sx.imshow(vals, cmap="Greys", vmin=0.4, vmax=1.6, aspect="auto")
        for i, v in enumerate(side[1]):
            sx.text(0, i, "" if v != v else f"{v:.2f}", ha="center", va="center", fontsize=7)
        sx.set_xticks([0], [side[0]], fontsize=8)
        sx.set_yticks([])
    fig.colorbar(im, ax=axes, fraction=0.025, pad=0.02).set_label(colorbar, fontsize=8)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def score_histograms(path: str | Path, *, scores: dict[str, Sequence[float]], poisoned: Sequence[bool] | None,
                     title: str, bins: int = 40) -> Path:
    """One panel per detector: the histogram of its per-sample scores, clean and poisoned pairs apart (each as a
    share of its own group, so a few poisons stay visible) when ``poisoned`` is given."""
    import numpy as np

    fig = new_figure(max(4.0, 3.2 * len(scores)), 3.2)
    axes = fig.subplots(1, len(scores), squeeze=False)[0]
    mask = np.asarray(poisoned, dtype=bool) if poisoned is not None else None
    for ax, (name, values) in zip(axes, scores.items()):
        v = np.asarray(values, dtype=np.float64)
        edges = np.histogram_bin_edges(v, bins=bins)
        groups = [("all pairs", v, "#3b7dd8")] if mask is None else [("clean", v[~mask], "#3b7dd8"),
                                                                     ("poisoned", v[mask], "#d8453b")]
        for label, part, color in groups:
            if len(part):
                ax.hist(part, bins=edges, weights=np.full(len(part), 1 / len(part)), alpha=0.6, color=color,
                        label=f"{label} ({len(part)})")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("score (higher = more suspicious)", fontsize=8)
        ax.set_ylabel("share of group", fontsize=8)
        ax.legend(fontsize=7, frameon=False)
        ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def eps_curve(path: str | Path, *, series: dict[str, Sequence[tuple[float, float]]], title: str,
              ylabel: str = "accuracy (%)") -> Path:
    """Accuracy against the attack radius: one line per series (a model, a record), points (eps in [0,1], value
    in [0,1]) with the clean accuracy at eps 0; the x axis in k/255 (ticks at the eps used), y in percent."""
    from mmrobust.reports.png import save_png

    fig = new_figure(6.0, 3.8)
    ax = fig.subplots()
    ticks: set[float] = set()
    for name, points in series.items():
        pts = sorted((255 * float(e), 100 * float(v)) for e, v in points)
        ticks.update(x for x, _ in pts)
        ax.plot([x for x, _ in pts], [y for _, y in pts], marker="o", markersize=4, label=name)
        if pts:
            ax.annotate(f"{pts[-1][1]:.0f}", pts[-1], textcoords="offset points", xytext=(4, 4), fontsize=7)
    shown = sorted(ticks)
    ax.set_xticks(shown, [f"{x:.3g}" for x in shown], fontsize=8)
    ax.set_xlabel("eps (k/255; 0 = clean images)")
    ax.set_ylim(-3, 103)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10, pad=4)
    ax.grid(alpha=0.3)
    if series:
        ax.legend(fontsize=8, frameon=False, loc="best")
    fig.tight_layout()
    return save_png(fig, path)
