"""MMR scoring on hand-built records: known RA/MR, any order, missing partners, micro pooling, CIs."""
from __future__ import annotations

import random

import numpy as np
import pytest

from mmrobust.eval.mmr.scoring import PairOutcomes, bootstrap_ci, compute_metrics, parse_records


def _row(pid: str, qtype: str, gt: str, reply: str | None, error: str | None = None) -> dict:
    level, cat, _ = pid.split("/")
    return {"id": pid, "question_type": qtype, "category": f"{level}/{cat}", "level": level,
            "ground_truth": gt, "response": reply, "error": error, "options": {}}


def _pair(pid: str, pos_right: bool, neg_right: bool) -> list[dict]:
    return [_row(pid, "POS", "A", "A" if pos_right else "B"), _row(pid, "NEG", "C", "C" if neg_right else "D")]


def _score(rows: list[dict], parser: str = "official", n_boot: int = 0, seed: int = 0) -> dict:
    return compute_metrics(parse_records(rows, parser), n_boot=n_boot, seed=seed)


def test_known_ra_and_mr() -> None:
    rows = (_pair("attribute/shape/01", True, True) + _pair("attribute/shape/02", True, False)
            + _pair("attribute/shape/03", False, True) + _pair("attribute/shape/04", False, False)
            + _pair("attribute/shape/05", True, False))
    o = _score(rows)["overall"]
    assert o["n_pairs"] == 5
    assert o["ra"] == pytest.approx(1 / 5)             # both right: pair 01
    assert o["mr"] == pytest.approx(2 / 3)             # POS right in 01, 02, 05; misled in 02, 05
    assert (o["n_both_right"], o["n_pos_right"], o["n_misled"]) == (1, 3, 2)
    assert o["pos_acc"] == pytest.approx(3 / 5) and o["neg_acc"] == pytest.approx(2 / 5)


def test_file_order_does_not_matter_and_pairs_are_matched_by_id() -> None:
    rows = []
    for k, (p, n) in enumerate([(True, True), (True, False), (False, True), (True, True), (False, False)]):
        rows += _pair(f"context/relation/{k:02d}", p, n)
    base = _score(rows)["overall"]
    for seed in range(3):
        shuffled = rows[:]
        random.Random(seed).shuffle(shuffled)
        got = _score(shuffled)["overall"]
        assert (got["ra"], got["mr"], got["n_pairs"]) == (base["ra"], base["mr"], base["n_pairs"])
    # The reference scorer walks the file two rows at a time; one dropped row shifts every later pair.
    dropped = rows[1:]  # first pair loses its NEG
    got = _score(dropped)
    assert got["overall"]["n_pairs"] == 4
    assert got["overall"]["ra"] == pytest.approx(1 / 4)  # pairs 01..04: only 03 has both right
    assert [a["kind"] for a in got["pairing_anomalies"]] == ["missing_partner"]


def test_missing_partners_and_bad_pairs_are_reported_not_scored() -> None:
    rows = _pair("attribute/color&texture/01", True, True)
    rows.append(_row("attribute/color&texture/02", "POS", "A", "A"))                     # no NEG
    rows += [_row("attribute/number/04", "POS", "A", "A"), _row("attribute/number/04", "POS", "B", "B")]  # POS/POS
    rows += _pair("attribute/number/05", True, False) + [_row("attribute/number/05", "NEG", "C", "C")]  # 3 rows
    m = _score(rows)
    kinds = {a["id"]: a["kind"] for a in m["pairing_anomalies"]}
    assert kinds == {"attribute/color&texture/02": "missing_partner", "attribute/number/04": "pair_types",
                     "attribute/number/05": "duplicate"}
    assert m["overall"]["n_pairs"] == 1 and m["overall"]["ra"] == 1.0
    assert "attribute/number" not in m["per_category"]  # no valid pair left there


