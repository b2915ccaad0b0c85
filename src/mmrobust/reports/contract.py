"""The results contract: every evaluation and every story returns one :class:`Record` and writes it
one way (:func:`write_record`): ``results_<name>.json`` (metrics, config, seeds, git sha, declared
tables and plots) beside ``samples_<name>.jsonl`` (one row per sample).

A record declares what a person should see: :class:`Table` s whose :class:`Column` s carry a
readable heading and a unit, a caption that says what the numbers mean, and the plot files it
made. ``mmrobust report`` renders records from these declarations alone, so a new evaluation gets
its report section by declaring its tables, not by teaching the report its keys.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from mmrobust.reports.records import write_results
from mmrobust.jsonio import read_json, write_jsonl

UNITS = ("", "%", "count", "s")  # "%": a fraction in [0,1] shown x100; "count": an integer; "s": seconds


@dataclass(frozen=True)
class Column:
    """One column: the row key, the heading a person reads, and the unit (see ``UNITS``)."""

    key: str
    heading: str
    unit: str = ""

    def __post_init__(self) -> None:
        if self.unit not in UNITS:
            raise ValueError(f"column {self.key!r}: unit {self.unit!r} is not one of {UNITS}")


@dataclass(frozen=True)
class Table:
    """Rows of one table, with its columns, a title and a caption saying what the numbers mean."""

    title: str
    columns: tuple[Column, ...]
    rows: tuple[Mapping[str, Any], ...]
    caption: str = ""

    @classmethod
    def of(cls, title: str, columns: Sequence[tuple[str, str, str] | tuple[str, str]],
           rows: Sequence[Mapping[str, Any]], caption: str = "") -> "Table":
        """``Table.of("Accuracy", [("top1", "top-1", "%"), ("n", "images", "count")], rows, "...")``."""
        return cls(title, tuple(Column(*c) for c in columns), tuple(dict(r) for r in rows), caption)

    def to_dict(self) -> dict[str, Any]:
        return {"title": self.title, "columns": [asdict(c) for c in self.columns],
                "rows": [dict(r) for r in self.rows], "caption": self.caption}


@dataclass
class Record:
    """What one evaluation (or story) returns: ``kind`` is its registered name (``zeroshot``, ``mmr``,
    ``story.backdoor`` ...); ``samples`` are the per-sample rows; ``plots`` are file names in the
    run directory; ``extra`` holds other provenance (sample ids, anomalies, call statistics); ``warnings`` are the
    sanity warnings of :mod:`mmrobust.reports.sanity` (a setup that cannot give a meaningful number),
    shown at the top of the record's report section; ``protocol`` holds what two runs must share to be
    compared (templates hash, decoding, attack settings; package versions are added on writing)."""

    kind: str
    metrics: dict[str, Any]
    samples: list[dict[str, Any]] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    seeds: dict[str, Any] = field(default_factory=dict)
    tables: list[Table] = field(default_factory=list)
    plots: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    protocol: dict[str, Any] = field(default_factory=dict)


def record_files(name: str) -> tuple[str, str]:
    """``(results file, samples file)`` of a record called ``name``."""
    return f"results_{name}.json", f"samples_{name}.jsonl"


def write_record(out_dir: str | Path, record: Record, *, name: str | None = None) -> dict[str, Any]:
    """Write ``results_<name>.json`` (+ ``samples_<name>.jsonl`` when there are samples) into
    ``out_dir``; ``name`` defaults to the record's kind. Returns the JSON record as written."""
    out = Path(out_dir)
    results, samples = record_files(name or record.kind)
    files: dict[str, Any] = {"plots": list(record.plots)}
    if record.samples:
        write_jsonl(out / samples, record.samples)
        files["samples"] = samples
    path = write_results(out, kind=record.kind, metrics=record.metrics, config=record.config, seeds=record.seeds,
                         filename=results, warnings=record.warnings, protocol=record.protocol,
                         extra={**record.extra, "tables": [t.to_dict() for t in record.tables], "files": files})
    return read_json(path)
