"""Seeds as an axis: spread statistics against naive formulas, tables of mean ± sd, claims checked at
every seed, and a tiny story run over two seeds through the CLI (per-seed runs, the aggregate record,
resuming a finished seed)."""
from __future__ import annotations

import math
import statistics

import pytest

from mmrobust.cli.main import main
from mmrobust.stories.backdoor import BackdoorDemo
from mmrobust.stories.seeds import run_seeds, with_seed
from mmrobust.jsonio import read_json
from mmrobust.reports.spread import Claim, aggregate_table, check_claims, format_spread, spread


def test_spread_matches_the_naive_formulas():
    vals = [0.9, 0.8, 0.85, 0.7, 0.95]
    s = spread(vals)
    mean = sum(vals) / 5
    sd = math.sqrt(sum((v - mean) ** 2 for v in vals) / 4)
    assert s["mean"] == pytest.approx(mean) and s["sd"] == pytest.approx(sd)
    assert (s["min"], s["max"], s["n"], s["values"]) == (0.7, 0.95, 5, vals)
    half = 2.776 * sd / math.sqrt(5)  # Student's t, 4 degrees of freedom
    assert s["ci"] == pytest.approx([mean - half, mean + half])
    assert spread([0.5]) == {"n": 1, "mean": 0.5, "sd": 0.0, "min": 0.5, "max": 0.5, "ci": None, "values": [0.5]}
    assert format_spread(s, "%") == f"{100 * mean:.1f} ± {100 * sd:.1f} (70.0-95.0)"
    # unitless: an AUROC just short of 1 keeps its decimals instead of showing as 1
    assert format_spread(spread([0.9998, 1.0, 0.9996])) == "1.000 ± 0.0002 (1.000-1)"
    assert format_spread(spread([0.512, 0.5, 0.52])) == "0.511 ± 0.010 (0.500-0.520)"
    assert format_spread(spread([600, 600])) == "600 ± 0 (600-600)"
    with pytest.raises(ValueError):
        spread([])


def _table(asr_par: float, clean: float) -> dict:
    return {"title": "T", "caption": "c", "columns": [{"key": "stage", "heading": "stage", "unit": ""},
                                                        {"key": "asr", "heading": "ASR", "unit": "%"},
                                                        {"key": "note", "heading": "note", "unit": ""}],
            "rows": [{"stage": "PAR", "asr": asr_par, "note": "x"}, {"stage": "poisoned", "asr": clean, "note": "x"}]}


def test_aggregate_table_matches_rows_by_label_and_keeps_the_statistics():
    agg = aggregate_table([_table(0.1, 1.0), _table(0.3, 0.9)])
    par = next(r for r in agg["rows"] if r["stage"] == "PAR")
    assert par["_spread"]["asr"]["values"] == [0.1, 0.3] and par["asr"].startswith("20.0 ± 14.1 (10.0-30.0)")
    assert par["note"] == "x" and "2 seeds" in agg["title"] and agg["columns"][1]["heading"] == "ASR (%)"


@pytest.mark.parametrize("values,verdict", [
    ([0.02, 0.03, 0.04], "holds"),  # margins 0.06-0.08, sd 0.01
    ([0.02, 0.09, 0.03], "holds, thin margin"),  # worst margin 0.01 < sd 0.038
    ([0.02, 0.12, 0.03], "seed-dependent"),  # fails at seed 1
])
def test_claim_verdicts(values, verdict):
    claim = Claim("par", "PAR's ASR", lambda m: m["asr"], at_most=0.10)
    [c] = check_claims([claim], {seed: {"asr": v} for seed, v in enumerate(values)})
    assert c["verdict"] == verdict and c["worst"] == max(values) and c["worst_seed"] == str(values.index(max(values)))
    assert c["sd"] == pytest.approx(statistics.stdev(values)) and c["bar"] == "<= 10"


def test_with_seed_sets_the_world_and_run_seeds():
    s = with_seed(BackdoorDemo(), 3)
    assert (s.seed, s.world_seed) == (3, 3)


TINY = ["backdoor.n_train=400", "backdoor.n_test=60", "backdoor.model=mmrobust-micro", "backdoor.threads=1",
        "backdoor.pretrain_steps=3", "backdoor.pretrain_batch=32", "backdoor.finetune_pairs=200",
        "backdoor.finetune_steps=2", "backdoor.finetune_batch=16", "backdoor.workers=1"]


