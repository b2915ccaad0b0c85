"""MMR-style pairs written by an LLM from captions (cached, replayable offline), and `mmrobust mmr make-train`."""
from __future__ import annotations

import json
from collections import Counter

import pytest

from mmrobust.cli.main import main
from mmrobust.data.instructions import load_instructions, write_instructions
from mmrobust.models.mllm.base import GenResult
from mmrobust.pipelines.llm_pairs import parse_writer_reply, write_pairs_with_llm
from mmrobust.world.shapes import render_scene, sample_scene

GOOD = {"question": "What colour is the circle?", "options": ["Red.", "Blue.", "Green.", "Pink."],
        "leading_question": "What colour is the square?",
        "leading_options": ["There is no square; the picture shows a red circle.", "The square is red.",
                            "The square is blue.", "The square is green."], "premise": "there is a square"}


class FakeWriter:
    """Replies by caption: good JSON (wrapped in chatter), a reply with three options, or no JSON at all."""

    name = "fake"

    def __init__(self, fail: bool = False) -> None:
        self.fail, self.calls = fail, 0

    def identity(self):
        return {"adapter": "fake", "model": "writer-1"}

    def generate(self, requests, params):
        for i, req in enumerate(requests):
            if self.fail:
                raise AssertionError("the writer was called although every reply is cached")
            self.calls += 1
            if "three" in req.prompt:
                text = json.dumps({**GOOD, "options": GOOD["options"][:3]})
            elif "chatty" in req.prompt:
                text = "Sure! Here are some questions you might like."
            else:
                text = "Here you go:\n```json\n" + json.dumps(GOOD) + "\n```"
            yield i, GenResult(text=text)


@pytest.fixture
def captions(tmp_path):
    import numpy as np

    rng = np.random.default_rng(0)
    names = ["a red circle", "a blue star", "three options please", "a chatty one", "a green square", "a pink ring"]
    lines = []
    for k, caption in enumerate(names):
        render_scene(sample_scene(rng), image_size=32, rng=rng).save(tmp_path / f"{k}.png")
        lines.append(json.dumps({"image": f"{k}.png", "caption": caption}))
    path = tmp_path / "captions.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_writer_rows_are_validated_balanced_and_replay_from_cache(captions, tmp_path):
    writer = FakeWriter()
    result = write_pairs_with_llm(captions, writer, cache=tmp_path / "cache.jsonl", seed=0)
    assert writer.calls == 6 and result.calls["n_new_calls"] == 6
    assert [s["image"] for s in result.skipped] == ["2.png", "3.png"]  # three options; no JSON
    assert "four distinct" in result.skipped[0]["why"] and "no JSON" in result.skipped[1]["why"]
    rows = result.rows
    assert len(rows) == 8 and all(r["id"].startswith("train/llm/") for r in rows)
    for r in rows:
        right = r["meta"]["options"][r["meta"]["letter"]]
        assert r["answer"] == f"{r['meta']['letter']}. {right}"
        want = GOOD["options"][0] if r["meta"]["question_type"] == "POS" else GOOD["leading_options"][0]
        assert right == want and r["meta"]["source"] == "llm"
    for qtype in ("POS", "NEG"):
        assert sorted(Counter(r["meta"]["letter"] for r in rows if r["meta"]["question_type"] == qtype).values()) \
            == [1, 1, 1, 1]
    written = load_instructions(write_instructions(captions.parent / "pairs.jsonl", rows))
    assert len(written) == 8 and written[0].image_path.is_file()
    again = write_pairs_with_llm(captions, FakeWriter(fail=True), cache=tmp_path / "cache.jsonl", seed=0)
    assert again.rows == rows and again.calls["n_new_calls"] == 0  # offline, from the cache


@pytest.mark.parametrize("reply, why", [
    ("", "no JSON"), ("{not json}", "does not parse"), (json.dumps({"question": "q"}), "lacks"),
    (json.dumps({**GOOD, "question": "two\nlines"}), "one-line"),
    (json.dumps({**GOOD, "leading_options": ["a", "a", "b", "c"]}), "four distinct"),
    (json.dumps({**GOOD, "options": "A B C D"}), "four distinct"),
])
def test_hostile_writer_replies_are_refused_with_a_reason(reply, why):
    obj, reason = parse_writer_reply(reply)
    assert obj is None and why in reason


def test_caption_images_outside_the_folder_need_the_flag(captions, tmp_path):
    outside = tmp_path.parent / f"{tmp_path.name}-outside.png"
    render_scene(sample_scene(__import__("numpy").random.default_rng(2)), image_size=32).save(outside)
    sub = tmp_path / "sub"
    sub.mkdir()
    path = sub / "captions.jsonl"
    path.write_text(json.dumps({"image": f"../../{outside.name}", "caption": "a red circle"}) + "\n")
    with pytest.raises(Exception, match="points outside"):
        write_pairs_with_llm(path, FakeWriter(), cache=tmp_path / "c1.jsonl")
    result = write_pairs_with_llm(path, FakeWriter(), cache=tmp_path / "c2.jsonl", allow_outside=True)
    assert len(result.rows) == 2


def test_make_train_cli_world_facts_and_refusals(tmp_path, capsys):
    assert main(["mmr", "make-train", "--images", "8", "--out", str(tmp_path / "world"), "--leading-share", "0.5"]) == 0
    assert len(load_instructions(tmp_path / "world" / "train.jsonl")) == 12
    render_scene(sample_scene(__import__("numpy").random.default_rng(1)), image_size=32).save(tmp_path / "a.png")
    facts = tmp_path / "facts.jsonl"
    facts.write_text(json.dumps({"image": "a.png", "facts": {"shape": "circle", "colour": "red", "count": 1}}) + "\n")
    out = tmp_path / "pairs.jsonl"
    assert main(["mmr", "make-train", "--facts", str(facts), "--out", str(out)]) == 0
    assert {i.meta["question_type"] for i in load_instructions(out)} == {"POS", "NEG"}
    capsys.readouterr()
    (tmp_path / "train.jsonl").write_text("the user's own file\n")
    for argv, msg in ((["--facts", str(facts), "--out", str(out)], "exists"),
                      (["--facts", str(facts), "--out", str(tmp_path / "sub" / "p.jsonl")], "must sit in"),
                      (["--out", str(tmp_path / "x")], "exactly one source"),
                      (["--images", "2", "--out", str(tmp_path)], "already holds train.jsonl"),
                      (["--captions", str(facts), "--out", str(tmp_path / "c.jsonl")], "caption")):
        rc = main(["mmr", "make-train", *argv])
        err = capsys.readouterr().err.strip()
        assert rc == 2 and len(err.splitlines()) == 1 and msg in err, (argv, err)
