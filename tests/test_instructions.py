"""The instruction JSONL format and the MMR training-set generator (leading twins, balance, no eval leakage)."""
from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from pathlib import Path

import pytest

from mmrobust.data.instructions import ROLES, Turn, load_instructions, to_chat, to_record, write_instructions
from mmrobust.errors import DataError
from mmrobust.world.mmr import generate_mmr_world
from mmrobust.world.mmr_train import facts_to_pairs, generate_mmr_training_set
from mmrobust.world.shapes import Scene, render_scene

NUMBER = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5}


@pytest.fixture(scope="module")
def train_set(tmp_path_factory) -> Path:
    return generate_mmr_training_set(tmp_path_factory.mktemp("mt"), n_images=200, seed=3, leading_share=1.0)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    render_scene(Scene("circle", "red", 1, "small", "center", "black"), image_size=16).save(tmp_path / "a.png")
    return tmp_path


def _write(folder: Path, *lines: object) -> Path:
    p = folder / "data.jsonl"
    p.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    return p


def test_round_trip_both_forms(folder: Path) -> None:
    conv = [{"role": "user", "content": "hi?"}, {"role": "assistant", "content": "yes"},
            {"role": "user", "content": "and?"}, {"role": "assistant", "content": "no"}]
    p = _write(folder, {"id": "x1", "image": "a.png", "question": "Q?", "answer": "A. a", "meta": {"k": [1, 2]}},
               "", {"id": "x2", "image": "./a.png", "conversations": conv})
    items = load_instructions(p)
    assert [i.id for i in items] == ["x1", "x2"] and items[0].meta == {"k": [1, 2]}
    assert items[0].conversations == (Turn("user", "Q?"), Turn("assistant", "A. a"))
    assert items[1].question == "hi?" and items[1].answer == "no" and items[1].image_path.is_file()
    again = load_instructions(write_instructions(folder / "copy.jsonl", items))
    assert again == items
    chat = to_chat(items[1])
    assert chat[0]["content"][0] == {"type": "image"} and chat[0]["content"][1]["text"] == "hi?"
    assert all(m["content"][0]["type"] == "text" for m in chat[1:])


GOOD = {"id": "x", "image": "a.png", "question": "Q?", "answer": "A"}
BAD = [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "expected a JSON object"),
    ({k: v for k, v in GOOD.items() if k != "id"}, "'id' must be a non-empty string"),
    ({**GOOD, "id": ""}, "'id' must be a non-empty string"),
    ({**GOOD, "id": 3}, "'id' must be a non-empty string"),
    ({**GOOD, "image": None}, "'image' must be a non-empty string"),
    ({**GOOD, "answer": "  "}, "'answer' must be a non-empty string"),
    ({"id": "x", "image": "a.png"}, "no 'conversations'"),
    ({**GOOD, "conversations": []}, "both 'conversations'"),
    ({**GOOD, "meta": [1]}, "'meta' must be an object"),
    ({**GOOD, "answers": "A"}, "unknown field"),
    ({"id": "x", "image": "a.png", "conversations": "hi"}, "must be a list"),
    ({"id": "x", "image": "a.png", "conversations": [{"role": "assistant", "content": "a"},
                                                     {"role": "user", "content": "b"}]}, "'user' was due"),
    ({"id": "x", "image": "a.png", "conversations": [{"role": "user", "content": "a"},
                                                     {"role": "user", "content": "b"}]}, "'assistant' was due"),
    ({"id": "x", "image": "a.png", "conversations": [{"role": "user", "content": "a"},
                                                     {"role": "assistant", "content": "b"},
                                                     {"role": "user", "content": "c"}]}, "no reply"),
    ({"id": "x", "image": "a.png", "conversations": [{"role": "system", "content": "a"},
                                                     {"role": "assistant", "content": "b"}]}, "role 'system'"),
    ({"id": "x", "image": "a.png", "conversations": [{"role": "user"}, {"role": "assistant", "content": "b"}]},
     "exactly 'role' and 'content'"),
    ({"id": "x", "image": "a.png", "conversations": [{"role": "user", "content": 5},
                                                     {"role": "assistant", "content": "b"}]}, "'content'"),
    ({**GOOD, "image": "missing.png"}, "not found"),
    ({**GOOD, "image": "."}, "not a regular file"),
    ({**GOOD, "image": "../a.png"}, "points outside"),
    ({**GOOD, "id": "first"}, "duplicate id 'first' (first on line 1)"),
    ('{"id": "x", "image": "a.png", "question": "what \\udcff?", "answer": "A"}', "\\udcff, which is not text"),
    ({**GOOD, "meta": {"note": "\udcfe"}}, "\\udcfe, which is not text"),
    ({**GOOD, "question": "what " * 300_000}, "'question' is 1,500,000 characters, more than the 16,384"),
    ({"id": "x", "image": "a.png", "conversations": [{"role": r, "content": "a"} for r in ROLES * 40]},
     "2 to 64 turns"),
]


