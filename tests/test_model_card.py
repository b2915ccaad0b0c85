"""Hugging Face model cards from results records: records of real tiny evaluations (a micro CLIP on the synthetic
world through `mmrobust eval`, a scripted MLLM on the MMR world through `mmrobust bench run --challenge`), written
as README.md and read back with huggingface_hub's own parsers (ModelCard.load, metadata_load,
model_index_to_eval_results), offline. ``ModelCard.validate`` is not called: it posts the card to the hub's
/api/validate-yaml endpoint (huggingface_hub/repocard.py), so it needs the network."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from huggingface_hub import ModelCard, metadata_load
from huggingface_hub.repocard_data import model_index_to_eval_results

from mmrobust.cli.main import main
from mmrobust.errors import DataError
from mmrobust.reports.card_data import WORLD_GENERATORS, WORLD_TYPE, public_text
from mmrobust.reports.compare import load_run
from mmrobust.reports.model_card import MARKER, write_model_card


@pytest.fixture(scope="module")
def clip_runs(tmp_path_factory, micro_world) -> tuple[Path, list[dict]]:
    """zeroshot, robust (PGD at 2/255 and 4/255) and backdoor records of a micro CLIP saved as a model folder."""
    from mmrobust.models import create_clip, save_clip

    root = tmp_path_factory.mktemp("clip-card")
    save_clip(create_clip("mmrobust-micro", seed=0), root / "model")
    data = ["--model", str(root / "model"), "--data", str(micro_world.test_manifest), "--classes",
            str(micro_world.classes), "--out", str(root / "eval")]
    assert main(["eval", "zeroshot", *data]) == 0
    assert main(["eval", "robust", *data, "--attack", "pgd", "--eps", "2/255,4/255", "--n-samples", "16",
                 "--steps", "3"]) == 0
    assert main(["eval", "backdoor", *data, "--trigger", "badnet", "--target", "star"]) == 0
    return root, list(load_run(root / "eval").values())


@pytest.fixture(scope="module")
def mllm_runs(tmp_path_factory) -> tuple[Path, list[dict]]:
    """mmr and challenge records of a scripted (random) MLLM on a small MMR world."""
    root = tmp_path_factory.mktemp("mllm-card")
    assert main(["mmr", "make-data", "--out", str(root / "world"), "--pairs-per-category", "5", "--image-size",
                 "16"]) == 0
    assert main(["bench", "run", "mmr", "--data", str(root / "world"), "--adapter", "scripted", "--model", "random",
                 "--bootstrap", "0", "--challenge", "are-you-sure", "--out", str(root / "run")]) == 0
    return root, list(load_run(root / "run").values())


@pytest.fixture(scope="module")
def lvlm_runs(tmp_path_factory) -> tuple[Path, list[dict]]:
    """vqa-attack and lvlm-targeted records of a tiny random LLaVA on three VQA questions (2 attack steps)."""
    from PIL import Image

    from mmrobust.eval.vqa import VQA_PROMPT
    from mmrobust.world.llava import build_tiny_llava

    root = tmp_path_factory.mktemp("lvlm-card")
    model = build_tiny_llava(root / "llava", seed=0, image_size=32,
                             extra_words=[VQA_PROMPT.format(question="what colour is it ?"), "red blue green star"])
    (root / "img").mkdir()
    rows = []
    for k, colour in enumerate(["red", "blue", "green"]):
        Image.new("RGB", (40, 40), (80 * k, 200, 30 * k)).save(root / "img" / f"{k}.png")
        rows.append({"id": f"q{k}", "image": f"img/{k}.png", "question": "what colour is it ?", "answers": [colour]})
    (root / "vqa.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    common = ["--model", str(model), "--data", str(root / "vqa.jsonl"), "--eps", "4/255", "--steps", "2",
              "--batch-size", "3", "--max-new-tokens", "3", "--n-boot", "10", "--out", str(root / "run")]
    assert main(["lvlm", "eval", "--task", "vqa", *common]) == 0
    assert main(["lvlm", "targeted", "--target", "star", *common]) == 0
    return root, list(load_run(root / "run").values())


def _by_kind(records: list[dict]) -> dict[str, dict]:
    return {r["kind"]: r for r in records}


def _commands_parse(text: str) -> int:
    """Every mmrobust command of the card's "How to reproduce" block parses with mmrobust's own CLI parser."""
    import shlex

    from mmrobust.cli.main import build_parser

    block = text.split("## How to reproduce", 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    commands = [shlex.split(line)[1:] for line in block.splitlines() if line.startswith("mmrobust ")]
    for argv in commands:
        assert getattr(build_parser(argv).parse_args(argv), "func", None), argv
    return len(commands)


def _read_back(path: Path) -> tuple[ModelCard, dict, dict]:
    """The card as the hub library loads it, its metadata, and its eval results by metric name."""
    card = ModelCard.load(path)  # a local file: no network
    meta = metadata_load(path)
    name, results = model_index_to_eval_results(meta["model-index"])
    assert name == card.data.model_name
    by_name = {r.metric_name: r for r in results}
    assert len(by_name) == len(results)  # every metric name says which number it is
    return card, meta, by_name


def test_clip_card_carries_the_records_numbers(tmp_path, clip_runs):
    _, records = clip_runs
    rec = _by_kind(records)
    out = write_model_card(tmp_path / "model", model="org/fare-micro", records=records, base_model="org/clip-micro",
                           summary_lines=["adversarial: robust accuracy falls with eps"])
    assert out == tmp_path / "model" / "README.md"
    card, meta, res = _read_back(out)
    assert card.data.library_name == "open_clip" and card.data.base_model == "org/clip-micro"
    assert {"mmrobust", "robustness", "adversarial-robustness", "backdoor"} <= set(card.data.tags)
    assert "license" not in meta and card.data.model_name == "org/fare-micro"
    pct = lambda x: round(100 * x, 2)  # noqa: E731
    zs, robust, bd = rec["zeroshot"]["metrics"], rec["robust"]["metrics"], rec["backdoor"]["metrics"]
    assert res["top-1 accuracy (clean)"].metric_value == pct(zs["top1"])
    assert res["top-5 accuracy (clean)"].metric_value == pct(zs["top5"])
    assert res["top-1 accuracy (clean, the 16 attacked images)"].metric_value == pct(robust["clean_top1"])
    for label in ("2/255", "4/255"):
        r = res[f"robust accuracy (PGD, l-inf {label})"]
        assert r.metric_value == pct(robust["eps"][label]["robust_top1"]) and r.metric_type == "accuracy"
        assert r.metric_args["eps"] == robust["eps"][label]["eps"] and r.metric_args["eps_255"] == label
        assert r.metric_args["n_samples"] == 16 and r.metric_args["steps"] == 3 and r.metric_args["attack"] == "pgd"
    asr = res["backdoor attack success rate (badnet trigger -> 'star'; lower is better)"]
    assert asr.metric_value == pct(bd["asr"]) and asr.metric_type == "attack_success_rate"
    for r in res.values():
        assert r.task_type == "zero-shot-image-classification" and r.task_name and r.verified is False
        assert r.dataset_type == WORLD_TYPE and r.dataset_config == "shapes" and r.dataset_split == "test"
        assert r.dataset_args["seed"] == 1 and "seed 1" in r.dataset_name  # micro_world's seed
    # the hub library serializes the card back to the same model index
    assert card.data.to_dict()["model-index"] == meta["model-index"]
    text = out.read_text()
    assert "adversarial: robust accuracy falls with eps" in text and "## How to reproduce" in text
    assert "mmrobust eval robust --model hf-hub:org/fare-micro --data world/test.csv" in text
    assert "--eps 2/255,4/255" in text and "mmrobust generate --out world --seed 1" in text
    assert _commands_parse(text) == 4  # the world, then zeroshot, robust and backdoor


def test_mllm_card_carries_ra_mr_per_category_and_the_flip_rate(tmp_path, mllm_runs):
    _, records = mllm_runs
    rec = _by_kind(records)
    out = write_model_card(tmp_path / "card.md", model="org/llava-tiny", records=records)
    card, _, res = _read_back(out)
    assert card.data.library_name == "transformers" and {"leading-questions", "sycophancy"} <= set(card.data.tags)
    m = rec["mmr"]["metrics"]
    for where, block in [("all pairs", m["overall"]), *m["per_category"].items()]:
        ra = res[f"RA, robustness accuracy ({where})"]
        assert ra.metric_value == round(100 * block["ra"], 2) and ra.task_type == "visual-question-answering"
        assert ra.dataset_type == WORLD_TYPE and ra.dataset_config == "mmr" and ra.metric_args["n_pairs"] == 5 * (
            4 if where == "all pairs" else 1)
        mr = f"MR, misleading rate ({where}; lower is better)"
        if block["mr"] is None:  # no POS question right: MR has no denominator, so no number (never 0)
            assert mr not in res
        else:
            assert res[mr].metric_value == round(100 * block["mr"], 2) and res[mr].metric_type == "misleading_rate"
    assert m["overall"]["mr"] is not None  # the seeded random replies get some POS questions right
    flip = rec["challenge"]["metrics"]["per_template"]["are-you-sure"]["overall"]["flip_rate"]
    names = [n for n in res if n.startswith("flip rate after pushback")]
    if flip is None:  # a random model that got nothing right first has no flip rate: no number, never 0
        assert names == []
    else:
        assert len(names) == 1 and res[names[0]].metric_value == round(100 * flip, 2)
    assert "mmrobust mmr make-data --out mmr-world --seed 0 --pairs-per-category 5 --image-size 16" in out.read_text()
    assert _commands_parse(out.read_text()) == 3  # the world, mmr run, bench run --challenge


def test_lvlm_card_carries_accuracy_under_attack_and_targeted_success(tmp_path, lvlm_runs):
    _, records = lvlm_runs
    rec = _by_kind(records)
    card, _, res = _read_back(write_model_card(tmp_path, model="org/llava-tiny", records=records))
    assert card.data.library_name == "transformers" and "adversarial-robustness" in card.data.tags
    m = rec["vqa-attack"]["metrics"]
    clean, adv = res["VQA accuracy (clean)"], res["VQA accuracy (APGD on the LM loss, l-inf eps 4/255, 2 steps)"]
    assert clean.metric_value == round(100 * m["clean"]["accuracy"], 2)
    assert adv.metric_value == round(100 * m["adversarial"]["accuracy"], 2)
    assert adv.metric_args["eps"] == m["eps"] and adv.metric_args["steps"] == 2 and adv.metric_args["n"] == 3
    t = rec["lvlm-targeted"]["metrics"]
    hit = res["targeted attack success rate ('star'; targeted APGD on the LM loss, l-inf eps 4/255, 2 steps; lower "
              "is better)"]
    assert hit.metric_value == round(100 * t["success"], 2) and hit.metric_type == "attack_success_rate"
    for r in res.values():
        assert r.task_type == "visual-question-answering" and r.dataset_type == "vqa.jsonl" and r.verified is False
    assert _commands_parse(card.text) == 2  # lvlm eval, lvlm targeted


def test_unknown_kinds_are_skipped_and_said(tmp_path, clip_runs):
    _, records = clip_runs
    extra = [{"kind": "story.adversarial", "metrics": {"models": []}}, {"kind": "train", "metrics": {"steps": 3}}]
    out = write_model_card(tmp_path, model="m", records=records + extra)
    _, _, res = _read_back(out)
    _, _, alone = _read_back(write_model_card(tmp_path / "alone.md", model="m", records=records))
    assert res.keys() == alone.keys()
    assert "Left out: 2 record(s)" in out.read_text() and "`story.adversarial`" in out.read_text()
    with pytest.raises(DataError, match="no record has a number a model card carries"):
        write_model_card(tmp_path / "none.md", model="m", records=extra)


def test_a_users_readme_is_never_replaced_and_our_card_is(tmp_path, clip_runs, capsys):
    root, records = clip_runs
    mine = tmp_path / "README.md"
    mine.write_text("# my model\nhand-written\n")
    with pytest.raises(DataError, match="mmrobust did not write it"):
        write_model_card(tmp_path, model="m", records=records)
    assert mine.read_text() == "# my model\nhand-written\n"
    rc = main(["report", str(root / "eval"), "--model-card", str(tmp_path), "--model", "m"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "--model-card PATH" in err
    assert mine.read_text() == "# my model\nhand-written\n"
    ours = tmp_path / "ours"
    write_model_card(ours, model="m", records=records[:1])
    first = (ours / "README.md").read_text()
    assert MARKER in first
    write_model_card(ours, model="m", records=records)  # our own card: rewritten
    assert (ours / "README.md").read_text() != first and len(_read_back(ours / "README.md")[2]) > 2
    assert sorted(p.name for p in ours.iterdir()) == ["README.md"]  # written atomically: no temp file left


def test_no_path_of_this_machine_and_no_secret_in_the_card(tmp_path, clip_runs, mllm_runs):
    root, records = clip_runs
    rec = json.loads(json.dumps(_by_kind(mllm_runs[1])["mmr"]))
    rec["config"]["adapter_args"] = {"api_key": "sk-abcdefghijklmnop", "hf_token": "hf_abcdefghijklmnop"}
    rec["warnings"] = [f"images under {root}/private/x.png look odd (token hf_zyxwvutsrqponmlk)"]
    out = write_model_card(tmp_path, model=str(root / "model"), records=[*records, rec],
                           base_model=str(root / "model"))
    text = out.read_text()
    assert str(root) not in text and str(Path.home()) not in text and str(tmp_path) not in text
    assert "/tmp/" not in text and "sk-abc" not in text and "hf_abc" not in text and "hf_zyx" not in text
    assert ".../x.png" in text and "[REDACTED]" in text
    card, meta, _ = _read_back(out)
    assert card.data.model_name == f"{root.name}/model" and "base_model" not in meta  # a local base: left out
    assert "not a hub id" in text and "different models" in text  # the CLIP and the scripted MLLM


@pytest.mark.parametrize("text, shown", [
    ("/home/me/runs/test.csv", ".../test.csv"), ("eps 4/255 on attribute/shape", "eps 4/255 on attribute/shape"),
    ("see (/tmp/x/y.png)", "see (.../y.png)"), ("~/data/q.json", ".../q.json"), ("C:\\Users\\me\\a.csv", ".../a.csv"),
    ("https://huggingface.co/org/repo", "https://huggingface.co/org/repo"), ("runs/eval", "runs/eval"),
    ("Authorization: Bearer abcdefghijkl", "Authorization: Bearer [REDACTED]"),
])
def test_public_text_cuts_absolute_paths_and_redacts(text, shown):
    assert public_text(text) == shown


def test_the_world_markers_are_the_generators_own():
    from mmrobust.world.mmr import MMR_GENERATOR
    from mmrobust.world.shapes import GENERATOR

    assert WORLD_GENERATORS == {GENERATOR: "shapes", MMR_GENERATOR: "mmr"}


def test_report_model_card_cli(tmp_path, clip_runs, capsys):
    root, _ = clip_runs
    assert main(["report", str(root / "eval"), "--model-card", str(tmp_path / "card"), "--model", "org/m",
                 "--summary", "one line", "--summary", "two lines"]) == 0
    assert "model card:" in capsys.readouterr().out and not (root / "eval" / "report.html").exists()
    text = (tmp_path / "card" / "README.md").read_text()
    assert "- one line\n- two lines" in text and text.startswith("---\n")
    rc = main(["report", str(root / "eval"), "--model", "org/m"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "--model-card" in err and len(err.splitlines()) == 1
