"""Response cache (keys, append-only, kill-safe) and offline re-scoring of saved answer files."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from mmrobust.eval.mmr import ResponseCache, cache_key, load_mmr, run_mmr
from mmrobust.world.mmr import generate_mmr_world
from mmrobust.eval.mmr.task import RunSettings, score_responses
from mmrobust.models.mllm.scripted import ScriptedAdapter

BASE = dict(model={"adapter": "hf", "model": "m"}, prompt="Q?\nA. x\nB. y", params={"max_new_tokens": 8},
            image_sha256="ab" * 32)


@pytest.mark.parametrize("change", [
    {"model": {"adapter": "hf", "model": "other"}}, {"prompt": "Q?\nA. x\nB. z"},
    {"params": {"max_new_tokens": 9}}, {"image_sha256": "cd" * 32},
])
def test_key_changes_with_model_prompt_params_and_image(change: dict) -> None:
    assert cache_key(**{**BASE, **change}) != cache_key(**BASE)
    assert cache_key(**BASE) == cache_key(**dict(BASE))


def test_cache_survives_a_line_cut_by_a_kill(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    cache = ResponseCache(path)
    cache.put("k1", {"response": "A"})
    cache.put("k1", {"response": "B"})  # already answered: not written twice
    with path.open("a") as f:
        f.write('{"key": "k2", "respo')  # killed mid-write
    again = ResponseCache(path)
    assert len(again) == 1 and again.n_corrupt_lines == 1 and again.get("k1")["response"] == "A"
    again.put("k3", {"response": "C"})
    final = ResponseCache(path)
    assert "k3" in final and "k2" not in final and final.n_corrupt_lines == 1
    assert len(path.read_text().splitlines()) == 3  # k1, the cut line, k3 on its own line


def test_scripted_run_then_offline_rescore_under_each_parser(tmp_path: Path) -> None:
    data = load_mmr(generate_mmr_world(tmp_path / "w", pairs_per_category=3, seed=0, image_size=16))
    truth = {i.uid: i.ground_truth for i in data.items}
    replies = {uid: f"({gt})" for uid, gt in truth.items()}  # right, but in a format official cannot read
    adapter = ScriptedAdapter(responses=replies)
    rec = run_mmr(data, adapter, out_dir=tmp_path / "run", settings=RunSettings(n_boot=0))
    assert len(adapter.calls) == 24
    assert rec["metrics"]["overall"]["ra"] == 0.0 and rec["metrics"]["item_status"]["unparseable"] == 24
    assert rec["metrics"]["by_parser"]["lenient"]["ra"] == 1.0
    lenient = score_responses(tmp_path / "run" / "samples_mmr.jsonl", out_dir=tmp_path / "len", parser="lenient", n_boot=0)
    assert lenient["metrics"]["overall"]["ra"] == 1.0 and lenient["metrics"]["overall"]["n_pairs"] == 12
    assert lenient["config"]["parser"] == "lenient"


def test_rescore_reference_format_answers(tmp_path: Path) -> None:
    """The reference answer JSONL (question_id, prompt, text, groundtruth, question_type) in any order."""
    q = "Is it red?\nA. yes\nB. no\nC. maybe\nD. blue\nAnswer with the option's letter from the given choices directly."
    rows = [
        {"question_id": "attribute/color&texture/02", "prompt": q, "text": "B", "groundtruth": "B", "question_type": "NEG"},
        {"question_id": "attribute/color&texture/01", "prompt": q, "text": "A.", "groundtruth": "A", "question_type": "POS"},
        {"question_id": "attribute/color&texture/02", "prompt": q, "text": "A", "groundtruth": "A", "question_type": "POS"},
        {"question_id": "attribute/color&texture/01", "prompt": q, "text": "maybe", "groundtruth": "D", "question_type": "NEG"},
    ]
    path = tmp_path / "answers.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    official = score_responses(path, out_dir=tmp_path / "o", parser="official", n_boot=0)["metrics"]
    assert official["overall"]["ra"] == 0.5 and official["overall"]["mr"] == 0.5
    lenient = score_responses(path, out_dir=tmp_path / "l", parser="lenient", n_boot=0)["metrics"]
    assert lenient["overall"]["n_unparseable"] == 0  # "maybe" is option C's text: a wrong answer, read as C
    assert lenient["overall"]["ra"] == 0.5