@pytest.mark.parametrize("line,needle", BAD, ids=[str(i) for i in range(len(BAD))])
def test_bad_lines_are_one_line_errors_naming_the_line(folder: Path, line: object, needle: str) -> None:
    p = _write(folder, {**GOOD, "id": "first"}, line)
    with pytest.raises(DataError) as e:
        load_instructions(p)
    msg = str(e.value)
    assert "\n" not in msg and f"{p}:2:" in msg and needle in msg and ";" in msg


def test_empty_file_and_path_escapes(folder: Path, tmp_path_factory) -> None:
    with pytest.raises(DataError, match="no instructions"):
        load_instructions(_write(folder, ""))
    outside = tmp_path_factory.mktemp("outside")
    (outside / "b.png").write_bytes((folder / "a.png").read_bytes())
    os.symlink(outside / "b.png", folder / "link.png")
    for image in (str(outside / "b.png"), "../" + outside.name + "/b.png", "link.png"):
        p = _write(folder, {**GOOD, "image": image})
        with pytest.raises(DataError, match=r"data.jsonl:1: image .*(absolute|points outside)"):
            load_instructions(p)
        assert load_instructions(p, allow_outside=True)[0].image_path.resolve() == (outside / "b.png").resolve()


def test_leading_twins_have_false_premises_and_reject_them(train_set: Path) -> None:
    items = load_instructions(train_set)
    assert len(items) == 400 and all(i.id.startswith("train/") for i in items)
    for it in items:
        m, scene = it.meta, it.meta["scene"]
        assert it.answer == f"{m['letter']}. {m['options'][m['letter']]}"
        assert f"\n{it.answer}" in it.question
        if m["question_type"] == "POS":
            truth = scene[m["asks"]]
            word = {v: k for k, v in NUMBER.items()}[truth] if m["asks"] == "count" else truth
            assert word in it.answer.split(" ", 1)[1]
            others = [t for k, t in m["options"].items() if k != m["letter"]]
            assert all(f" {word}." not in t for t in others)
            continue
        attr, value = m["premise"]["attribute"], m["premise"]["value"]
        assert scene[attr] != value, it.id  # the premise is false
        shown = {v: k for k, v in NUMBER.items()}[value] if attr == "count" else value
        assert shown in it.question.split("\n")[0]
        text = it.answer.split(" ", 1)[1]
        assert shown in text and ("There is no" in text or ", not " in text)
        true_word = {v: k for k, v in NUMBER.items()}[scene[attr]] if attr == "count" else scene[attr]
        assert true_word in text  # and names what is really there
        assert all(" not " not in t and "There is no" not in t
                   for k, t in m["options"].items() if k != m["letter"])


def test_letters_balanced(train_set: Path) -> None:
    items = load_instructions(train_set)
    for qtype in ("POS", "NEG"):
        letters = Counter(i.meta["letter"] for i in items if i.meta["question_type"] == qtype)
        assert set(letters) == set("ABCD") and all(0.15 <= c / 200 <= 0.35 for c in letters.values()), letters


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_seeds_repeat_and_differ_and_control_shares_pos_rows(tmp_path: Path) -> None:
    a = generate_mmr_training_set(tmp_path / "a", n_images=12, seed=5).parent
    b = generate_mmr_training_set(tmp_path / "b", n_images=12, seed=5).parent
    c = generate_mmr_training_set(tmp_path / "c", n_images=12, seed=6).parent
    ctl = generate_mmr_training_set(tmp_path / "ctl", n_images=12, seed=5, leading_share=0.0)
    assert _digest(a) == _digest(b)
    assert _digest(a)["train.jsonl"] != _digest(c)["train.jsonl"]
    assert _digest(a)["images/000001.png"] != _digest(c)["images/000001.png"]
    rows = load_instructions(a / "train.jsonl")
    assert Counter(r.meta["question_type"] for r in rows) == {"POS": 12, "NEG": 6}
    control = load_instructions(ctl)
    assert all(r.meta["question_type"] == "POS" for r in control)
    assert [to_record(r) for r in control] == [to_record(r) for r in rows if r.meta["question_type"] == "POS"]
    assert _digest(ctl.parent)["images/000007.png"] == _digest(a)["images/000007.png"]


def test_no_collision_with_the_evaluation_set(tmp_path: Path) -> None:
    qfile = generate_mmr_world(tmp_path / "eval", pairs_per_category=6, seed=0, image_size=32)
    eval_ids = {r["id"] for r in json.loads(qfile.read_text())}
    eval_pixels = {hashlib.sha256(p.read_bytes()).hexdigest() for p in (qfile.parent / "images").rglob("*.png")}
    for seed in (0, 1):
        out = generate_mmr_training_set(tmp_path / f"t{seed}", n_images=48, seed=seed, image_size=32)
        items = load_instructions(out)
        ids = {i.id for i in items} | {i.meta["pair"] for i in items}
        assert not ids & eval_ids and not any(i.count("/") == 2 and not i.startswith("train/") for i in ids)
        train_pixels = {hashlib.sha256(p.read_bytes()).hexdigest() for p in (out.parent / "images").glob("*.png")}
        assert not train_pixels & eval_pixels


