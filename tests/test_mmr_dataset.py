"""MMR loading: the real files' quirks (reproduced on synthetic items) are tolerated and reported."""
from __future__ import annotations

import json
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mmrobust.eval.mmr import build_prompt, get_prompt, load_mmr, parse_options
from mmrobust.world.mmr import generate_mmr_world
from mmrobust.world.mmr import QUIRKS, apply_quirk, make_pair
from mmrobust.world.shapes import Scene
from mmrobust.errors import DataError

CLEAN = "What shape is the red object in the picture?\nA. It is a circle.\nB. It is a square.\nC. It is a star.\nD. It is a ring."


@pytest.mark.parametrize("kind", QUIRKS)
def test_each_quirk_parses_to_the_same_options(kind: str) -> None:
    clean = parse_options(CLEAN)
    assert clean.quirks == frozenset()
    quirky = parse_options(apply_quirk(CLEAN, kind))
    assert quirky.as_dict() == clean.as_dict()
    assert quirky.stem == clean.stem
    assert kind in quirky.quirks


def test_inline_options_without_dot_and_out_of_order_lines() -> None:
    p = parse_options("Which is the tragic work? A. Hamlet B The Merchant of Venice C Journey to the West. D. None.")
    assert p.as_dict() == {"A": "Hamlet", "B": "The Merchant of Venice", "C": "Journey to the West.", "D": "None."}
    assert {"options_inline", "missing_dot"} <= p.quirks
    p = parse_options("Is this cotton?\nA. a cloud.\nD. cotton.\nC. snow.\nB. a dandelion.")
    assert p.letters == ("A", "D", "C", "B") and "out_of_order" in p.quirks
    assert parse_options("Describe the picture.").quirks == {"options_unparsed"}


def _write(tmp: Path, rows: list[dict], images: list[str]) -> Path:
    for name in images:
        (tmp / "images" / name).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8)).save(tmp / "images" / name)
    (tmp / "q.json").write_text(json.dumps(rows))
    return tmp / "q.json"


def _rows(pid: str, gt_pos: str = "A", gt_neg: str = "B") -> list[dict]:
    return [{"id": pid, "image": f"{pid}.png", "question": CLEAN, "ground_truth": gt_pos, "question_type": "POS"},
            {"id": pid, "image": f"{pid}.png", "question": CLEAN, "ground_truth": gt_neg, "question_type": "NEG"}]


def test_anomalies_are_reported_and_bad_rows_left_out(tmp_path: Path) -> None:
    rows = _rows("attribute/shape/01") + _rows("attribute/shape/02") + _rows("attribute/shape/03")
    rows += _rows("attribute/shape/04") + _rows("attribute/shape/05")
    rows[3]["question_type"] = "POS"                       # 02: POS/POS
    rows[4]["image"] = "nowhere.png"                       # 03: image missing -> POS dropped, NEG unpaired
    rows[6]["ground_truth"] = "E"                          # 04: bad ground truth
    rows[8]["question"] = "Is it a star?\nA. yes\nB. no"   # 05 POS: A is listed, fine
    rows[9]["question"] = "Is it a star?\nA. yes\nB. no"
    rows[9]["ground_truth"] = "C"                          # 05 NEG: C not among A/B
    rows.append({"id": "attribute/shape/06", "question": CLEAN})  # missing fields
    qfile = _write(tmp_path, rows, [f"attribute/shape/0{k}.png" for k in (1, 2, 3, 4, 5)])
    data = load_mmr(qfile, expected_pairs=5)
    kinds = sorted((a["kind"], a["id"]) for a in data.anomalies)
    assert kinds == [
        ("bad_ground_truth", "attribute/shape/04"),
        ("ground_truth_not_in_options", "attribute/shape/05"),
        ("image_missing", "attribute/shape/03"),
        ("missing_field", "attribute/shape/06"),
        ("missing_partner", "attribute/shape/03"),
        ("missing_partner", "attribute/shape/04"),
        ("pair_count", None),
        ("pair_types", "attribute/shape/02"),
    ]
    assert [p.id for p in data.pairs] == ["attribute/shape/01", "attribute/shape/05"]
    assert all(Path(i.image).is_file() for i in data.items)


