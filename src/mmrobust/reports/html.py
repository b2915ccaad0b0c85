"""One self-contained HTML page (tables + embedded plots) across run directories.

Each ``results*.json`` in a run directory is rendered from what it declares (the contract in
``reports.contract``): its tables with their headings, units and captions, and its plot files.
A record from before the contract (no ``tables``) falls back to one table of its scalar metrics.
"""
from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from mmrobust.errors import DataError
from mmrobust.jsonio import read_json
from mmrobust.reports.png import img_html
from mmrobust.safety import ensure_regular_file

_CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}
h1{font-size:1.6em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:1em 0 .3em;font-size:.9em}td,th{border:1px solid #ccc;padding:.3em .7em}
th{background:#f3f5f8}td.num{text-align:right;font-variant-numeric:tabular-nums}img{max-width:100%}
.meta{color:#777;font-size:.8em}
.warn{background:#fff4e5;border-left:4px solid #e8890c;padding:.5em 1em;margin:1em 0}.warn li{margin:.2em 0}.caption{color:#444;font-size:.85em;max-width:900px;margin:.2em 0 1.2em}"""


def format_value(v: Any, unit: str = "") -> str:
    """A cell's text: fractions as percentages for unit "%", integers for counts, n/a for missing."""
    if v is None or (isinstance(v, float) and v != v):
        return "n/a"
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return json.dumps(v)[:80] if isinstance(v, (dict, list)) else str(v)
    if unit == "%":
        return f"{100 * v:.1f}"
    if unit == "s":
        return f"{v:.1f}"
    return str(v) if isinstance(v, int) else f"{v:.4g}"


def html_table(table: Mapping[str, Any]) -> str:
    """A declared table (``{"title", "columns": [{"key", "heading", "unit"}], "rows", "caption"}``)."""
    cols = table["columns"]
    heads = "".join(f"<th>{html.escape(c['heading'])}{' (%)' if c.get('unit') == '%' else ''}</th>" for c in cols)
    unit = {c["key"]: str(c.get("unit", "")) for c in cols}
    body = ""
    for row in table["rows"]:
        cells = []
        for c in cols:
            v = row.get(c["key"])
            numeric = isinstance(v, (int, float)) and not isinstance(v, bool)
            cls = ' class="num"' if numeric or (v is None and unit[c["key"]]) else ""
            cells.append(f"<td{cls}>{html.escape(format_value(v, unit[c['key']]))}</td>")
        body += "<tr>" + "".join(cells) + "</tr>"
    caption = f"<p class='caption'>{html.escape(str(table.get('caption')))}</p>" if table.get("caption") else ""
    return f"<h3>{html.escape(str(table.get('title', '')))}</h3><table><tr>{heads}</tr>{body}</table>{caption}"


def _fallback(record: Mapping[str, Any]) -> list[dict[str, Any]]:
    metrics = record.get("metrics") if isinstance(record.get("metrics"), dict) else {}
    flat = {str(k): v for k, v in metrics.items() if not isinstance(v, (dict, list))}
    if not flat:
        return []
    cols = [{"key": k, "heading": k.replace("_", " "), "unit": ""} for k in flat]
    return [{"title": record.get("kind", "results"), "columns": cols, "rows": [flat],
             "caption": "(this record declares no tables: its scalar metrics, as stored)"}]


def _valid_table(t: Any) -> bool:
    """A declared table as the contract writes it (records are files: a hand-edited one may not be)."""
    return (isinstance(t, dict) and isinstance(t.get("rows"), list) and isinstance(t.get("columns"), list)
            and all(isinstance(c, dict) and isinstance(c.get("key"), str) and isinstance(c.get("heading"), str)
                    for c in t["columns"]) and all(isinstance(r, dict) for r in t["rows"]))


def warnings_html(record: Mapping[str, Any]) -> str:
    """The record's sanity warnings as a highlighted list ('' when there are none)."""
    warns = record.get("warnings")
    if not isinstance(warns, list) or not warns:
        return ""
    items = "".join(f"<li>{html.escape(str(w))}</li>" for w in warns)
    return (f"<div class='warn'><strong>{len(warns)} warning{'s' if len(warns) > 1 else ''}: these numbers may "
            f"not mean what they seem</strong><ul>{items}</ul></div>")


def _record_html(run: Path, record: Mapping[str, Any]) -> list[str]:
    tables = record.get("tables")
    tables = tables if isinstance(tables, list) and tables else _fallback(record)
    parts = [warnings_html(record)] + [html_table(t) if _valid_table(t) else "<p class='meta'>(a malformed table, skipped)</p>"
             for t in tables]
    files = record.get("files") if isinstance(record.get("files"), dict) else {}
    plots = files.get("plots") if isinstance(files.get("plots"), list) else []
    for name in plots:
        path = (run / str(name)).resolve()
        if path.suffix == ".png" and path.is_file() and run.resolve() in path.parents:  # never outside its run
            parts.append(img_html(path))
    parts.append(f"<p class='meta'>{html.escape(str(record.get('kind')))} · git "
                 f"{html.escape(str(record.get('git_sha')))} · {html.escape(str(record.get('created', '')))}"
                 f" · seeds {html.escape(json.dumps(record.get('seeds', {})))}</p>")
    return parts


def read_records(run: Path) -> list[tuple[str, Any]]:
    """(file name, record) of each ``results*.json`` of ``run``; the record is None where the file is not one."""
    found: list[tuple[str, Any]] = []
    for res in sorted(run.glob("results*.json")):
        try:
            record = read_json(ensure_regular_file(res, "results file"))
        except (OSError, ValueError, DataError):
            record = None
        found.append((res.name, record if isinstance(record, dict) else None))
    return found


def _section(run: Path, records: list[tuple[str, Any]]) -> str:
    parts = [f"<h2>{html.escape(run.name)}</h2><p class='meta'>{html.escape(str(run))}</p>"]
    for name, record in records:
        if record is None:
            parts.append(f"<p class='meta'>{html.escape(name)}: not a results record, skipped</p>")
            continue
        parts += _record_html(run, record)
    return "\n".join(parts)


GENERATOR = "<meta name='generator' content='mmrobust report'>"


def _check_replaceable(out: Path) -> None:
    """Refuse to replace a file that is not a report of ours (the user's own page, a folder, a pipe)."""
    if not out.exists() and not out.is_symlink():
        return
    ours = False
    if out.is_file() and not out.is_symlink():
        with out.open("rb") as f:
            ours = GENERATOR.encode() in f.read(4096)
    if not ours:
        raise DataError(f"{out} exists and is not an mmrobust report; choose another --out (the tool replaces "
                        "only reports it wrote)")


def write_report(runs: Iterable[str | Path], out: str | Path, *, title: str = "mmrobust report") -> Path:
    """Write a self-contained HTML report of the given run directories (replacing only a report of ours)."""
    out = Path(out)
    _check_replaceable(out)
    from mmrobust.reports.overview import overview_html

    loaded = [(Path(r), read_records(Path(r))) for r in runs if Path(r).is_dir()]
    sections = [overview_html(loaded)] + [_section(run, records) for run, records in loaded]
    page = (f"<!doctype html><html><head><meta charset='utf-8'>{GENERATOR}<title>{html.escape(title)}</title>"
            f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>{''.join(sections)}</body></html>")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(page)
    tmp.replace(out)
    return out


def record_html(run: str | Path, record: Mapping[str, Any]) -> str:
    """One record as HTML (its warnings, declared tables and ``files.plots`` PNGs of ``run``, a provenance
    line), for pages that lay out records themselves (the card, :mod:`mmrobust.reports.card_page`)."""
    return "\n".join(_record_html(Path(run), record))


STYLE = _CSS  # the stylesheet of the report pages


__all__: Sequence[str] = ["STYLE", "format_value", "html_table", "read_records", "record_html", "warnings_html",
                          "write_report"]