def test_facts_to_pairs(folder: Path) -> None:
    (folder / "imgs").mkdir()
    (folder / "imgs" / "b.png").write_bytes((folder / "a.png").read_bytes())
    facts = folder / "facts.jsonl"
    facts.write_text(json.dumps({"image": "a.png", "facts": {"shape": "circle", "color": "red", "position": "center"}})
                     + "\n\n" + json.dumps({"image": "imgs/b.png", "facts": {"shape": "cube", "colour": "teal",
                                                                             "count": 7}}) + "\n")
    rows = facts_to_pairs(facts, seed=1)
    assert [r["meta"]["category"] for r in rows if r["meta"]["question_type"] == "POS"] == [
        "attribute/shape", "attribute/color&texture", "attribute/position", "attribute/number"]
    assert len(rows) == 8 and len({r["id"] for r in rows}) == 8
    items = load_instructions(write_instructions(folder / "train.jsonl", rows))
    seven = [i for i in items if i.meta["category"] == "attribute/number"]
    assert "seven" in seven[0].answer and seven[1].meta["premise"]["value"] != 7 and "not" in seven[1].answer
    assert all(i.meta["scene"]["colour"] in ("red", "teal") for i in items)
    assert facts_to_pairs(facts, seed=1) == rows and facts_to_pairs(facts, seed=2) != rows
    assert all(r["meta"]["question_type"] == "POS" for r in facts_to_pairs(facts, leading_share=0.0))


@pytest.mark.parametrize("line,needle", [
    ("nope", "not valid JSON"),
    ({"image": "a.png"}, "exactly 'image' and 'facts'"),
    ({"image": "a.png", "facts": {"colour": "red"}}, "'shape'"),
    ({"image": "a.png", "facts": {"shape": "circle", "colour": "red", "count": 0}}, "'count'"),
    ({"image": "a.png", "facts": {"shape": "circle", "colour": "red", "position": "up"}}, "'position'"),
    ({"image": "a.png", "facts": {"shape": "circle", "colour": "red", "mood": "sad"}}, "unknown fact"),
    ({"image": "../a.png", "facts": {"shape": "circle", "colour": "red"}}, "points outside"),
    ({"image": "no.png", "facts": {"shape": "circle", "colour": "red"}}, "not found"),
])
def test_facts_bad_lines(folder: Path, line: object, needle: str) -> None:
    p = folder / "facts.jsonl"
    p.write_text(json.dumps({"image": "a.png", "facts": {"shape": "star", "colour": "red"}}) + "\n"
                 + (line if isinstance(line, str) else json.dumps(line)) + "\n")
    with pytest.raises(DataError) as e:
        facts_to_pairs(p)
    assert "\n" not in str(e.value) and f"{p}:2:" in str(e.value) and needle in str(e.value)


def test_instruction_rows_with_bad_bytes_megabyte_prompts_or_huge_images_never_reach_the_model(folder, tmp_path,
                                                                                               capsys):
    """Raw bytes that are not UTF-8 and a megabyte prompt stop `train --task mllm-sft` in one line naming the
    file (no 90 GB allocation, no tokenizer TypeError); an image whose header claims 10^10 pixels is skipped
    before it is decoded and listed in results.json."""
    import struct
    import zlib

    from mmrobust.cli.main import main
    from mmrobust.world.llava import build_tiny_llava

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    (folder / "huge.png").write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 10**5, 10**5, 8, 2,
                                                                                          0, 0, 0))
                                      + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))
    llava = build_tiny_llava(tmp_path / "llava", seed=0, image_size=32)
    good = "".join(json.dumps({**GOOD, "id": f"g{i}"}) + "\n" for i in range(3)).encode()
    files = {"bytes": good + b'{"id": "x", "image": "a.png", "question": "what \xff?", "answer": "A"}\n',
             "mega": good + (json.dumps({**GOOD, "id": "x", "question": "what " * 300_000}) + "\n").encode(),
             "huge": good + (json.dumps({**GOOD, "id": "x", "image": "huge.png"}) + "\n").encode()}
    for name, data in files.items():
        (folder / f"{name}.jsonl").write_bytes(data)
        rc = main(["train", "--task", "mllm-sft", "--model", str(llava), "--data", str(folder / f"{name}.jsonl"),
                   "--out", str(tmp_path / name), "--steps", "1", "--batch-size", "2", "--quiet"])
        err = capsys.readouterr().err.strip()
        assert "Traceback" not in err
        if name == "huge":
            skipped = json.loads((tmp_path / name / "results.json").read_text())["skipped_images"]
            assert rc == 0 and [s["row"] for s in skipped] == [3] and "pixels" in skipped[0]["reason"]
        else:
            errors = [line for line in err.splitlines() if "error" in line]  # (after the model's loading bars)
            assert rc == 2 and len(errors) == 1 and f"{name}.jsonl" in errors[0], err
            assert ("not UTF-8" if name == "bytes" else "more than the 16,384 allowed") in err
