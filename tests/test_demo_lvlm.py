"""The LVLM story end to end at tiny settings: swap, VQA clean / attacked, targeted attack, record."""
from __future__ import annotations

import json

import pytest

pytest.importorskip("transformers")

from mmrobust.stories.lvlm import LVLMDemo, run_lvlm_demo
from mmrobust.stories.mmr_trained import run_mmr_trained_demo
from test_demo_mmr_trained import TINY


def test_lvlm_story_swaps_attacks_and_records(tmp_path):
    mmr = run_mmr_trained_demo(tmp_path / "mmr", TINY, progress=False, log=lambda m: None)
    assert mmr["rows"]
    clip = next(p.parent for p in (tmp_path / "mmr" / "clip").rglob("open_clip_config.json"))
    settings = LVLMDemo(per_category=2, steps=2, targeted_steps=2, batch=4, n_boot=20,
                        llava_model=str(tmp_path / "mmr" / "baseline" / "model"), tower_models=(str(clip),) * 3)
    out = run_lvlm_demo(tmp_path / "lvlm", settings, progress=False, log=lambda m: None)
    rows = {r["tower"]: r for r in out["rows"]}
    assert set(rows) == {"CLIP", "FARE", "TeCoA"}
    # the same tower swapped back in (exact conversion): the same clean answers, so the same clean accuracy
    assert rows["FARE"]["clean"] == rows["CLIP"]["clean"] == rows["TeCoA"]["clean"]
    for r in rows.values():
        assert r["inside_eps"] and r["n"] == 8 and r["n_targeted"] >= 1
        assert set(r["per_target"]) == set(settings.targets)
        assert 0 <= r["adv"] <= 1 and 0 <= r["targeted_min"] <= r["targeted"] <= r["targeted_max"] <= 1
        # pooled over the targets: the share of all attacked images, weighted by each target's count
        per = r["per_target"].values()
        assert r["n_targeted"] == sum(p["n"] for p in per)
        assert r["targeted"] == pytest.approx(sum(p["success"] * p["n"] for p in per) / r["n_targeted"])
    swap = json.loads((tmp_path / "lvlm" / "llava-fare" / "model" / "swap.json").read_text())
    assert swap["sources"]["encoder"] == str(clip)
    record = json.loads((tmp_path / "lvlm" / "results_story.json").read_text())
    assert record["kind"] == "story.lvlm" and (tmp_path / "lvlm" / "lvlm.png").is_file()
    for r in rows.values():  # the Wilson interval holds the pooled rate
        lo, hi = r["targeted_ci"]
        assert 0 <= lo <= r["targeted"] <= hi <= 1 and hi - lo > 0
    per_target = record["tables"][1]["rows"]  # one row per target, a column per tower, as the rows say
    assert [t["target"] for t in per_target] == list(settings.targets)
    assert all(t[name] == rows[name]["per_target"][t["target"]]["success"] for t in per_target for name in rows)
    again = run_lvlm_demo(tmp_path / "lvlm", settings, progress=False, log=lambda m: None)
    assert again["rows"] == out["rows"]  # every stage reused, same numbers


def test_lvlm_story_wants_three_towers(tmp_path):
    from mmrobust.errors import ConfigError

    with pytest.raises(ConfigError, match="tower_models"):
        run_lvlm_demo(tmp_path, LVLMDemo(tower_models=("a",)), progress=False, log=lambda m: None)
