"""Pictures of examples a person looks at: clean vs attacked (or triggered) images with what the model said, the
perturbation magnified, and a trigger on its own. Drawn on a bare matplotlib ``Figure`` (no pyplot, as in
:mod:`mmrobust.reports.plots`); this layer takes arrays, never models.

Images are (C,H,W) (the torch layout of every mmrobust image) or (H,W,C) / (H,W), 1 or 3 channels, values in
[0,1]; they are drawn at a readable size, small ones upscaled nearest-neighbour (a 32 px image stays crisp).

Example::

    shown = [Shown(clean=x[i], altered=x_adv[i], header=f"true: {names[y[i]]}", clean_text=f"pred: {names[p[i]]}",
                   altered_text=f"pred: {names[q[i]]}", altered_bad=bool(q[i] != y[i])) for i in range(4)]
    example_grid("runs/eval/robust_examples.png", shown, title="APGD, eps 4/255", altered_name="attacked")
"""
from __future__ import annotations

import math
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from mmrobust.reports.plots import new_figure
from mmrobust.reports.png import save_png

BAD, GOOD = "#c62828", "#222222"  # a wrong (or backdoor-hit) prediction in red
DPI = 100
PANEL = 1.6  # inches per image panel (160 px at DPI): a 32 px image is shown 5x, nearest-neighbour
LEFT, TEXT_ROW, TITLE = 1.3, 0.4, 0.8  # inches: row names column, caption lines under a row, title band


def to_hwc(image: Any) -> np.ndarray:
    """(H, W, 3) float array in [0,1] of an image given as (C,H,W), (H,W,C) or (H,W), 1, 3 or 4 channels
    (alpha dropped, grey repeated); NaN becomes 0, values are clipped to [0,1]."""
    a = np.asarray(image.detach().cpu() if hasattr(image, "detach") else image, dtype=np.float64)
    if a.ndim == 3 and a.shape[0] in (1, 3, 4) and a.shape[-1] not in (1, 3, 4):
        a = a.transpose(1, 2, 0)
    elif a.ndim == 3 and a.shape[0] in (1, 3, 4) and a.shape[-1] in (1, 3, 4) and a.shape[0] <= a.shape[-1]:
        a = a.transpose(1, 2, 0)  # ambiguous (e.g. 3x3x3): the torch layout, as every mmrobust image
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3 or a.shape[-1] not in (1, 3, 4) or a.shape[0] == 0 or a.shape[1] == 0:
        raise ValueError(f"not an image: shape {tuple(np.shape(image))}")
    a = a[:, :, :3] if a.shape[-1] == 4 else np.repeat(a, 3, axis=2) if a.shape[-1] == 1 else a
    return np.clip(np.nan_to_num(a, nan=0.0, posinf=1.0, neginf=0.0), 0.0, 1.0)


def title_lines(title: str, width: float) -> str:
    """``title`` wrapped to a figure ``width`` inches wide (10 pt: about 13 characters an inch), 2 lines at most."""
    return clip_text(title, max(20, int(width * 13)), 2)


def magnified(clean: Any, altered: Any, k: float) -> np.ndarray:
    """The perturbation as a picture: ``clip(0.5 + k * (altered - clean), 0, 1)``, (H,W,3); mid-grey = unchanged."""
    c, a = to_hwc(clean), to_hwc(altered)
    if c.shape != a.shape:
        raise ValueError(f"clean {c.shape} and altered {a.shape} images differ in shape")
    return np.clip(0.5 + k * (a - c), 0.0, 1.0)


def magnification(pairs: Sequence[tuple[Any, Any]]) -> int:
    """The largest integer k (at least 1, at most 255) with ``k * max|altered - clean| <= 0.5`` over ``pairs``:
    the perturbation fills the grey range without clipping (l-inf eps 4/255 gives k = 31)."""
    top = max((float(np.abs(to_hwc(a) - to_hwc(c)).max()) for c, a in pairs), default=0.0)
    return 1 if top <= 0 else int(min(255, max(1, math.floor(0.5 / top + 1e-9))))


def clip_text(text: str, width: int, lines: int) -> str:
    """``text`` wrapped to ``width`` characters, at most ``lines`` lines (the last ends with '...' when cut)."""
    wrapped = textwrap.wrap(" ".join(str(text).split()), width=width, break_long_words=True) or [""]
    if len(wrapped) > lines:
        wrapped = wrapped[:lines]
        wrapped[-1] = wrapped[-1][:max(0, width - 3)] + "..."
    return "\n".join(wrapped)


