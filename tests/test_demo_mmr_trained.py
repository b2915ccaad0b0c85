"""The trained-LLaVA MMR story end to end at tiny settings (stages, record, loss going down; not the targets)."""
from __future__ import annotations

import json

import pytest

pytest.importorskip("transformers")

from mmrobust.data.instructions import load_instructions
from mmrobust.reports.spread import wilson
from mmrobust.stories.mmr_trained import MMRTrainedDemo, run_mmr_trained_demo
from mmrobust.world.vqa_mix import KINDS, generate_vqa_mix

TINY = MMRTrainedDemo(mix_images=48, heldout_images=8, pair_images=16, mmr_pairs_per_category=2, base_steps=30,
                      base_lr=3e-3, tune_steps=4, batch=16, clip_steps=5, clip_world_images=160, n_boot=50,
                      eval_batch=8, max_new_tokens=2)


def test_vqa_mix_true_premises_and_balanced_letters(tmp_path):
    path = generate_vqa_mix(tmp_path / "a", n_images=8, seed=3)
    items = load_instructions(path)
    assert len(items) == 8 * len(KINDS) and all(i.id.startswith("mix/") for i in items)
    again = generate_vqa_mix(tmp_path / "b", n_images=8, seed=3)
    assert path.read_bytes() == again.read_bytes()  # same seed, same bytes
    mc = [i for i in items if i.meta["kind"].startswith("mc")]
    for i in mc:
        letter = i.meta["letter"]
        assert i.answer == f"{letter}."
        assert not any(o.startswith("There is no") for o in i.meta["options"].values())  # no premise to reject
    premise = [i for i in mc if i.meta["kind"] == "mc-premise" and i.meta["category"] == "attribute/shape"]
    assert all(f"the {i.meta['scene']['shape']} " in i.question for i in premise)  # premise names the true shape
    letters = [i.meta["letter"] for i in mc if i.meta["kind"] == "mc"]
    assert sorted(letters) == sorted("ABCD" * 2)


def test_wilson_interval():
    lo, hi = wilson(8, 10)
    assert lo < 0.8 < hi and 0 <= lo and hi <= 1
    assert wilson(0, 0) == [0.0, 1.0]


def test_story_end_to_end(tmp_path):
    out = tmp_path / "mmr-trained"
    result = run_mmr_trained_demo(out, TINY, progress=False, log=lambda m: None)
    for stage in ("data", "clip", "llava", "baseline", "control", "mmr-tuned"):
        assert (out / stage / "stage.json").is_file(), stage
    for model in ("baseline", "control", "mmr-tuned"):
        assert (out / model / "model" / "config.json").is_file()
        assert (out / model / "mmr" / "results_mmr.json").is_file()
    swap = json.loads((out / "llava" / "model" / "swap.json").read_text())
    assert swap["tower"]["width"] == 96 and swap["tower"]["layers"] == 3  # the world's CLIP tower, converted
    rows = {r["model"]: r for r in result["rows"]}
    assert set(rows) == {"baseline", "control", "MMR-tuned"}
    assert rows["baseline"]["loss_last"] < rows["baseline"]["loss_first"]  # training learned something
    assert all(r["pairs"] == 8 for r in rows.values())
    record = json.loads((out / "results_story.json").read_text())
    assert record["kind"] == "story.mmr-trained" and "mmr_trained.png" in json.dumps(record)
    assert (out / "mmr_trained.png").is_file() and "MMR-tuned" in result["table"]
    assert record["metrics"]["models"][0]["model"] == "baseline"
    # resumable: a second run with the same settings reuses every stage and gives the same numbers
    again = run_mmr_trained_demo(out, TINY, progress=False, log=lambda m: None)
    assert again["rows"] == result["rows"]


def test_the_mix_asks_with_mmrs_instructions():
    from mmrobust.eval.mmr.prompts import OFFICIAL_SUFFIX, TEXT_SUFFIX, get_prompt
    from mmrobust.world import vqa_mix

    assert vqa_mix.OFFICIAL_SUFFIX == OFFICIAL_SUFFIX and vqa_mix.TEXT_SUFFIX == TEXT_SUFFIX
    assert get_prompt("option-text").template.endswith(TEXT_SUFFIX)
    from mmrobust.eval.vqa import VQA_PROMPT

    assert VQA_PROMPT == "{question}" + vqa_mix.VQA_SUFFIX


def test_text_answers_are_the_right_options_text_and_parse_back(tmp_path):
    from mmrobust.eval.mllm.parsing import parse_lenient
    from mmrobust.eval.mmr.prompts import TEXT_SUFFIX
    from mmrobust.world.mmr_train import generate_mmr_training_set

    mix = load_instructions(generate_vqa_mix(tmp_path / "mix", n_images=8, seed=1, answer_format="text"))
    pairs = load_instructions(generate_mmr_training_set(tmp_path / "pairs", n_images=8, seed=1, answer_format="text"))
    mc = [i for i in mix if i.meta["kind"].startswith("mc")] + list(pairs)
    assert len(mc) == 8 * 2 + 8 + 4  # mix: mc + mc-premise per image; pairs: 8 POS + 4 NEG (share 0.5)
    for i in mc:
        assert i.answer == i.meta["options"][i.meta["letter"]]  # the text alone, no letter
        assert parse_lenient(i.answer, i.meta["options"]) == i.meta["letter"]
    assert all(i.question.endswith(TEXT_SUFFIX) for i in mix if i.meta["kind"].startswith("mc"))


def test_training_set_rejects_premises_in_the_mmr_worlds_words(tmp_path):
    """The leading twins' right options follow the MMR world's wording, category by category."""
    import re

    from mmrobust.eval.mmr import load_mmr
    from mmrobust.world.mmr import generate_mmr_world
    from mmrobust.world.mmr_train import generate_mmr_training_set

    forms = {"attribute/shape": r"There is no \w+; the picture shows an? \w+ \w+\.",
             "attribute/color&texture": r"There is no \w+ object; the \w+ is \w+\.",
             "attribute/number": r"There (is|are) \w+ \w+, not \w+\.",
             "attribute/position": r"The \w+ is in the [\w ]+, not the [\w ]+\."}
    pairs = [i for i in load_instructions(generate_mmr_training_set(tmp_path / "t", n_images=16, seed=0,
                                                                       leading_share=1.0))
             if i.meta["question_type"] == "NEG"]
    world = [i for i in load_mmr(generate_mmr_world(tmp_path / "w", pairs_per_category=4, seed=0)).items
             if i.question_type == "NEG"]
    for cat, form in forms.items():
        train_right = [i.meta["options"][i.meta["letter"]] for i in pairs if i.meta["category"] == cat]
        world_right = [dict(i.options)[i.ground_truth] for i in world if i.category == cat]
        assert train_right and world_right
        assert all(re.fullmatch(form, t) for t in train_right + world_right), (cat, train_right[:2], world_right[:2])