def test_pooled_numbers_are_micro_not_mean_of_categories() -> None:
    rows = _pair("attribute/shape/01", True, True)                                  # RA 1/1
    rows += sum((_pair(f"context/expert/{k:02d}", True, False) for k in range(3)), [])  # RA 0/3, MR 3/3
    m = _score(rows)
    assert m["per_category"]["attribute/shape"]["ra"] == 1.0
    assert m["per_category"]["context/expert"]["ra"] == 0.0
    assert m["overall"]["ra"] == pytest.approx(1 / 4)   # macro mean would be 0.5
    assert m["overall"]["mr"] == pytest.approx(3 / 4)   # macro mean would be 0.5
    assert m["per_level"]["attribute"]["n_pairs"] == 1 and m["per_level"]["context"]["n_pairs"] == 3
    assert m["per_level"]["context"]["mr"] == 1.0


def test_unparseable_is_wrong_and_errors_are_left_out() -> None:
    rows = [_row("character/character/01", "POS", "A", "A"), _row("character/character/01", "NEG", "B", "(B)"),
            _row("character/character/02", "POS", "A", "A"), _row("character/character/02", "NEG", "B", None, "HTTP 500"),
            _row("character/character/03", "POS", "A", "A"), _row("character/character/03", "NEG", "B", "B")]
    m = _score(rows, "official")
    assert m["item_status"] == {"correct": 4, "wrong": 0, "unparseable": 1, "error": 1}
    o = m["overall"]
    assert o["n_pairs"] == 2 and o["n_pairs_error"] == 1 and o["n_unparseable"] == 1
    assert o["ra"] == pytest.approx(1 / 2) and o["mr"] == pytest.approx(1 / 2)  # unparseable NEG = misled
    lenient = _score(rows, "lenient")["overall"]
    assert lenient["ra"] == 1.0 and lenient["mr"] == 0.0  # "(B)" reads as B under lenient
    parsed = parse_records(rows, "official")
    assert [r["pred"] for r in parsed] == ["A", None, "A", None, "A", "B"]  # never a fake letter


def test_mr_is_none_without_a_right_pos() -> None:
    m = _score(_pair("attribute/shape/01", False, True))
    assert m["overall"]["mr"] is None and m["overall"]["ra"] == 0.0


def test_bootstrap_is_seeded_and_brackets_the_estimate() -> None:
    rows = []
    rng = random.Random(0)
    for k in range(60):
        rows += _pair(f"attribute/shape/{k:02d}", rng.random() < 0.7, rng.random() < 0.5)
    a = _score(rows, n_boot=500, seed=1)["overall"]
    b = _score(rows, n_boot=500, seed=1)["overall"]
    c = _score(rows, n_boot=500, seed=2)["overall"]
    assert a["ra_ci"] == b["ra_ci"] and a["mr_ci"] == b["mr_ci"]
    assert a["ra_ci"] != c["ra_ci"] or a["mr_ci"] != c["mr_ci"]
    assert 0 <= a["ra_ci"][0] <= a["ra"] <= a["ra_ci"][1] <= 1
    assert 0 <= a["mr_ci"][0] <= a["mr"] <= a["mr_ci"][1] <= 1
    assert _score(rows, n_boot=0)["overall"]["ra_ci"] is None


def test_bootstrap_matches_a_naive_loop() -> None:
    gen = np.random.default_rng(3)
    pos = gen.random(40) < 0.6
    neg = gen.random(40) < 0.5
    o = PairOutcomes(both=pos & neg, pos_right=pos, misled=pos & ~neg)
    ra_ci, mr_ci = bootstrap_ci(o, n_boot=300, seed=7)
    idx = np.random.default_rng(7).integers(0, 40, size=(300, 40))
    ras, mrs = [], []
    for row in idx:  # one resample at a time, plain Python
        p = [bool(pos[i]) for i in row]
        n = [bool(neg[i]) for i in row]
        ras.append(sum(a and b for a, b in zip(p, n)) / 40)
        if sum(p):
            mrs.append(sum(a and not b for a, b in zip(p, n)) / sum(p))
    assert ra_ci == pytest.approx([np.percentile(ras, 2.5), np.percentile(ras, 97.5)])
    assert mr_ci == pytest.approx([np.percentile(mrs, 2.5), np.percentile(mrs, 97.5)])
