"""Reference-compatible MMR pairing (by file position, as the leaderboard): a synthetic question file
with v1's quirk (one pair tagged POS/POS, NEG-first pairs), scripted answers, RA/MR by hand."""
from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import pytest

from mmrobust.cli.main import main
from mmrobust.errors import ConfigError
from mmrobust.eval.mmr import RunSettings, load_mmr, parse_records, run_mmr, score_responses
from mmrobust.eval.mmr import reference
from mmrobust.eval.mmr.reference import KNOWN_FILES, known_file, pair_by_position
from mmrobust.eval.mmr.scoring import PAIRINGS, compute_metrics
from mmrobust.eval.mmr.pairing import PAIRING_MODES
from mmrobust.models.mllm.scripted import ScriptedAdapter

Q = "How many?\nA. one\nB. two\nC. three\nD. four"
# (id, type, ground truth, scripted reply), in file order. Pair 03 is v1's quirk: both rows tagged POS
# (the second is really the leading one); pairs 02 and relation/02 come NEG first, as 155 of v1's do.
ROWS = [
    ("attribute/number/01", "POS", "A", "A"), ("attribute/number/01", "NEG", "C", "D"),   # POS right, NEG wrong
    ("attribute/number/02", "NEG", "B", "B"), ("attribute/number/02", "POS", "D", "D"),   # both right
    ("attribute/number/03", "POS", "A", "B"), ("attribute/number/03", "POS", "C", "C"),   # POS/POS: 1 wrong, 2 right
    ("attribute/number/04", "POS", "B", "B"), ("attribute/number/04", "NEG", "A", "A"),   # both right
    ("context/relation/01", "POS", "C", "A"), ("context/relation/01", "NEG", "D", "A"),   # both wrong
    ("context/relation/02", "NEG", "A", "B"), ("context/relation/02", "POS", "C", "C"),   # POS right, NEG wrong
]
QUIRK_UIDS = ("attribute/number/03|POS", "attribute/number/03|POS#5")  # duplicates get #<row index>


def _uid(k: int) -> str:
    pid, qtype = ROWS[k][:2]
    dup = any(ROWS[j][:2] == (pid, qtype) for j in range(k))
    return f"{pid}|{qtype}#{k}" if dup else f"{pid}|{qtype}"


def _write_world(root: Path) -> tuple[Path, Path]:
    """questions.json + images/ + answers.json (uid -> reply) under ``root``."""
    (root / "images").mkdir(parents=True)
    questions = []
    for k, (pid, qtype, gt, _) in enumerate(ROWS):  # a pair shares its image; each row asks its own question
        image = f"{pid.replace('/', '_')}.png"
        (root / "images" / image).write_bytes(f"{pid}: not decoded by the scripted adapter".encode())
        questions.append({"id": pid, "image": image, "question": f"Row {k}. {Q}", "ground_truth": gt,
                          "question_type": qtype})
    (root / "questions.json").write_text(json.dumps(questions, indent=1))
    answers = {_uid(k): reply for k, (*_, reply) in enumerate(ROWS)}
    assert set(QUIRK_UIDS) <= set(answers)
    (root / "answers.json").write_text(json.dumps(answers))
    return root / "questions.json", root / "answers.json"


def _rows(order: list[int] | None = None) -> list[dict]:
    out = []
    for k in order if order is not None else range(len(ROWS)):
        pid, qtype, gt, reply = ROWS[k]
        level, cat, _ = pid.split("/")
        out.append({"uid": _uid(k), "id": pid, "question_type": qtype, "category": f"{level}/{cat}", "level": level,
                    "ground_truth": gt, "response": reply, "error": None, "options": {}})
    return out


# By id: pair 03 (POS/POS) is an anomaly and left out; 5 pairs remain (01, 02, 04, rel/01, rel/02).
#   both right: 02, 04 -> 2;  POS right: 01, 02, 04, rel/02 -> 4;  misled (POS right, NEG wrong): 01, rel/02 -> 2
#   RA = 2/5, MR = 2/4
BY_ID = {"n_pairs": 5, "ra": Fraction(2, 5), "mr": Fraction(2, 4)}
# By position (the reference): 6 pairs. Pair 03: first (POS) wrong, second (POS) right -> misled, since the
# reference counts "one wrong, the other right and tagged POS" as misled in either order.
#   both right: 02, 04 -> 2;  misled: 01, 03, rel/02 -> 3;  MR denominator = both + misled = 5
#   RA = 2/6, MR = 3/5;  attribute/number: RA 2/4, MR 2/4;  context/relation: RA 0/2, MR 1/1
BY_POSITION = {"n_pairs": 6, "ra": Fraction(2, 6), "mr": Fraction(3, 5)}


