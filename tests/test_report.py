"""`mmrobust report` renders what records declare, and survives hostile records."""
from __future__ import annotations

import json
import os

from mmrobust.cli.main import main
from mmrobust.reports.contract import Record, Table, write_record
from mmrobust.reports.html import write_report


def test_declared_tables_render_with_headings_units_and_captions(tmp_path):
    table = Table.of("Accuracy", [("model", "model"), ("top1", "top-1 accuracy", "%"), ("n", "images", "count")],
                     [{"model": "a", "top1": 0.875, "n": 8}, {"model": "b", "top1": None, "n": 8}], "What it means.")
    write_record(tmp_path / "run", Record(kind="zeroshot", metrics={"top1": 0.875}, tables=[table]))
    page = write_report([tmp_path / "run"], tmp_path / "r.html").read_text()
    assert "<th>top-1 accuracy (%)</th>" in page and '<td class="num">87.5</td>' in page
    assert '<td class="num">n/a</td>' in page and "What it means." in page and "top1" not in page.split("<h3>")[1]


def test_hostile_records_are_skipped_not_followed(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "results_a.json").write_text("[1, 2]")
    (run / "results_b.json").write_bytes(b"\xff\xfe{")
    (run / "results_c.json").write_text(json.dumps({"kind": "x", "tables": [{"rows": "no"}, 3],
                                                    "files": {"plots": ["../../../etc/passwd", "/etc/hosts"]}}))
    (run / "results_d.json").write_text(json.dumps({"kind": "y", "metrics": [1], "tables": "no", "files": 3}))
    os.mkfifo(run / "results_e.json")  # opening a pipe would hang the report
    secret = tmp_path / "secret.png"
    secret.write_bytes(b"\x89PNG top secret")
    (run / "results_f.json").write_text(json.dumps({"kind": "z", "files": {"plots": [str(secret), "../secret.png"]}}))
    assert main(["report", str(run), "--out", str(tmp_path / "r.html")]) == 0
    page = (tmp_path / "r.html").read_text()
    assert page.count("not a results record, skipped") == 3 and "malformed table" in page
    assert "<img" not in page and "passwd" not in page  # no plot outside the run is embedded


def test_report_replaces_only_a_report_it_wrote(tmp_path, capsys):
    (tmp_path / "run").mkdir()
    mine = tmp_path / "index.html"
    mine.write_text("<html>my own page</html>")
    assert main(["report", str(tmp_path / "run"), "--out", str(mine)]) == 2
    assert "is not an mmrobust report" in capsys.readouterr().err and mine.read_text() == "<html>my own page</html>"
    ours = tmp_path / "report.html"
    assert main(["report", str(tmp_path / "run"), "--out", str(ours)]) == 0
    assert main(["report", str(tmp_path / "run"), "--out", str(ours), "--title", "again"]) == 0  # ours: replaced
    assert "again" in ours.read_text()


def test_a_deeply_nested_results_file_is_skipped_and_compare_says_so_in_one_line(tmp_path, capsys):
    run = tmp_path / "run"
    write_record(run, Record(kind="toy", metrics={"acc": 0.5}), name="toy")
    (run / "results_deep.json").write_text("[" * 100_000 + "]" * 100_000)  # past the recursion limit
    (run / "results_nested.json").write_text(json.dumps({"kind": "x", "metrics": {"a": [[[[[[[[[[[[1]]]]]]]]]]]]}})
                                              .replace("[1]", "[" * 500 + "1" + "]" * 500))  # parses, too deep
    assert main(["report", str(run), "--out", str(tmp_path / "r.html")]) == 0
    page = (tmp_path / "r.html").read_text()
    assert page.count("not a results record, skipped") == 2 and "toy" in page
    capsys.readouterr()
    assert main(["compare", str(run / "results_deep.json"), str(run / "results_toy.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "results_deep.json" in err and "Traceback" not in err


def test_report_without_out_writes_into_the_first_run_never_the_current_folder(tmp_path, monkeypatch, capsys):
    run, cwd = tmp_path / "run", tmp_path / "cwd"
    write_record(run, Record(kind="toy", metrics={"acc": 0.5}), name="toy")
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    assert main(["report", str(run)]) == 0
    assert (run / "report.html").is_file() and not list(cwd.iterdir())
    assert str(run / "report.html") in capsys.readouterr().out
