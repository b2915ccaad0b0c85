"""Plain-text and Markdown tables from lists of row dicts."""
from __future__ import annotations

from typing import Any, Sequence


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "nan" if v != v else f"{100 * v:.1f}" if 0 <= v <= 1 else f"{v:.3g}"
    return str(v)


def format_table(rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str]], *, markdown: bool = False) -> str:
    """Render ``rows`` with (key, header) ``columns``; floats in [0,1] print as percentages."""
    header = [h for _, h in columns]
    body = [[_fmt(r.get(k, "")) for k, _ in columns] for r in rows]
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(header)]
    if markdown:
        lines = ["| " + " | ".join(h.ljust(w) for h, w in zip(header, widths)) + " |",
                 "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
        lines += ["| " + " | ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(b, widths))) + " |"
                  for b in body]
        return "\n".join(lines)
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths)), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(b, widths))) for b in body]
    return "\n".join(lines)
