"""`mmrobust lvlm eval` and `mmrobust lvlm targeted` on user data (a VQA / caption JSONL over images), on a tiny
random LLaVA saved to a folder as a user's model would be: records written, attacks inside eps, reruns resume."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from mmrobust.cli.main import main
from mmrobust.eval.caption import CAPTION_PROMPT
from mmrobust.eval.vqa import VQA_PROMPT
from mmrobust.world.llava import build_tiny_llava

ROWS = [{"id": f"q{k}", "image": f"img/{k}.png", "question": "what colour is it ?", "answers": [c], "group": "colour"}
        for k, c in enumerate(["red", "blue", "green"])]
CAPTIONS = [{"id": f"c{k}", "image": f"img/{k}.png", "captions": ["a red dog", "a dog"]} for k in range(3)]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    words = [VQA_PROMPT.format(question="what colour is it ?"), CAPTION_PROMPT, "red blue green a dog star"]
    return build_tiny_llava(tmp_path_factory.mktemp("llava"), seed=0, image_size=32, extra_words=words)


def _data(root: Path, rows: list[dict], name: str) -> Path:
    (root / "img").mkdir(parents=True, exist_ok=True)
    for k in range(3):
        Image.new("RGB", (40, 40), (80 * k, 200, 30 * k)).save(root / "img" / f"{k}.png")
    path = root / name
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _common(model_dir, data, out):
    return ["--model", str(model_dir), "--data", str(data), "--eps", "4/255", "--steps", "2", "--batch-size", "2",
            "--max-new-tokens", "3", "--n-boot", "10", "--out", str(out)]


def test_lvlm_eval_vqa_and_caption_write_records_and_resume(tmp_path, model_dir, capsys):
    vqa, out = _data(tmp_path, ROWS, "vqa.jsonl"), tmp_path / "vqa"
    assert main(["lvlm", "eval", "--task", "vqa", *_common(model_dir, vqa, out)]) == 0
    first = json.loads((out / "results_vqa-attack.json").read_text())
    m = first["metrics"]
    assert m["clean"]["n"] == 3 and m["inside_eps"] and 0 < m["max_linf"] <= 4 / 255 + 1e-6
    assert first["config"]["model"] == str(model_dir) and first["config"]["eps"] == pytest.approx(4 / 255)
    assert "vqa: accuracy clean" in capsys.readouterr().out
    assert main(["lvlm", "eval", "--task", "vqa", *_common(model_dir, vqa, out)]) == 0  # from the partial file
    again = json.loads((out / "results_vqa-attack.json").read_text())
    assert again["batches"] == {"n": 2, "resumed": 2} and again["metrics"] == m
    cap, out = _data(tmp_path, CAPTIONS, "cap.jsonl"), tmp_path / "cap"
    assert main(["lvlm", "eval", "--task", "caption", *_common(model_dir, cap, out)]) == 0
    assert json.loads((out / "results_caption-attack.json").read_text())["metrics"]["clean"]["n"] == 3


def test_lvlm_targeted_records_success_inside_eps(tmp_path, model_dir, capsys):
    vqa, out = _data(tmp_path, ROWS, "vqa.jsonl"), tmp_path / "t"
    assert main(["lvlm", "targeted", "--target", "star", *_common(model_dir, vqa, out)]) == 0
    rec = json.loads((out / "results_targeted.json").read_text())
    m = rec["metrics"]
    assert m["n"] == 3 and m["inside_eps"] and m["target"] == "star"
    assert {m["success"], m["clean_success"]} <= {0, 1 / 3, 2 / 3, 1}
    rows = [json.loads(line) for line in (out / "samples_targeted.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and all(r["success"] == ("star" in r["adv_response"]) for r in rows)
    assert all(r["target_loss_adv"] <= r["target_loss_clean"] + 1e-4 for r in rows)  # the target got likelier
    assert not (out / "partial_targeted.jsonl").exists() and "targeted 'star'" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["targeted", "--target", " "], "non-empty"),
    (["eval", "--task", "vqa", "--data", "missing.jsonl"], "missing.jsonl"),
])
def test_lvlm_cli_errors_are_one_line(tmp_path, model_dir, capsys, argv, message):
    vqa = _data(tmp_path, ROWS, "vqa.jsonl")
    args = _common(model_dir, vqa, tmp_path / "o")
    if "--data" in argv:
        args[args.index("--data") + 1] = str(tmp_path / argv[argv.index("--data") + 1])
        argv = argv[:argv.index("--data")]
    rc = main(["lvlm", *argv, *args])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and message in err, err


def test_lvlm_eval_mmr_scores_pairs_clean_and_attacked(tmp_path, capsys):
    """MMR under attack: POS and NEG images attacked on the LM loss of the right option's text, both sides
    scored with RA / MR over the same pairs."""
    from mmrobust.eval.lvlm.mmr_attack import MMRAttackTask
    from mmrobust.eval.mmr import load_mmr
    from mmrobust.world.mmr import generate_mmr_world

    world = generate_mmr_world(tmp_path / "mmr", pairs_per_category=1, seed=0, image_size=32)
    task = MMRAttackTask(load_mmr(world), prompt="option-text")
    qs = task.questions()
    assert len(qs) == 8 and all(task.references(q) == [q.options[q.ground_truth]] for q in qs)
    assert MMRAttackTask(load_mmr(world)).references(qs[0]) == [qs[0].ground_truth]  # letters for the official prompt
    words = [q.prompt for q in qs] + [o for q in qs for o in q.options.values()]
    model = build_tiny_llava(tmp_path / "llava", seed=0, image_size=32, extra_words=words)
    out = tmp_path / "run"
    assert main(["lvlm", "eval", "--task", "mmr", "--prompt", "option-text", *_common(model, world, out)]) == 0
    rec = json.loads((out / "results_mmr-attack.json").read_text())
    m = rec["metrics"]
    assert m["clean"]["n"] == m["adversarial"]["n"] == 4 and m["inside_eps"] and len(m["per_group"]) == 4
    assert all(0 <= m[side]["ra"] <= 1 for side in ("clean", "adversarial"))
    rows = [json.loads(line) for line in (out / "samples_mmr-attack.jsonl").read_text().splitlines()]
    assert len(rows) == 8 and all(r["adv_loss"] >= r["clean_loss"] - 1e-4 for r in rows)  # pushed away
    assert {"clean_correct", "adv_correct"} <= set(rows[0]) and "mmr: ra clean" in capsys.readouterr().out


def test_targeted_partial_rows_are_reused_only_for_the_same_model(tmp_path, model_dir):
    """A killed `lvlm targeted` resumes from its partial file, but never with another model's rows."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from mmrobust.eval.vqa import VQATask, load_vqa
    from mmrobust.pipelines.lvlm import targeted_rows

    questions = VQATask(load_vqa(_data(tmp_path, ROWS, "vqa.jsonl"))).questions()
    other = build_tiny_llava(tmp_path / "other", seed=1, image_size=32, extra_words=["what colour is it ? red star"])
    partial, kw = tmp_path / "partial.jsonl", dict(eps=4 / 255, steps=2, seed=0, batch_size=3, max_new_tokens=3)
    for path in (model_dir, model_dir, other):
        model = AutoModelForImageTextToText.from_pretrained(path).eval()
        targeted_rows(model, AutoProcessor.from_pretrained(path), questions, "star", partial=partial, **kw)
    assert len(partial.read_text().splitlines()) == 2  # the same model's rerun reused its batch; the other did not


