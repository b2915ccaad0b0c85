"""LVLM benchmarks (FARE's use): VQA soft accuracy and captioning CIDEr on the shared harness, and both under an
untargeted attack on a tiny random LLaVA (resume without recomputing finished batches)."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from PIL import Image

from mmrobust.errors import DataError
from mmrobust.eval.contract import run_evaluation
from mmrobust.eval.lvlm.under_attack import UnderAttackSettings
from mmrobust.eval.lvlm import (
    CaptionTask, VQATask, cider_scores, evaluate_under_attack, load_captions, load_vqa, normalize_answer,
    soft_accuracy, tokenize_caption,
)
from mmrobust.eval.caption import CAPTION_PROMPT
from mmrobust.eval.vqa import VQA_PROMPT, extract_free_form
from mmrobust.models.mllm.scripted import ScriptedAdapter
from mmrobust.registry import EVALS
from mmrobust.reports.contract import write_record


@pytest.mark.parametrize("raw, norm", [
    ("The Dog.", "dog"), ("two", "2"), ("Ten", "10"), ("none", "0"), ("1,000", "1000"), ("3.5", "3.5"),
    ("dont know", "don't know"), ("Yes!", "yes"), ("red-white", "red white"), ("a  cat, dog", "cat dog"),
    ("  An apple\n", "apple"), ("isnt it?", "isn't it"), ("(left)", "left"),
])
def test_vqa_normalization(raw: str, norm: str) -> None:
    assert normalize_answer(raw) == norm


HUMANS = ["red", "red", "dark red", "Red.", "two"]


@pytest.mark.parametrize("pred, acc", [
    ("red", 1.0),  # three humans (red, red, Red.) -> min(3/3, 1)
    ("dark red", 1 / 3), ("2", 1 / 3), ("Two", 1 / 3), ("blue", 0.0), (None, 0.0),
])
def test_vqa_soft_accuracy(pred: str | None, acc: float) -> None:
    assert soft_accuracy(pred, HUMANS) == pytest.approx(acc)
    assert soft_accuracy("red", ["red", "red", "blue"]) == pytest.approx(2 / 3)


@pytest.mark.parametrize("reply, parser, out", [
    ("Red\n", "official", "Red"), ("Red\nbecause", "official", "Red because"), ("Red\nbecause", "strict", None),
    ("**Answer:** red.\nIt is red", "lenient", "red"), ("   ", "official", None),
])
def test_free_form_extraction(reply: str, parser: str, out: str | None) -> None:
    assert extract_free_form(reply, parser) == out


def test_cider_oracle() -> None:
    refs = [["A dog runs on grass."], ["two red cars parked outside"], ["an old man reading books"]]
    # n-grams of one image never appear in another's references: every idf is log(3) > 0, so a caption equal to
    # its (single) reference has cosine 1 at n = 1..4 and no length penalty: CIDEr-D = 10 * mean(1, 1, 1, 1)
    score, per = cider_scores(["a DOG runs, on grass", *[r[0] for r in refs[1:]]], refs)
    assert per.tolist() == pytest.approx([10.0, 10.0, 10.0]) and score == pytest.approx(10.0)
    _, per = cider_scores(["a cat sleeps", "two red cars parked", "zebra"], refs)
    assert per[2] == 0.0 and 0 < per[1] < 10.0  # no shared word -> 0; a partial match in between
    from pycocoevalcap.cider.cider import Cider

    gts = {i: [tokenize_caption(x) for x in r] for i, r in enumerate(refs)}
    direct = Cider().compute_score(gts, {0: ["a cat sleeps"], 1: ["two red cars parked"], 2: ["zebra"]})[1]
    assert per.tolist() == pytest.approx(list(direct))
    assert tokenize_caption("A dog's ball, red!") == "a dogs ball red"


def _images(root: Path, names: list[str]) -> None:
    (root / "img").mkdir(parents=True, exist_ok=True)
    for k, n in enumerate(names):
        Image.new("RGB", (40, 40), (60 * k % 255, 200, 30 * k)).save(root / "img" / f"{n}.png")


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


VQA_ROWS = [
    {"id": "q1", "image": "img/a.png", "question": "what colour is it ?", "answers": ["red", "red", "red", "blue"],
     "group": "colour"},
    {"id": "q2", "image": "img/b.png", "question": "how many dogs ?", "answers": ["2", "two", "3"],
     "category": "count"},
    {"id": "q3", "image": "img/c.png", "question": "what colour is it ?", "answer": "green", "group": "colour"},
]
VQA_REPLIES = {"q1": "Red.", "q2": "Three", "q3": ""}  # right (1.0); 1/3 soft, not exact; empty: unparseable


def test_vqa_end_to_end_with_cache_resume(tmp_path: Path) -> None:
    assert {"vqa", "caption"} <= set(EVALS.list())
    _images(tmp_path, ["a", "b", "c"])
    data, out = _jsonl(tmp_path / "vqa.jsonl", VQA_ROWS), tmp_path / "run"
    first = ScriptedAdapter(model="x", responses=lambda r: VQA_REPLIES[r.uid], errors=("q2",))
    rec = run_evaluation("vqa", model=first, data=data, settings={"n_boot": 50}, out_dir=out)
    assert first.calls == ["q1", "q2", "q3"] and rec.metrics["overall"]["n_errors"] == 1
    second = ScriptedAdapter(model="x", responses=lambda r: VQA_REPLIES[r.uid])
    rec = run_evaluation("vqa", model=second, data=data, settings={"n_boot": 50}, out_dir=out)
    assert second.calls == ["q2"]  # resumed from the cache: only the failed question again
    o = rec.metrics["overall"]
    assert o["accuracy"] == pytest.approx((1 + 1 / 3 + 0) / 3) and o["exact_match"] == pytest.approx(1 / 3)
    assert o["n"] == 3 and o["n_unparseable"] == 1 and o["accuracy_ci"] is not None
    assert rec.metrics["per_group"]["colour"]["accuracy"] == pytest.approx(0.5)
    assert rec.metrics["per_group"]["count"]["accuracy"] == pytest.approx(1 / 3)
    assert [s["status"] for s in rec.samples] == ["correct", "wrong", "unparseable"]
    assert rec.samples[1]["pred"] == "3" and rec.samples[1]["ground_truth"] == "2"
    written = write_record(out, rec)
    table = written["tables"][0]
    assert table["title"] == "vqa: accuracy per group" and [r["group"] for r in table["rows"]] == [
        "colour", "count", "all (micro)"]
    assert written["config"]["prompt_template"] == VQA_PROMPT and (out / "samples_vqa.jsonl").is_file()


CAP_ROWS = [
    {"id": "1", "image": "img/a.png", "captions": ["a red square on a white table", "a red box"]},
    {"id": "2", "image": "img/b.png", "captions": ["two green circles in the dark"], "group": "night"},
    {"id": "3", "image": "img/c.png", "caption": "a yellow bird sitting on a branch"},
]


def test_caption_end_to_end(tmp_path: Path) -> None:
    _images(tmp_path, ["a", "b", "c"])
    data, out = _jsonl(tmp_path / "cap.jsonl", CAP_ROWS), tmp_path / "run"
    replies = {"1": "A red square on a white table.", "2": "A photo.", "3": "a yellow bird on a branch"}
    adapter = ScriptedAdapter(model="x", responses=lambda r: replies[r.uid])
    rec = run_evaluation("caption", model=adapter, data=data, settings={"n_boot": 20}, out_dir=out)
    per = [s["cider"] for s in rec.samples]
    expected = cider_scores(list(replies.values()), [r.get("captions", [r.get("caption")]) for r in CAP_ROWS])[1]
    assert per == pytest.approx(list(expected)) and per[0] == max(per)
    assert rec.metrics["overall"]["cider"] == pytest.approx(sum(per) / 3)
    assert set(rec.metrics["per_group"]) == {"all", "night"}
    again = ScriptedAdapter(model="x", responses=lambda r: replies[r.uid])
    rec2 = run_evaluation("caption", model=again, data=data, settings={"n_boot": 20}, out_dir=out)
    assert again.calls == [] and rec2.metrics["overall"]["cider"] == rec.metrics["overall"]["cider"]
    assert rec.tables[0].title == "caption: CIDEr per group" and rec.config["prompt"] == CAPTION_PROMPT


@pytest.mark.parametrize("line, message", [
    ("{not json", r"vqa\.jsonl:2: not valid JSON"),
    ('["a"]', r"vqa\.jsonl:2: expected a JSON object, got list"),
    ('{"id": "z", "image": "img/a.png", "question": "q"}', r"vqa\.jsonl:2: field 'answers' \(or 'answer'"),
    ('{"id": "z", "image": "img/a.png", "question": "", "answers": ["x"]}', r":2: field 'question' must be"),
    ('{"id": "q1", "image": "img/a.png", "question": "q", "answers": ["x"]}', r":2: duplicate id 'q1'"),
    ('{"id": "z", "image": "img/a.png", "question": "q", "answers": []}', r":2: field 'answers'"),
    ('{"id": "z", "image": "../a.png", "question": "q", "answers": ["x"]}', r":2: image '\.\./a\.png' points outside"),
    ('{"id": "z", "image": "/etc/passwd", "question": "q", "answers": ["x"]}', r":2: image '/etc/passwd' points out"),
])
def test_bad_lines_are_one_line_errors(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "vqa.jsonl"
    path.write_text(json.dumps(VQA_ROWS[0]) + "\n" + line + "\n")
    with pytest.raises(DataError, match=message) as e:
        load_vqa(path)
    assert "\n" not in str(e.value)


def test_path_escapes_refused_unless_allowed(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    _images(tmp_path, ["a"])
    row = {"id": "1", "image": str(tmp_path / "img/a.png"), "captions": ["a cat"]}
    path = _jsonl(tmp_path / "sub" / "cap.jsonl", [row, {**row, "id": "2", "image": "../img/a.png"}])
    with pytest.raises(DataError, match=r"cap\.jsonl:1: image .* points outside .*allow_outside=True"):
        load_captions(path)
    assert [i.image for i in load_captions(path, allow_outside=True)][1].endswith("img/a.png")
    with pytest.raises(DataError, match="points outside"):
        run_evaluation("caption", model=ScriptedAdapter(model="constant:a cat"), data=path, settings={},
                       out_dir=tmp_path / "r")
    with pytest.raises(DataError, match=r"cap\.jsonl:1: a caption has no words"):
        load_captions(_jsonl(tmp_path / "cap.jsonl", [{**row, "image": "img/a.png", "captions": ["?!"]}]))


# --- under attack, on a tiny random LLaVA ---

EPS = 4 / 255


@pytest.fixture(scope="module")
def llava(tmp_path_factory):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from mmrobust.world.llava import build_tiny_llava

    words = [VQA_PROMPT.format(question="what colour is it ? how many dogs"), CAPTION_PROMPT, "red blue 2 green",
             " ".join(r.get("captions", [r.get("caption", "")])[0] for r in CAP_ROWS)]
    path = build_tiny_llava(tmp_path_factory.mktemp("tiny-llava"), seed=0, image_size=32, extra_words=words)
    return AutoModelForImageTextToText.from_pretrained(path).eval(), AutoProcessor.from_pretrained(path)


class Counting:
    """Wraps the real attack and counts the images it was asked to attack."""

    def __init__(self) -> None:
        from mmrobust.lvlm.attack import attack_lvlm_untargeted

        self.fn, self.images = attack_lvlm_untargeted, 0

    def __call__(self, model, processor, images, *args, **kw):
        self.images += images.shape[0]
        return self.fn(model, processor, images, *args, **kw)


def test_vqa_under_attack_resumes(tmp_path: Path, llava) -> None:
    from mmrobust.lvlm.attack import greedy_outputs

    model, proc = llava
    _images(tmp_path, ["a", "b", "c"])
    task = VQATask(load_vqa(_jsonl(tmp_path / "vqa.jsonl", VQA_ROWS[:2])))
    out = tmp_path / "attack"
    kw = dict(settings=UnderAttackSettings(eps=EPS, steps=2, seed=0, batch_size=1, n_boot=20, max_new_tokens=4),
              out_dir=out, generate=greedy_outputs)
    attack = Counting()
    rec = evaluate_under_attack(model, proc, task, attack=attack, **kw)
    assert attack.images == 2 and rec.kind == "vqa-attack" and rec.metrics["eps_label"] == "4/255"
    assert len(rec.samples) == 2 and rec.metrics["inside_eps"] and 0 < rec.metrics["max_linf"] <= EPS + 1e-6
    s = rec.samples[0]
    assert s["references"] == ["red"] and s["adv_loss"] >= s["clean_loss"] - 1e-4  # APGD keeps its best iterate
    assert {"clean_accuracy", "adv_accuracy", "clean_exact_match", "adv_response"} <= set(s)
    assert rec.metrics["clean"]["n"] == 2 and rec.metrics["adversarial"]["accuracy"] is not None
    partial = out / "partial_vqa_attack.jsonl"
    assert len(partial.read_text().splitlines()) == 2
    written = write_record(out, rec)
    assert written["tables"][0]["title"].startswith("vqa under attack (l-inf eps 4/255")
    assert written["files"]["plots"] == ["vqa_examples.png"] and (out / "vqa_examples.png").is_file()

    again = Counting()
    rec2 = evaluate_under_attack(model, proc, task, attack=again, **kw)
    assert again.images == 0 and rec2.extra["batches"] == {"n": 2, "resumed": 2}
    assert rec2.samples == rec.samples and rec2.pictures == []  # resumed batches kept no images: nothing drawn

    lines = partial.read_text().splitlines()  # interrupted mid-write: the second batch's line is torn
    partial.write_text(lines[0] + "\n" + lines[1][:40])
    torn = Counting()
    rec3 = evaluate_under_attack(model, proc, task, attack=torn, **kw)
    assert torn.images == 1 and rec3.extra["batches"]["resumed"] == 1

    changed = Counting()
    evaluate_under_attack(model, proc, task, attack=changed, **{**kw, "settings": replace(kw["settings"], steps=1)})
    assert changed.images == 2  # another setting: nothing reused


def test_caption_under_attack(tmp_path: Path, llava) -> None:
    from mmrobust.lvlm.attack import attack_lvlm_untargeted, greedy_outputs

    model, proc = llava
    _images(tmp_path, ["a", "b", "c"])
    task = CaptionTask(load_captions(_jsonl(tmp_path / "cap.jsonl", CAP_ROWS[:2])))
    rec = evaluate_under_attack(model, proc, task, UnderAttackSettings(eps=EPS, steps=2, seed=0, batch_size=2, n_boot=0,
                                                                      max_new_tokens=4),
                                out_dir=tmp_path, attack=attack_lvlm_untargeted, generate=greedy_outputs)
    assert rec.kind == "caption-attack" and rec.samples[0]["references"] == CAP_ROWS[0]["captions"]
    assert {"clean_cider", "adv_cider"} <= set(rec.samples[0]) and rec.metrics["inside_eps"]
    assert [c.key for c in rec.tables[0].columns] == ["group", "clean_cider", "adv_cider", "n"]


@pytest.mark.parametrize("content", ['{"id": "1"}\n'.encode("utf-16"), b"\xff\xfe\x00garbage\n"])
def test_non_utf8_question_and_caption_files_are_one_line_errors(tmp_path, content):
    from mmrobust.eval.caption import load_captions
    from mmrobust.eval.vqa import load_vqa

    f = tmp_path / "q.jsonl"
    f.write_bytes(content)
    for load in (load_vqa, load_captions):
        with pytest.raises(DataError, match="not UTF-8 text") as e:
            load(f)
        assert "\n" not in str(e.value)