def test_demo_over_two_seeds_writes_each_seed_and_the_spread(tmp_path, capsys):
    out = tmp_path / "seeds"
    args = ["demo", "--story", "backdoor", "--out", str(out), "--quiet", "--seeds", "0,1"]
    assert main(args + [a for x in TINY for a in ("--set", x)]) == 0
    per_seed = [read_json(out / f"seed-{k}" / "backdoor" / "results_story.json") for k in (0, 1)]
    assert [r["config"]["world_seed"] for r in per_seed] == [0, 1] and [r["config"]["seed"] for r in per_seed] == [0, 1]
    assert per_seed[0]["poisoned_ids"] != per_seed[1]["poisoned_ids"]  # another seed, another world and poisoning
    agg = read_json(out / "backdoor" / "results_seeds.json")
    assert set(agg["metrics"]["per_seed"]) == {"0", "1"}
    asr = [s["asr"] for s in (r["metrics"]["stages"][0] for r in per_seed)]
    stats = agg["metrics"]["tables"][0]["rows"][0]["_spread"]["asr"]
    assert stats["values"] == asr and stats["mean"] == pytest.approx(sum(asr) / 2)
    claims = {c["claim"]: c for c in agg["metrics"]["claims"]}
    assert set(claims) >= {"backdoor-takes", "par-removes"} and set(claims["par-removes"]["values"]) == {"0", "1"}
    # 3 pretraining steps plant no backdoor: the claim fails and the record warns
    assert claims["backdoor-takes"]["verdict"] == "seed-dependent"
    assert any("poisoned CLIP's ASR" in w for w in agg["warnings"])
    assert "±" in (out / "backdoor" / "summary.md").read_text() and (out / "backdoor" / "backdoor_seeds.png").is_file()
    html = (out / "report.html").read_text()
    assert "Headline effects at every seed" in html and "warning" in html
    printed = capsys.readouterr().out
    assert "seed-dependent" in printed
    # a finished seed is reused: running seeds 0-2 recomputes only seed 2
    weights = out / "seed-0" / "backdoor" / "pretrain" / "model" / "open_clip_model.safetensors"
    before = weights.stat().st_mtime_ns
    assert run_seeds(["backdoor"], seeds=[0, 1, 2], out_dir=out, progress=False, log=lambda m: None,
                     settings={"backdoor": _tiny()})["backdoor"]["claims"]
    assert read_json(out / "backdoor" / "results_seeds.json")["config"]["seeds"] == [0, 1, 2]
    assert weights.stat().st_mtime_ns == before and (out / "seed-2" / "backdoor" / "results_story.json").is_file()


def _tiny() -> BackdoorDemo:
    from mmrobust.stories.overrides import apply_overrides

    return apply_overrides(BackdoorDemo(), [x.split(".", 1)[1] for x in TINY])


def test_bad_seed_lists_are_one_line_errors(tmp_path, capsys):
    for bad in ("a,b", "1,1", "-3", ""):
        assert main(["demo", "--out", str(tmp_path), "--seeds", bad]) != 0
        err = capsys.readouterr().err
        assert "--seeds" in err and "Traceback" not in err


def test_train_and_eval_over_seeds_write_each_seed_and_the_spread(tmp_path, micro_world, capsys):
    w = micro_world
    train = ["train", "--task", "clip", "--model", "mmrobust-micro", "--data", str(w.train_manifest), "--steps", "2",
             "--batch-size", "16", "--warmup", "1", "--quiet", "--out", str(tmp_path / "t"), "--seeds", "0,1"]
    assert main(train) == 0
    runs = [read_json(tmp_path / "t" / f"seed-{k}" / "results.json") for k in (0, 1)]
    assert [r["config"]["optim"]["seed"] for r in runs] == [0, 1]
    weights = [(tmp_path / "t" / f"seed-{k}" / "model" / "open_clip_model.safetensors").read_bytes() for k in (0, 1)]
    assert weights[0] != weights[1]  # another init and data order
    agg = read_json(tmp_path / "t" / "results_seeds.json")
    assert agg["config"]["seeds"] == [0, 1] and set(agg["metrics"]["per_seed"]["results.json"]) == {"0", "1"}
    assert main(train) == 0 and capsys.readouterr().out.count("reused") == 2  # finished seeds are not retrained
    model = tmp_path / "t" / "seed-0" / "model"
    ev = ["eval", "robust", "--model", str(model), "--data", str(w.test_manifest), "--classes", str(w.classes),
          "--attack", "pgd", "--eps", "2/255", "--n-samples", "12", "--out", str(tmp_path / "e"), "--seeds", "3,4"]
    assert main(ev) == 0
    per = [read_json(tmp_path / "e" / f"seed-{k}" / "results_robust.json") for k in (3, 4)]
    assert per[0]["seeds"] != per[1]["seeds"] and "3" in str(per[0]["seeds"])  # each seed's own record
    rows = read_json(tmp_path / "e" / "results_seeds.json")["metrics"]["tables"][0]["rows"]
    assert any("_spread" in r and r["_spread"] for r in rows)
    assert "±" in (tmp_path / "e" / "summary.md").read_text()


def test_claims_table_cells_are_text_and_an_unmeasured_claim_is_said_so():
    from mmrobust.reports.spread import claims_table

    claims = [Claim("a", "A", lambda m: m["x"], at_least=0.5), Claim("b", "B", lambda m: m["missing"], at_most=0.1)]
    checked = check_claims(claims, {0: {"x": 0.9}, 1: {"x": 0.905}})
    assert checked[1]["verdict"] == "not measured"
    rows = claims_table(checked)["rows"]
    assert rows[0]["sd"] == "0.4" and rows[0]["margin"] == "40.0"  # percent points, never rescaled again
    assert rows[1]["worst"] == "n/a"


def test_seeds_never_replace_a_summary_the_tool_did_not_write(tmp_path, micro_world, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "summary.md").write_text("my notes")
    args = ["train", "--task", "clip", "--model", "mmrobust-micro", "--data", str(micro_world.train_manifest),
            "--steps", "1", "--batch-size", "8", "--warmup", "1", "--quiet", "--out", str(out), "--seeds", "0,1"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "summary.md exists" in err and len(err.strip().splitlines()) == 1
    assert (out / "summary.md").read_text() == "my notes" and not (out / "seed-0").exists()  # refused up front