def _karpathy(root: Path, images: Path) -> Path:
    """The caption rows as a Karpathy-split JSON whose images lie below ``images`` (another folder)."""
    entries = [{"filepath": "img", "filename": f"{k}.png", "split": "test", "cocoid": f"c{k}",
                "sentences": [{"raw": c} for c in row["captions"]]} for k, row in enumerate(CAPTIONS)]
    entries.append({"filepath": "img", "filename": "0.png", "split": "train", "cocoid": 99,
                    "sentences": [{"raw": "left out"}]})
    root.mkdir(parents=True, exist_ok=True)
    (root / "dataset_coco.json").write_text(json.dumps({"images": entries}))
    return root / "dataset_coco.json"


def test_lvlm_caption_eval_reads_a_karpathy_split_like_the_same_jsonl(tmp_path, model_dir, capsys):
    cap = _data(tmp_path / "jsonl", CAPTIONS, "cap.jsonl")
    assert main(["lvlm", "eval", "--task", "caption", *_common(model_dir, cap, tmp_path / "a")]) == 0
    spec = f"karpathy:{_karpathy(tmp_path / 'ann', tmp_path / 'jsonl')}"
    argv = ["lvlm", "eval", "--task", "caption", *_common(model_dir, spec, tmp_path / "b"), "--split", "test",
            "--data-root", str(tmp_path / "jsonl")]
    assert main(argv) == 0
    a, b = (json.loads((tmp_path / d / "results_caption-attack.json").read_text()) for d in "ab")
    assert b["metrics"]["clean"]["n"] == 3  # the train image is left out
    assert a["metrics"]["clean"] == b["metrics"]["clean"] and a["metrics"]["adversarial"] == b["metrics"]["adversarial"]
    rows = [[json.loads(line) for line in (tmp_path / d / "samples_caption-attack.jsonl").read_text().splitlines()]
            for d in "ab"]
    assert rows[0] == rows[1]  # same ids (the cocoids), references, replies, losses
    capsys.readouterr()
    # the images are below --data-root, not beside the JSON: without it, one line naming the image
    assert main(argv[:-2]) == 2 and "point --data-root at the folder" in capsys.readouterr().err
    assert main(["lvlm", "eval", "--task", "vqa", *_common(model_dir, spec, tmp_path / "c")]) == 2
    assert "add --task caption" in capsys.readouterr().err


def test_split_and_data_root_without_a_karpathy_file_are_one_line_errors(tmp_path, model_dir, capsys):
    vqa, cap = _data(tmp_path, ROWS, "vqa.jsonl"), _data(tmp_path, CAPTIONS, "cap.jsonl")
    for task, data, extra, message in (("vqa", vqa, ["--split", "val"], "drop --split"),
                                       ("caption", cap, ["--split", "val"], "a caption JSONL is used whole"),
                                       ("caption", cap, ["--data-root", str(tmp_path)],
                                        "a caption JSONL is used whole")):
        assert main(["lvlm", "eval", "--task", task, *_common(model_dir, data, tmp_path / "o"), *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("extra, message", [
    (["--eps", "0"], "eps must be a finite number in (0, 0.25098]"),
    (["--eps", "1"], "eps must be a finite number in (0, 0.25098]"),
    (["--max-new-tokens", "1000000000"], "max_new_tokens must be an integer in [1, 4096]"),
])
@pytest.mark.parametrize("action", [["eval", "--task", "vqa"], ["targeted", "--target", "star"]])
def test_lvlm_attack_numbers_out_of_range_are_one_line_errors_before_anything_runs(tmp_path, model_dir, capsys,
                                                                                   action, extra, message):
    """eps 0 attacks nothing, eps 1 repaints the image, 10^9 new tokens would generate for hours: each refused
    in one line, before the model is loaded, with nothing written."""
    vqa = _data(tmp_path, ROWS, "vqa.jsonl")
    rc = main(["lvlm", *action, *_common(model_dir, vqa, tmp_path / "o"), *extra])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and message in err, err
    assert not (tmp_path / "o").exists()
