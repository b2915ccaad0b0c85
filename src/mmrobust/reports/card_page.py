"""The card's one page: the summary (one line per threat, its headline number and verdict) at the top, then
one part per section holding every record its run directory declares, rendered as ``mmrobust report`` renders
them (:func:`mmrobust.reports.html.record_html`: tables, ``files.plots`` pictures, warnings), so a plot or
table a record gains later appears on the card with no change here. A skipped section says why in one line.
"""
from __future__ import annotations

import html
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

from mmrobust.errors import DataError
from mmrobust.jsonio import read_json
from mmrobust.reports.html import GENERATOR, STYLE, record_html
from mmrobust.safety import ensure_regular_file

_CARD_CSS = """.verdict{font-weight:bold;padding:.1em .5em;border-radius:3px;color:#fff;white-space:nowrap}
.PASS{background:#2e7d32}.FAIL{background:#c62828}.INFO{background:#78909c}.NA{background:#e8890c}
.summary td{vertical-align:top}.skip{color:#666;font-style:italic}.facts td:first-child{color:#555}
.status{color:#777;font-size:.85em}"""


def _esc(v: Any) -> str:
    return html.escape(str(v))


def _summary(lines: Sequence[Mapping[str, Any]]) -> str:
    if not lines:
        return "<p class='skip'>no section ran: nothing to summarize</p>"
    rows = "".join(f"<tr><td><span class='verdict {str(v['verdict']).replace('/', '')}'>{_esc(v['verdict'])}"
                   f"</span></td><td>{_esc(v['threat'])}</td><td>{_esc(v['headline'])}</td>"
                   f"<td>{_esc(_rule(v))}</td></tr>" for v in lines)
    return ("<table class='summary'><tr><th>verdict</th><th>threat</th><th>headline</th><th>threshold</th></tr>"
            f"{rows}</table>")


def _rule(v: Mapping[str, Any]) -> str:
    if v.get("threshold") is None:
        return "(information)"
    return f"{v['threshold']}: FAIL {v['rule']}" if v["verdict"] != "N/A" else f"{v['threshold']}: {v['rule']}"


def _records(folder: Path) -> list[tuple[Path, dict[str, Any] | None]]:
    """The results files of a section folder in the order they were written (name order among equal times)."""
    found = []
    for res in folder.glob("results*.json"):
        try:
            record = read_json(ensure_regular_file(res, "results file"))
        except (OSError, ValueError, DataError):
            record = None
        found.append((res, record if isinstance(record, dict) else None))
    return sorted(found, key=lambda fr: (os.stat(fr[0]).st_mtime_ns, fr[0].name))


def _section(s: Mapping[str, Any]) -> str:
    head = f"<h2 id='{_esc(s['name'])}'>{_esc(s['title'])}</h2><p class='caption'>{_esc(s.get('description', ''))}</p>"
    if s["status"] == "skipped":
        return head + f"<p class='skip'>skipped: {_esc(s['reason'])}</p>"
    folder = Path(s["folder"])
    parts = [head, f"<p class='status'>{_esc(s['status'])} ({float(s.get('seconds', 0)):.1f} s) · {_esc(folder)}</p>"]
    for res, record in _records(folder):
        parts.append(record_html(folder, record) if record is not None
                     else f"<p class='meta'>{_esc(res.name)}: not a results record, skipped</p>")
    return "\n".join(parts)


def write_card_page(path: str | Path, *, title: str, facts: Sequence[tuple[str, str]],
                    summary: Sequence[Mapping[str, Any]], sections: Sequence[Mapping[str, Any]],
                    notes: Sequence[str] = ()) -> Path:
    """Write the card page: ``facts`` (label, text) about the model and the run, the ``summary`` lines
    (``Verdict.to_dict()``: verdict, threat, headline, threshold, rule), then each of ``sections`` (name,
    title, description, status ran / reused / skipped, reason, folder, seconds) and ``notes`` at the end."""
    out = Path(path)
    table = "".join(f"<tr><td>{_esc(k)}</td><td>{_esc(v)}</td></tr>" for k, v in facts)
    body = [f"<h1>{_esc(title)}</h1><table class='facts'>{table}</table>", "<h2>Summary</h2>", _summary(summary)]
    body += [_section(s) for s in sections]
    body += [f"<p class='meta'>{_esc(n)}</p>" for n in notes]
    page = (f"<!doctype html><html><head><meta charset='utf-8'>{GENERATOR}<title>{_esc(title)}</title>"
            f"<style>{STYLE}\n{_CARD_CSS}</style></head><body>{''.join(body)}</body></html>")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(out)
    return out