def _check(overall: dict, expected: dict) -> None:
    assert overall["n_pairs"] == expected["n_pairs"]
    assert overall["ra"] == pytest.approx(float(expected["ra"]))
    assert overall["mr"] == pytest.approx(float(expected["mr"]))


def _naive_reference(rows: list[dict]) -> tuple[float, float, int]:
    """The reference scorer's loop, restated: rows two at a time in file order, tags read per row."""
    right = [r["status"] == "correct" for r in rows]
    both = misled = 0
    for i in range(0, len(rows), 2):
        a, b = right[i], right[i + 1]
        if a and b:
            both += 1
        elif ((a and not b and rows[i]["question_type"] == "POS")
              or (not a and b and rows[i + 1]["question_type"] == "POS")):
            misled += 1
    return both / (len(rows) / 2), misled / (both + misled), len(rows) // 2


def test_by_id_leaves_the_pos_pos_pair_out_and_by_position_counts_it() -> None:
    parsed = parse_records(_rows(), "official")
    by_id = compute_metrics(parsed, n_boot=0)
    _check(by_id["overall"], BY_ID)
    assert by_id["pairing"] == "id" and "reference_corrections" not in by_id
    assert [(a["kind"], a["id"]) for a in by_id["pairing_anomalies"]] == [("pair_types", "attribute/number/03")]
    ref = compute_metrics(parsed, n_boot=0, pairing="reference")
    _check(ref["overall"], BY_POSITION)
    assert ref["pairing"] == "reference" and ref["pairing_anomalies"] == [] and ref["n_neg_first"] == 2
    (fix,) = ref["reference_corrections"]
    assert (fix["kind"], fix["id"], fix["types"], fix["positions"]) == ("pair_types", "attribute/number/03",
                                                                       ["POS", "POS"], [4, 5])
    assert "exactly one is right" in fix["action"]
    num, rel = ref["per_category"]["attribute/number"], ref["per_category"]["context/relation"]
    assert (num["n_pairs"], num["ra"], num["mr"]) == (4, pytest.approx(float(Fraction(2, 4))), pytest.approx(0.5))
    assert (rel["n_pairs"], rel["ra"], rel["mr"]) == (2, 0.0, 1.0)
    ra, mr, n = _naive_reference(parsed)
    assert (ref["overall"]["ra"], ref["overall"]["mr"], ref["overall"]["n_pairs"]) == (pytest.approx(ra),
                                                                                     pytest.approx(mr), n)


def test_by_position_on_pos_neg_pairs_equals_by_id() -> None:
    order = [0, 1, 2, 3, 6, 7, 8, 9, 10, 11]  # drop the quirky pair: every position pair is a valid id pair
    parsed = parse_records(_rows(order), "official")
    a, b = compute_metrics(parsed, n_boot=50, seed=1), compute_metrics(parsed, n_boot=50, seed=1, pairing="reference")
    assert a["overall"] == b["overall"] and a["per_category"] == b["per_category"]
    assert b["reference_corrections"] == [] and tuple(PAIRINGS) == PAIRING_MODES


def test_position_pairing_lists_id_mismatches_and_an_odd_last_row() -> None:
    rows = [("x/a/1", "POS"), ("x/a/2", "NEG"), ("x/a/2", "POS"), ("x/a/3", "NEG"), ("x/a/3", "POS")]
    got = pair_by_position(rows, id_of=lambda r: r[0], type_of=lambda r: r[1])
    assert [(p.id, p.pos, p.neg) for p in got.pairs] == [("x/a/1", rows[0], rows[1]), ("x/a/2", rows[2], rows[3])]
    assert [(c["kind"], c["ids"]) for c in got.corrections] == [("id_mismatch", ["x/a/1", "x/a/2"]),
                                                                ("id_mismatch", ["x/a/2", "x/a/3"])]
    assert all("first row's id and category" in c["action"] for c in got.corrections)
    assert [(a["kind"], a["id"], a["position"]) for a in got.anomalies] == [("odd_row", "x/a/3", 4)]


