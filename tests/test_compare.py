"""`mmrobust compare RUN_A RUN_B`: the metrics and protocol fields that differ between two runs."""
from __future__ import annotations

from mmrobust.cli.main import main
from mmrobust.reports.compare import compare_runs, format_comparison
from mmrobust.reports.contract import Record, write_record


def _run(path, *, templates_sha: str, top1: float, seed: int = 0):
    write_record(path, Record(kind="zeroshot", metrics={"top1": top1, "n": 64}, seeds={"sample": seed},
                              config={"model": "m"}, protocol={"templates_sha": templates_sha, "n_templates": 2}))
    return path


def test_compare_lists_the_one_protocol_field_and_the_metric_that_differ(tmp_path):
    a = _run(tmp_path / "a", templates_sha="aaaa", top1=0.5)
    b = _run(tmp_path / "b", templates_sha="bbbb", top1=0.75)
    rows = compare_runs(a, b)
    assert [(r["section"], r["field"], r["a"], r["b"]) for r in rows] == [
        ("metrics", "top1", 0.5, 0.75), ("protocol", "templates_sha", "aaaa", "bbbb")]
    assert all(r["record"] == "results_zeroshot.json" for r in rows)
    table = format_comparison(rows)
    assert "templates_sha" in table and "aaaa" in table and "0.75" in table
    same = compare_runs(a / "results_zeroshot.json", _run(tmp_path / "c", templates_sha="aaaa", top1=0.5))
    assert same == [] and format_comparison(same).startswith("no differences")


def test_compare_cli_prints_a_table_and_refuses_bad_paths_in_one_line(tmp_path, capsys):
    a = _run(tmp_path / "a", templates_sha="aaaa", top1=0.5)
    b = _run(tmp_path / "b", templates_sha="aaaa", top1=0.5, seed=3)
    write_record(b, Record(kind="robust", metrics={"clean_top1": 0.5}), name="robust")
    assert main(["compare", str(a), str(b)]) == 0
    out = capsys.readouterr().out
    assert "seeds    sample" in out and "(only in B)" in out and "results_robust.json" in out
    for bad in (tmp_path / "missing", tmp_path / "empty"):
        (tmp_path / "empty").mkdir(exist_ok=True)
        assert main(["compare", str(a), str(bad)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("mmrobust compare: error:") and err.count("\n") == 1
    (tmp_path / "junk.json").write_text("[1, 2]")
    assert main(["compare", str(a), str(tmp_path / "junk.json")]) == 2
    assert "not a results record" in capsys.readouterr().err
