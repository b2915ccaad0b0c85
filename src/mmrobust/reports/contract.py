"""The results contract: every evaluation and every story returns one :class:`Record` and writes it
one way (:func:`write_record`): ``results_<name>.json`` (metrics, config, seeds, git sha, declared
tables and plots) beside ``samples_<name>.jsonl`` (one row per sample).

A record declares what a person should see: :class:`Table` s whose :class:`Column` s carry a
readable heading and a unit, a caption that says what the numbers mean, and the plot files it
made. ``mmrobust report`` renders records from these declarations alone, so a new evaluation gets
its report section by declaring its tables, not by teaching the report its keys.
"""
from __future__ import annotations

import logging
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from mmrobust.reports.records import write_results
from mmrobust.jsonio import read_json, write_jsonl

log = logging.getLogger(__name__)
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


@dataclass(frozen=True)
class Picture:
    """A PNG a record draws into its run directory when it is written: ``draw(path)`` makes the file ``name``
    (a plain file name ending in .png). The pictures are built from data in memory at record time (attacked
    images, replies), so writing a record never reruns an attack."""

    name: str
    draw: Callable[[Path], Any]

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*\.png", self.name):
            raise ValueError(f"picture name {self.name!r} is not a plain .png file name")


@dataclass
class Record:
    """What one evaluation (or story) returns: ``kind`` is its registered name (``zeroshot``, ``mmr``,
    ``story.backdoor`` ...); ``samples`` are the per-sample rows; ``plots`` are file names in the
    run directory (``pictures`` are drawn there on writing and join them); ``extra`` holds other provenance
    (sample ids, anomalies, call statistics); ``warnings`` are the
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
    pictures: list[Picture] = field(default_factory=list)


def record_files(name: str) -> tuple[str, str]:
    """``(results file, samples file)`` of a record called ``name``."""
    return f"results_{name}.json", f"samples_{name}.jsonl"


def write_record(out_dir: str | Path, record: Record, *, name: str | None = None) -> dict[str, Any]:
    """Write ``results_<name>.json`` (+ ``samples_<name>.jsonl`` when there are samples) into
    ``out_dir``; ``name`` defaults to the record's kind. Returns the JSON record as written."""
    out = Path(out_dir)
    results, samples = record_files(name or record.kind)
    drawn, failed = draw_pictures(out, record.pictures)
    files: dict[str, Any] = {"plots": [*record.plots, *(p for p in drawn if p not in record.plots)]}
    if failed:
        files["pictures_failed"] = failed
    if record.samples:
        write_jsonl(out / samples, record.samples)
        files["samples"] = samples
    path = write_results(out, kind=record.kind, metrics=record.metrics, config=record.config, seeds=record.seeds,
                         filename=results, warnings=record.warnings, protocol=record.protocol,
                         extra={**record.extra, "tables": [t.to_dict() for t in record.tables], "files": files})
    return read_json(path)


def draw_pictures(out_dir: Path, pictures: Sequence[Picture]) -> tuple[list[str], list[dict[str, str]]]:
    """Draw each picture into ``out_dir``: (names drawn, [{"name", "error"}] of those that failed). A picture is
    an illustration: one that fails (matplotlib on odd input, a file of the user's in the way) is logged and
    listed in the record's ``files.pictures_failed``, and the record with its numbers is written all the same."""
    drawn: list[str] = []
    failed: list[dict[str, str]] = []
    for pic in pictures:
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
            pic.draw(out_dir / pic.name)
            drawn.append(pic.name)
        except Exception as e:  # noqa: BLE001 - recorded in files.pictures_failed, never fatal to the record
            log.warning("picture %s not drawn: %s: %s", pic.name, type(e).__name__, e)
            failed.append({"name": pic.name, "error": f"{type(e).__name__}: {e}"[:300]})
    return drawn, failed