@dataclass(frozen=True)
class Shown:
    """One example: its clean and altered (attacked / triggered) image, a ``header`` above it (e.g. the true
    label), what the model said on each, and whether that is bad (wrong, or the backdoor's target): drawn red."""

    clean: Any
    altered: Any
    clean_text: str = ""
    altered_text: str = ""
    header: str = ""
    clean_bad: bool = False
    altered_bad: bool = False


def image_panel(ax: Any, image: np.ndarray, panel_px: float) -> None:
    """Draw ``image`` filling its panel; upscaled nearest-neighbour (crisp pixels), downscaled antialiased."""
    ax.imshow(image, interpolation="nearest" if max(image.shape[:2]) < panel_px else "antialiased",
              vmin=0, vmax=1)
    ax.set_xticks([])
    ax.set_yticks([])


def _caption(ax: Any, text: str, bad: bool) -> None:
    ax.set_xlabel(text, fontsize=9, color=BAD if bad else GOOD, fontweight="bold" if bad else "normal", labelpad=3)


def picture_figure(width: float, height: float) -> Any:
    """A bare figure (no pyplot state) at the pictures' ``DPI``."""
    return new_figure(width, height, dpi=DPI)


def grid_size(n: int, rows: int) -> tuple[float, float]:
    """(width, height) in inches of an :func:`example_grid` of ``n`` examples in ``rows`` image rows."""
    return LEFT + n * PANEL, TITLE + rows * (PANEL + TEXT_ROW)


def example_grid(path: str | Path, examples: Sequence[Shown], *, title: str, altered_name: str = "attacked",
                 diff: bool = True, k: int | None = None) -> Path:
    """One column per example: the clean image, the altered one and (``diff``) the change magnified
    (``0.5 + k (altered - clean)``, k from :func:`magnification` unless given), each with its caption under it.
    The PNG is ``grid_size(len(examples), 3 or 2)`` inches at ``DPI``."""
    if not examples:
        raise ValueError("no examples to draw")
    k = k if k is not None else magnification([(e.clean, e.altered) for e in examples])
    rows = [("clean", lambda e: to_hwc(e.clean), "clean_text", "clean_bad"),
            (altered_name, lambda e: to_hwc(e.altered), "altered_text", "altered_bad")]
    if diff:
        rows.append((f"change x{k}\n(grey: none)", lambda e: magnified(e.clean, e.altered, k), None, None))
    fig = picture_figure(*grid_size(len(examples), len(rows)))
    width, height = grid_size(len(examples), len(rows))
    grid = fig.add_gridspec(len(rows), len(examples), left=LEFT / width, right=0.99, top=1 - TITLE / height,
                            bottom=TEXT_ROW / height, hspace=TEXT_ROW / PANEL, wspace=0.08)
    for r, (name, picture, text, bad) in enumerate(rows):
        for c, e in enumerate(examples):
            ax = fig.add_subplot(grid[r, c])
            image_panel(ax, picture(e), PANEL * DPI)
            if text:
                _caption(ax, getattr(e, text), getattr(e, bad))
            if r == 0 and e.header:
                ax.set_title(e.header, fontsize=9, pad=3)
            if c == 0:
                ax.set_ylabel(name, fontsize=9, rotation=0, ha="right", va="center", labelpad=6)
    fig.suptitle(title_lines(title, width), fontsize=10, y=1 - 0.08 / height, va="top")
    return save_png(fig, path)


def image_row(path: str | Path, panels: Sequence[tuple[str, Any]], *, title: str) -> Path:
    """Images side by side, each titled (a trigger on mid-grey, on an example, the patch as it is ...)."""
    if not panels:
        raise ValueError("no images to draw")
    width = max(5.5, 0.3 + len(panels) * PANEL * 1.25)
    band = TITLE - (0.2 if "\n" not in title_lines(title, width) else 0.0)  # one title line: a narrower band
    height = band + PANEL + TEXT_ROW
    fig = picture_figure(width, height)
    grid = fig.add_gridspec(1, len(panels), left=0.15 / width, right=1 - 0.15 / width, top=1 - band / height,
                            bottom=0.1 / height, wspace=0.25)
    for c, (name, image) in enumerate(panels):
        ax = fig.add_subplot(grid[0, c])
        image_panel(ax, to_hwc(image), PANEL * DPI)
        ax.set_title(clip_text(name, 30, 2), fontsize=8.5, pad=3)
    fig.suptitle(title_lines(title, width), fontsize=10, y=1 - 0.08 / height, va="top")
    return save_png(fig, path)


__all__ = ["Shown", "clip_text", "example_grid", "grid_size", "image_row", "magnification", "magnified",
           "title_lines", "to_hwc"]
