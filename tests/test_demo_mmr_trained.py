"""The trained-LLaVA MMR story end to end at tiny settings (stages, record, loss going down; not the targets)."""
from __future__ import annotations

import json

import pytest

pytest.importorskip("transformers")

from mmrobust.data.instructions import load_instructions
from mmrobust.pipelines.demo_mmr_trained import MMRTrainedDemo, run_mmr_trained_demo, wilson
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


def test_the_mix_asks_with_mmrs_official_instruction():
    from mmrobust.eval.mmr.prompts import OFFICIAL_SUFFIX
    from mmrobust.world import vqa_mix

    assert vqa_mix.OFFICIAL_SUFFIX == OFFICIAL_SUFFIX
