"""An LVLM's replies beside the images it saw: per example (one row), the clean image, the attacked one, the
perturbation magnified, and the question with the reference, the clean reply and the attacked reply (wrapped,
cut to fit; a wrong or degraded reply in red). Drawn like :mod:`mmrobust.reports.gallery`.

Example::

    reply_grid("runs/lvlm/vqa_examples.png", [Reply(clean=x[0], altered=x_adv[0], question="What colour?",
               reference="red", clean_reply="red", altered_reply="blue", altered_bad=True)], title="eps 4/255")
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from mmrobust.reports.gallery import (BAD, DPI, GOOD, PANEL, TITLE, clip_text, image_panel, magnification,
                                      magnified, picture_figure, save_png, title_lines, to_hwc)

TEXT_W = 5.2  # inches of the text column (about 62 characters of 9 pt)
ROW_GAP = 0.3  # inches between example rows
WRAP = 62


@dataclass(frozen=True)
class Reply:
    """One LVLM example: clean and attacked image, the question, the reference answer(s), both replies, whether
    each reply is bad (red), and a short ``score`` note (e.g. 'accuracy 1.00 -> 0.00')."""

    clean: Any
    altered: Any
    question: str
    reference: str = ""
    clean_reply: str = ""
    altered_reply: str = ""
    clean_bad: bool = False
    altered_bad: bool = False
    score: str = ""


def reply_grid_size(n: int) -> tuple[float, float]:
    """(width, height) in inches of a :func:`reply_grid` of ``n`` examples."""
    return 0.25 + 3 * PANEL + TEXT_W, TITLE + n * (PANEL + ROW_GAP)


def _lines(e: Reply, altered_name: str) -> list[tuple[str, str, bool]]:
    """(text, colour, bold) lines of one example's text panel."""
    out = [(clip_text(f"Q: {e.question}", WRAP, 2), GOOD, False)]
    if e.reference:
        out.append((clip_text(f"reference: {e.reference}", WRAP, 1), "#555555", False))
    out.append((clip_text(f"clean reply: {e.clean_reply!r}", WRAP, 2), BAD if e.clean_bad else GOOD, e.clean_bad))
    out.append((clip_text(f"{altered_name} reply: {e.altered_reply!r}", WRAP, 2), BAD if e.altered_bad else GOOD,
                e.altered_bad))
    if e.score:
        out.append((clip_text(e.score, WRAP, 1), "#555555", False))
    return out


def _text_panel(ax: Any, lines: list[tuple[str, str, bool]]) -> None:
    ax.axis("off")
    step = 9 * 1.35 / 72 / PANEL  # one 9 pt line in axes units
    y = 1.0
    for text, colour, bold in lines:
        ax.text(0.0, y, text, fontsize=9, color=colour, fontweight="bold" if bold else "normal", va="top",
                ha="left", family="DejaVu Sans", transform=ax.transAxes)
        y -= step * (text.count("\n") + 1) + step * 0.35


def reply_grid(path: str | Path, examples: Sequence[Reply], *, title: str, altered_name: str = "attacked",
               k: int | None = None) -> Path:
    """One row per example (see the module docstring); ``reply_grid_size(len(examples))`` inches at ``DPI``."""
    if not examples:
        raise ValueError("no examples to draw")
    k = k if k is not None else magnification([(e.clean, e.altered) for e in examples])
    width, height = reply_grid_size(len(examples))
    fig = picture_figure(width, height)
    grid = fig.add_gridspec(len(examples), 4, left=0.1 / width, right=1 - 0.1 / width, top=1 - TITLE / height,
                            bottom=0.1 / height, width_ratios=[PANEL, PANEL, PANEL, TEXT_W], wspace=0.06,
                            hspace=ROW_GAP / PANEL)
    heads = ("clean", altered_name, f"change x{k} (grey: none)")
    for r, e in enumerate(examples):
        for c, image in enumerate((to_hwc(e.clean), to_hwc(e.altered), magnified(e.clean, e.altered, k))):
            ax = fig.add_subplot(grid[r, c])
            image_panel(ax, image, PANEL * DPI)
            if r == 0:
                ax.set_title(heads[c], fontsize=9, pad=3)
        _text_panel(fig.add_subplot(grid[r, 3]), _lines(e, altered_name))
    fig.suptitle(title_lines(title, width), fontsize=10, y=1 - 0.08 / height, va="top")
    return save_png(fig, path)


__all__ = ["Reply", "reply_grid", "reply_grid_size"]