def test_tolerates_field_names_case_and_jsonl(tmp_path: Path) -> None:
    rows = [{"question_id": "context/relation/01", "img": "x.png", "prompt": CLEAN, "groundtruth": "(c)",
             "type": " pos "},
            {"question_id": "context/relation/01", "img": "x.png", "prompt": CLEAN, "groundtruth": "D.",
             "type": "negative"}]
    Image.new("RGB", (8, 8)).save(tmp_path / "x.png")
    (tmp_path / "q.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    data = load_mmr(tmp_path)
    assert data.anomalies == ()
    assert [(i.question_type, i.ground_truth) for i in data.paired_items()] == [("POS", "C"), ("NEG", "D")]
    assert data.quirks["ground_truth_format"] == 2
    assert data.pairs[0].pos.category == "context/relation" and data.pairs[0].pos.level == "context"


def test_unreadable_input_raises_a_data_error(tmp_path: Path) -> None:
    (tmp_path / "q.json").write_text("{not json")
    with pytest.raises(DataError, match="not valid JSON"):
        load_mmr(tmp_path / "q.json")
    with pytest.raises(DataError, match="does not exist"):
        load_mmr(tmp_path / "missing")


def test_synthetic_world_with_quirks_loads_and_reports_them(tmp_path: Path) -> None:
    qfile = generate_mmr_world(tmp_path / "w", pairs_per_category=4, seed=3, image_size=32, inject_quirks=True)
    data = load_mmr(qfile.parent)
    assert len(data.pairs) == 15  # 16 pairs, the last one turned into POS/POS
    assert [a["kind"] for a in data.anomalies] == ["pair_types"]
    for kind in QUIRKS:
        assert data.quirks.get(kind, 0) >= 1, kind
    for item in data.items:  # every question still parses to four options holding its answer
        assert sorted(dict(item.options)) == ["A", "B", "C", "D"]
        assert item.ground_truth in dict(item.options)


def test_synthetic_world_is_seeded_and_its_neg_questions_lead(tmp_path: Path) -> None:
    a = generate_mmr_world(tmp_path / "a", pairs_per_category=2, seed=0, image_size=32).read_bytes()
    b = generate_mmr_world(tmp_path / "b", pairs_per_category=2, seed=0, image_size=32).read_bytes()
    c = generate_mmr_world(tmp_path / "c", pairs_per_category=2, seed=1, image_size=32).read_bytes()
    assert a == b and a != c
    scene = Scene(shape="circle", color="red", count=1, size="large", position="top left", background="gray")
    pos, neg = sorted(make_pair("attribute/shape", scene, np.random.default_rng(0), "attribute/shape/01", "x.png"),
                      key=lambda r: r["question_type"] != "POS")
    pos_opts, neg_opts = parse_options(pos["question"]).as_dict(), parse_options(neg["question"]).as_dict()
    assert pos_opts[pos["ground_truth"]] == "It is a circle."
    assert neg_opts[neg["ground_truth"]].startswith("There is no ")          # rejects the false premise
    premise = re.fullmatch(r"What colour is the (\w+) in the picture\?", parse_options(neg["question"]).stem).group(1)
    assert premise != "circle"                                                 # the false premise
    assert f"The {premise} is red." in neg_opts.values()                       # the trap: true colour, false shape


def test_official_prompt_is_question_then_instruction(tmp_path: Path) -> None:
    data = load_mmr(generate_mmr_world(tmp_path, pairs_per_category=1, seed=0, image_size=16))
    item = data.items[0]
    assert build_prompt(item, get_prompt("official")) == (
        item.question + "\nAnswer with the option's letter from the given choices directly.")
    normalized = build_prompt(item, get_prompt("normalized"))
    assert normalized.splitlines()[1].startswith("A. ") and normalized.splitlines()[4].startswith("D. ")


def test_hub_version_loads_through_a_fake_download(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The hub path (no network here): files land in a snapshot folder, the zip is unpacked, the
    resolved commit and the pair-count check are recorded."""
    import huggingface_hub

    from mmrobust.eval.mmr.hub import VERSIONS, load_hub_version

    world = tmp_path / "world"
    generate_mmr_world(world, pairs_per_category=1, seed=0, image_size=16)
    sha = "0123456789abcdef0123456789abcdef01234567"
    snap = tmp_path / "hub" / "snapshots" / sha / "MMR-benchmark"
    snap.mkdir(parents=True)
    (snap / "MMR-benchmark.json").write_text((world / "questions.json").read_text())
    with zipfile.ZipFile(snap / "MMR-benchmark-images.zip", "w") as zf:
        for img in (world / "images").rglob("*.png"):
            zf.write(img, "MMR-benchmark-images/" + img.relative_to(world / "images").as_posix())
    calls = []

    def fake_download(repo_id, filename, *, repo_type, revision, cache_dir=None):
        calls.append((repo_id, filename, repo_type, revision))
        return str(snap.parent / filename)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    data = load_hub_version("v1")
    assert {c[3] for c in calls} == {VERSIONS["v1"].revision} and {c[2] for c in calls} == {"dataset"}
    assert data.source["resolved_commit"] == sha and data.source["version"] == "v1"
    assert len(data.pairs) == 4 and all(Path(i.image).is_file() for i in data.items)
    assert [a["kind"] for a in data.anomalies] == ["pair_count"]  # 4 pairs, v1 has 300
