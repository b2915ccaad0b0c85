"""Compare two runs: which metrics moved, and which protocol, config and seed fields differ between them.

A run is a directory of ``results*.json`` records or one results file. Records pair up by file name (and
must share their ``kind``); nested fields are flattened to dotted keys (``eps.4/255.robust_top1``) and listed
when their values differ. Provenance that always differs (creation time) is left out; the git sha, package
versions and machine are part of the protocol and are listed.

Example::

    rows = compare_runs("runs/clip-eval", "runs/fare-eval")
    print(format_comparison(rows))
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator, Mapping

from mmrobust.errors import DataError
from mmrobust.jsonio import read_json
from mmrobust.safety import ensure_regular_file

SECTIONS = ("metrics", "protocol", "config", "seeds", "git_sha")  # in this order in the listing
MAX_CELL = 60  # characters of a value shown in the table


def load_run(path: str | Path) -> dict[str, dict[str, Any]]:
    """``{file name: record}`` of a run directory (its ``results*.json``) or of one results file; a one-line
    DataError for a missing path, a folder without records, or a file that is not a results record."""
    p = Path(path)
    if p.is_dir():
        files = sorted(p.glob("results*.json"))
        if not files:
            raise DataError(f"{p} holds no results*.json; pass a run directory written by an mmrobust command")
    elif p.exists() or p.is_symlink():
        files = [p]
    else:
        raise DataError(f"{p} not found; pass a run directory or a results*.json file")
    return {f.name: _read_record(f) for f in files}


def _read_record(path: Path) -> dict[str, Any]:
    try:
        record = read_json(ensure_regular_file(path, "results file"))
    except (OSError, ValueError, RecursionError) as e:
        raise DataError(f"cannot read {path} as a results record ({type(e).__name__}); pass a results*.json "
                        "written by mmrobust") from None
    if not isinstance(record, dict) or "kind" not in record:
        raise DataError(f"{path} is not a results record (no 'kind'); pass a results*.json written by mmrobust")
    return record


def flatten(value: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Dotted keys of nested mappings; lists and scalars are leaves."""
    if isinstance(value, Mapping) and value:
        for k, v in value.items():
            yield from flatten(v, f"{prefix}.{k}" if prefix else str(k))
    else:
        yield prefix, value


def _fields(record: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for section in SECTIONS:
        for key, v in flatten(record.get(section), section):
            out[key] = v
    return out


def compare_records(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Rows ``{"section", "field", "a", "b"}`` for every field whose values differ (missing: None)."""
    fa, fb = _fields(a), _fields(b)
    rows = []
    for key in list(fa) + [k for k in fb if k not in fa]:
        va, vb = fa.get(key), fb.get(key)
        if json.dumps(va, sort_keys=True, default=str) != json.dumps(vb, sort_keys=True, default=str):
            section, _, name = key.partition(".")
            rows.append({"section": section, "field": name or section, "a": va, "b": vb})
    return rows


def compare_runs(run_a: str | Path, run_b: str | Path) -> list[dict[str, Any]]:
    """Rows ``{"record", "section", "field", "a", "b"}`` of what differs between two runs: per record present in
    both (paired by file name; a one-file run pairs with the other run's record of the same kind), then the
    records only one run has."""
    ra, rb = load_run(run_a), load_run(run_b)
    if len(ra) == 1 and len(rb) == 1:  # two files: pair them whatever their names
        (na, a), (nb, b) = next(iter(ra.items())), next(iter(rb.items()))
        ra, rb = {na if na == nb else f"{na} / {nb}": a}, {na if na == nb else f"{na} / {nb}": b}
    rows = []
    for name in [n for n in ra if n in rb]:
        a, b = ra[name], rb[name]
        if a.get("kind") != b.get("kind"):
            rows.append({"record": name, "section": "kind", "field": "kind", "a": a.get("kind"), "b": b.get("kind")})
            continue
        rows += [{"record": name, **r} for r in compare_records(a, b)]
    rows += [{"record": n, "section": "record", "field": "(only in A)", "a": ra[n].get("kind"), "b": None}
             for n in ra if n not in rb]
    rows += [{"record": n, "section": "record", "field": "(only in B)", "a": None, "b": rb[n].get("kind")}
             for n in rb if n not in ra]
    return rows


def _cell(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    text = v if isinstance(v, str) else json.dumps(v, default=str)
    text = " ".join(text.split())
    return text if len(text) <= MAX_CELL else text[:MAX_CELL - 3] + "..."


def format_comparison(rows: list[dict[str, Any]], *, name_a: str = "A", name_b: str = "B") -> str:
    """A plain-text table of :func:`compare_runs` rows, grouped by record ("no differences" when empty)."""
    if not rows:
        return "no differences in metrics, protocol, config or seeds"
    head = ("record", "section", "field", name_a, name_b)
    cells = [head] + [(r["record"], r["section"], r["field"], _cell(r["a"]), _cell(r["b"])) for r in rows]
    width = [max(len(str(c[i])) for c in cells) for i in range(len(head))]
    lines = ["  ".join(str(c[i]).ljust(width[i]) for i in range(len(head))).rstrip() for c in cells]
    lines.insert(1, "  ".join("-" * w for w in width))
    return "\n".join(lines)
