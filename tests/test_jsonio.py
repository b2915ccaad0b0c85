"""The one append-only journal: a kill tears at most one line, readers skip it, writers start after it."""
from __future__ import annotations

import json

from mmrobust.jsonio import Journal


def test_journal_skips_a_torn_line_and_appends_on_a_fresh_one(tmp_path):
    path = tmp_path / "j.jsonl"
    j = Journal(path)
    assert list(j.records()) == []  # no file yet
    j.append({"key": "a", "v": 1}, sync=True)
    with path.open("ab") as f:
        f.write(b'{"key": "b", "v"')  # a kill in the middle of a line
    j.append({"key": "c", "v": 3})
    assert [r["key"] for r in j.records()] == ["a", "c"] and j.n_skipped == 1
    assert path.read_bytes().count(b"\n") == 3  # the torn line was closed, not glued to the next record


def test_journal_skips_foreign_lines_and_keeps_atomically(tmp_path):
    path = tmp_path / "log.jsonl"
    path.write_bytes(b'[1, 2]\n\xff\xfe\n{"step": 1}\n{"step": 20}\n{"step": 30}\n')
    j = Journal(path)
    assert [r["step"] for r in j.records()] == [1, 20, 30] and j.n_skipped == 2
    j.keep(lambda r: r["step"] <= 20)
    assert [json.loads(x)["step"] for x in path.read_text().splitlines()] == [1, 20]
    assert not (tmp_path / "log.jsonl.tmp").exists()