def test_unknown_pairing_is_a_one_line_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown MMR pairing 'file'; choose one of: id, reference"):
        RunSettings(pairing="file")
    with pytest.raises(ConfigError, match="unknown MMR pairing"):
        compute_metrics([], pairing="position")
    with pytest.raises(ConfigError, match="unknown MMR pairing"):
        score_responses(tmp_path / "x.jsonl", out_dir=tmp_path / "o", pairing="bogus")


def test_known_files_recognise_by_sha256(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    v1 = next(sha for sha, e in KNOWN_FILES.items() if e["name"] == "v1")
    assert len(v1) == 64 and known_file(v1)["recognised"] and known_file(v1)["known"]["n_position_pairs"] == 300
    assert known_file(None) == {"questions_sha256": None, "recognised": False, "known_as": None}
    qfile, answers = _write_world(tmp_path / "w")
    data = load_mmr(qfile)
    adapter = ScriptedAdapter(model=f"file:{answers}")
    rec = run_mmr(data, adapter, out_dir=tmp_path / "a", settings=RunSettings(n_boot=0))
    assert rec["questions_file"]["recognised"] is False
    sha = data.source["questions_sha256"]
    monkeypatch.setitem(reference.KNOWN_FILES, sha, {"name": "synthetic", "n_position_pairs": 6})
    rec = run_mmr(data, adapter, out_dir=tmp_path / "b", settings=RunSettings(n_boot=0, pairing="reference"))
    assert rec["questions_file"] == {"questions_sha256": sha, "recognised": True, "known_as": "synthetic",
                                     "known": {"name": "synthetic", "n_position_pairs": 6}}


def test_reference_run_asks_every_row_in_file_order_and_records_the_mode(tmp_path: Path) -> None:
    qfile, answers = _write_world(tmp_path / "w")
    data = load_mmr(qfile)
    assert len(data.pairs) == 5 and len(data.items) == 12
    adapter = ScriptedAdapter(model=f"file:{answers}")
    rec = run_mmr(data, adapter, out_dir=tmp_path / "ref", settings=RunSettings(n_boot=0, pairing="reference"))
    assert adapter.calls == [_uid(k) for k in range(len(ROWS))]  # file order, the POS/POS pair included
    _check(rec["metrics"]["overall"], BY_POSITION)
    saved = json.loads((tmp_path / "ref" / "results_mmr.json").read_text())
    assert saved["metrics"]["pairing"] == "reference" and saved["config"]["pairing"] == "reference"
    assert saved["config"]["settings"]["pairing"] == "reference"
    assert [c["id"] for c in saved["metrics"]["reference_corrections"]] == ["attribute/number/03"]
    assert all(v["n_pairs"] == 6 for v in saved["metrics"]["by_parser"].values())
    samples = [json.loads(x) for x in (tmp_path / "ref" / "samples_mmr.jsonl").read_text().splitlines()]
    assert [s["index"] for s in samples] == list(range(12))
    by_id = run_mmr(data, ScriptedAdapter(model=f"file:{answers}"), out_dir=tmp_path / "id",
                    settings=RunSettings(n_boot=0))
    _check(by_id["metrics"]["overall"], BY_ID)
    assert by_id["metrics"]["pairing"] == "id" and by_id["config"]["pairing"] == "id"
    asked = {json.loads(x)["uid"] for x in (tmp_path / "id" / "samples_mmr.jsonl").read_text().splitlines()}
    assert len(asked) == 10 and not set(QUIRK_UIDS) & asked  # by id, the POS/POS pair is not even asked


def test_limit_counts_pairs_by_position_in_reference_mode(tmp_path: Path) -> None:
    data = load_mmr(_write_world(tmp_path / "w")[0])
    cut = data.select(3, pairing="reference")
    assert [i.index for i in cut.items] == list(range(6)) and [p.id for p in cut.pairs] == [
        "attribute/number/01", "attribute/number/02"]
    assert cut.source["limit_by"] == "file position" and data.select(3).pairs == data.pairs[:3]


def test_cli_run_and_score_with_pairing_reference(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    qfile, answers = _write_world(tmp_path / "w")
    out = tmp_path / "run"
    assert main(["mmr", "run", "--data", str(qfile), "--adapter", "scripted", "--model", f"file:{answers}",
                 "--out", str(out), "--bootstrap", "0", "--pairing", "reference"]) == 0
    printed = capsys.readouterr().out
    assert "pairing reference: 6 pairs scored, 1 paired by position despite ids/tags" in printed
    rec = json.loads((out / "results_mmr.json").read_text())
    _check(rec["metrics"]["overall"], BY_POSITION)
    assert rec["config"]["settings"]["pairing"] == "reference"
    samples = out / "samples_mmr.jsonl"
    assert main(["mmr", "score", str(samples), "--bootstrap", "0", "--pairing", "reference"]) == 0
    rescored = json.loads((out / "rescored-official-reference" / "results_mmr.json").read_text())
    _check(rescored["metrics"]["overall"], BY_POSITION)
    assert rescored["metrics"]["pairing"] == "reference" and rescored["config"]["pairing"] == "reference"
    assert rescored["questions_file"]["recognised"] is False
    assert main(["mmr", "score", str(samples), "--bootstrap", "0"]) == 0  # default: by id, its own folder
    by_id = json.loads((out / "rescored-official" / "results_mmr.json").read_text())
    _check(by_id["metrics"]["overall"], BY_ID)
    assert by_id["metrics"]["pairing"] == "id"
    with pytest.raises(SystemExit) as bad:
        main(["mmr", "score", str(samples), "--pairing", "file"])
    assert bad.value.code == 2
    assert "invalid choice: 'file'" in capsys.readouterr().err


def test_reference_format_answer_file_is_paired_in_file_order(tmp_path: Path) -> None:
    """The reference answer JSONL (question_id, text, groundtruth, question_type), in the question file's order."""
    path = tmp_path / "answers.jsonl"
    path.write_text("".join(json.dumps({"question_id": pid, "prompt": Q, "text": reply, "groundtruth": gt,
                                        "question_type": qtype}) + "\n" for pid, qtype, gt, reply in ROWS))
    ref = score_responses(path, out_dir=tmp_path / "ref", n_boot=0, pairing="reference")
    _check(ref["metrics"]["overall"], BY_POSITION)
    by_id = score_responses(path, out_dir=tmp_path / "id", n_boot=0)
    _check(by_id["metrics"]["overall"], BY_ID)


def test_300_pair_file_with_v1s_quirk_gives_the_leaderboard_denominator() -> None:
    """300 pairs, one tagged POS/POS like v1's attribute/number/04. Pair k: POS right always; its leading
    question right when k % 3 == 0 (100 pairs), wrong otherwise. The quirk pair (k = 37): first row right,
    second (the real leading one, tagged POS) wrong. Hand count:
      by id: the quirk pair is left out -> 299 pairs, both right 100, misled 199: RA 100/299, MR 199/299;
      by position: 300 pairs, both right 100, misled 200 (quirk pair: one right, one wrong): RA 1/3, MR 2/3."""
    rows = []
    for k in range(300):
        pid = f"attribute/number/{k:03d}"
        neg_type = "POS" if k == 37 else "NEG"
        neg_reply = "B" if k % 3 == 0 else "C"
        for qtype, gt, reply in (("POS", "A", "A"), (neg_type, "B", neg_reply)):
            uid = f"{pid}|{qtype}" + ("#1" if k == 37 and reply != "A" else "")
            rows.append({"uid": uid, "id": pid, "question_type": qtype, "category": "attribute/number",
                         "level": "attribute", "ground_truth": gt, "response": reply, "error": None, "options": {}})
    parsed = parse_records(rows, "official")
    by_id = compute_metrics(parsed, n_boot=0)
    _check(by_id["overall"], {"n_pairs": 299, "ra": Fraction(100, 299), "mr": Fraction(199, 299)})
    assert [a["id"] for a in by_id["pairing_anomalies"]] == ["attribute/number/037"]
    ref = compute_metrics(parsed, n_boot=0, pairing="reference")
    _check(ref["overall"], {"n_pairs": 300, "ra": Fraction(1, 3), "mr": Fraction(2, 3)})
    assert [c["id"] for c in ref["reference_corrections"]] == ["attribute/number/037"]
