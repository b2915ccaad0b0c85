"""One self-contained HTML page (tables + embedded plots) across run directories."""
from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any, Iterable, Sequence

from mmrobust.reports.records import read_json

_CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}
h1{font-size:1.6em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:1em 0;font-size:.9em}td,th{border:1px solid #ccc;padding:.3em .7em}
th{background:#f3f5f8}td.num{text-align:right;font-variant-numeric:tabular-nums}img{max-width:100%}
.meta{color:#777;font-size:.8em}pre{background:#f6f6f6;padding:.6em;overflow:auto;font-size:.8em}"""


def _cell(v: Any) -> str:
    if isinstance(v, float):
        text = f"{100 * v:.1f}" if 0 <= v <= 1 else f"{v:.4g}"
        return f'<td class="num">{text}</td>'
    if isinstance(v, (dict, list)):
        return f"<td><code>{html.escape(json.dumps(v)[:80])}</code></td>"
    return f"<td>{html.escape(str(v))}</td>"


def html_table(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> str:
    """A table of dict rows; floats in [0,1] shown as percentages."""
    if not rows:
        return "<p>(no rows)</p>"
    cols = list(columns or [k for k in rows[0] if not isinstance(rows[0][k], (dict, list))])
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(_cell(r.get(c, "")) for c in cols) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _img(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<p><img alt="{html.escape(path.name)}" src="data:image/png;base64,{data}"></p>'


def _rows_of(record: dict[str, Any]) -> list[dict[str, Any]]:
    m = record.get("metrics", {})
    for key in ("stages", "models", "categories"):
        if isinstance(m.get(key), list):
            return m[key]
    flat = {k: v for k, v in m.items() if not isinstance(v, (dict, list))}
    return [flat] if flat else []


def _section(run: Path) -> str:
    parts = [f"<h2>{html.escape(run.name)}</h2><p class='meta'>{html.escape(str(run))}</p>"]
    for res in sorted(run.glob("results*.json")):
        rec = read_json(res)
        parts.append(f"<h3>{html.escape(rec.get('kind', res.stem))}</h3>")
        parts.append(html_table(_rows_of(rec)))
        parts.append(f"<p class='meta'>git {html.escape(str(rec.get('git_sha')))} · {html.escape(rec.get('created', ''))}"
                     f" · seeds {html.escape(json.dumps(rec.get('seeds', {})))}</p>")
    for png in sorted(run.glob("*.png")):
        parts.append(_img(png))
    return "\n".join(parts)


def write_report(runs: Iterable[str | Path], out: str | Path, *, title: str = "mmrobust report") -> Path:
    """Write a self-contained HTML report of the given run directories."""
    sections = [_section(Path(r)) for r in runs if Path(r).is_dir()]
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>{''.join(sections)}</body></html>")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page)
    return out
