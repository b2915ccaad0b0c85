"""What a newcomer pays: a new MLLM benchmark is ONE new file in ``mmrobust/eval/benchmarks/`` and a new LVLM
attack ONE new file in ``mmrobust/lvlm/attacks/``; with no other edit, `mmrobust bench run NAME` and
`mmrobust lvlm eval --attack NAME` reach them (each run in a fresh process over a copy of the package with the
one file added). Also: the registered LVLM tasks / attacks / benchmarks and their one-line errors."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from contextlib import nullcontext
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

import mmrobust
from mmrobust.cli.main import main
from mmrobust.eval.vqa import VQA_PROMPT
from mmrobust.registry import BENCHMARKS, LVLM_ATTACKS, LVLM_TASKS
from mmrobust.world.llava import build_tiny_llava

COUNT_SHAPES = '''
"""count-shapes: how many squares are in the image? (a folder of PNGs named <count>_<k>.png)"""
import re
from pathlib import Path

from mmrobust.eval.mllm import HarnessSettings, MLLMTask, Question, benchmark


class CountShapes(MLLMTask):
    name = "count-shapes"

    def __init__(self, folder):
        self.folder = Path(folder)

    def questions(self):
        return [Question(uid=p.stem, image=str(p), prompt="How many squares are in the image? Answer with a number.",
                         ground_truth=p.stem.split("_")[0]) for p in sorted(self.folder.glob("*.png"))]

    def parse(self, response, row, parser):
        m = re.search(r"\\d+", response)
        return m.group(0) if m else None


@benchmark("count-shapes")
def count_shapes(data: str, settings: HarnessSettings) -> CountShapes:
    """How many squares are in the image: a folder of PNGs named <count>_<k>.png."""
    return CountShapes(data)
'''

NOISE = '''
"""noise: seeded uniform noise in the l-inf eps-ball (a floor any real attack should beat)."""
from types import SimpleNamespace

import torch

from mmrobust.lvlm.attack import build_lvlm_inputs, lm_loss_fn
from mmrobust.lvlm.attacks import lvlm_attack


@lvlm_attack("noise", protocol="uniform-noise")
def noise(model, processor, images, prompts, references, *, eps, steps, seed, max_new_tokens=20):
    """Seeded uniform noise in the l-inf eps-ball, clipped to [0, 1]."""
    g = torch.Generator(device=images.device).manual_seed(seed)
    x_adv = (images + (torch.rand(images.shape, generator=g, device=images.device) * 2 - 1) * eps).clamp(0, 1)
    loss = lm_loss_fn(model, processor, build_lvlm_inputs(processor, prompts, references,
                                                          image_size=images.shape[-1]), like=images)
    with torch.no_grad():
        return x_adv, SimpleNamespace(clean_loss=loss(images).tolist(), final_loss=loss(x_adv).tolist())
'''

ROWS = [{"id": f"q{k}", "image": f"img/{k}.png", "question": "what colour is it ?", "answers": [c]}
        for k, c in enumerate(["red", "blue", "green"])]


def _with_one_file(tmp_path: Path, where: str, source: str) -> Path:
    """A copy of the installed package with ONE new module at ``where``; returns the folder to put on PYTHONPATH."""
    root = tmp_path / "src"
    shutil.copytree(Path(mmrobust.__file__).parent, root / "mmrobust", ignore=shutil.ignore_patterns("__pycache__"))
    (root / "mmrobust" / where).write_text(textwrap.dedent(source).lstrip())
    return root


def _cli(root: Path, *argv: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run([sys.executable, "-m", "mmrobust.cli.main", *argv], env=env, capture_output=True,
                          text=True, timeout=600)


def _vqa(root: Path) -> Path:
    (root / "img").mkdir(parents=True, exist_ok=True)
    for k in range(3):
        Image.new("RGB", (40, 40), (80 * k, 200, 30 * k)).save(root / "img" / f"{k}.png")
    (root / "vqa.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    return root / "vqa.jsonl"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    words = [VQA_PROMPT.format(question="what colour is it ?"), "red blue green"]
    return build_tiny_llava(tmp_path_factory.mktemp("llava"), seed=0, image_size=32, extra_words=words)


def test_a_new_benchmark_is_one_file(tmp_path):
    root = _with_one_file(tmp_path, "eval/benchmarks/count_shapes.py", COUNT_SHAPES)
    images = tmp_path / "shapes"
    images.mkdir()
    for n in (1, 2, 3):  # n black squares on white
        im = Image.new("RGB", (48, 48), "white")
        for k in range(n):
            ImageDraw.Draw(im).rectangle([4 + 14 * k, 18, 12 + 14 * k, 26], fill="black")
        im.save(images / f"{n}_0.png")
    replies = tmp_path / "replies.json"  # the scripted model: right, right (in words), wrong
    replies.write_text(json.dumps({"1_0": "1", "2_0": "There are 2 squares.", "3_0": "5"}))
    listed = _cli(root, "bench", "list")
    assert listed.returncode == 0 and "count-shapes" in listed.stdout and "How many squares" in listed.stdout
    run = _cli(root, "bench", "run", "count-shapes", "--data", str(images), "--adapter", "scripted",
               "--model", f"file:{replies}", "--out", str(tmp_path / "out"), "--bootstrap", "20")
    assert run.returncode == 0, run.stderr
    rec = json.loads((tmp_path / "out" / "results_count-shapes.json").read_text())
    assert rec["metrics"]["overall"]["accuracy"] == pytest.approx(2 / 3) and rec["metrics"]["overall"]["n"] == 3
    assert rec["config"]["benchmark"] == "count-shapes" and rec["config"]["adapter"] == "scripted"
    samples = [json.loads(x) for x in (tmp_path / "out" / "samples_count-shapes.jsonl").read_text().splitlines()]
    assert [s["pred"] for s in samples] == ["1", "2", "5"] and "accuracy 0.6667" in run.stdout
    assert "count-shapes" not in BENCHMARKS  # the file lives only in the copy


def test_a_new_lvlm_attack_is_one_file(tmp_path, model_dir):
    root = _with_one_file(tmp_path, "lvlm/attacks/noise.py", NOISE)
    out = tmp_path / "out"
    run = _cli(root, "lvlm", "eval", "--attack", "noise", "--task", "vqa", "--model", str(model_dir),
               "--data", str(_vqa(tmp_path)), "--eps", "4/255", "--steps", "1", "--batch-size", "2",
               "--max-new-tokens", "3", "--n-boot", "10", "--out", str(out))
    assert run.returncode == 0, run.stderr
    rec = json.loads((out / "results_vqa-attack.json").read_text())
    m = rec["metrics"]
    assert rec["protocol"]["attack"] == "uniform-noise" and rec["config"]["attack"] == "noise"
    assert m["inside_eps"] and 0 < m["max_linf"] <= 4 / 255 + 1e-6 and m["clean"]["n"] == 3
    assert "uniform-noise 1 steps" in rec["tables"][0]["title"]


def test_ensemble_is_reachable_from_the_cli_and_apgd_stays_the_default(tmp_path, model_dir, capsys):
    data = _vqa(tmp_path)
    common = ["--task", "vqa", "--model", str(model_dir), "--data", str(data), "--eps", "4/255", "--steps", "1",
              "--batch-size", "3", "--max-new-tokens", "3", "--n-boot", "10"]
    assert main(["lvlm", "eval", *common, "--out", str(tmp_path / "apgd")]) == 0
    assert main(["lvlm", "eval", *common, "--attack", "ensemble", "--attack-arg", "low_precision=bfloat16",
                 "--out", str(tmp_path / "ens")]) == 0
    apgd, ens = (json.loads((tmp_path / d / "results_vqa-attack.json").read_text()) for d in ("apgd", "ens"))
    assert apgd["protocol"]["attack"] == "apgd-untargeted-lm-loss"  # the old records' label: they still compare
    assert "attack" not in apgd["config"]["settings"] and "attack_options" not in apgd["protocol"]
    assert ens["protocol"]["attack"] == "apgd-ensemble-lm-loss"
    assert ens["protocol"]["attack_options"] == {"low_precision": "bfloat16"}
    assert ens["metrics"]["inside_eps"] and ens["metrics"]["max_linf"] <= 4 / 255 + 1e-6
    rows = [json.loads(x) for x in (tmp_path / "ens" / "samples_vqa-attack.jsonl").read_text().splitlines()]
    assert all(r["adv_loss"] >= r["clean_loss"] - 1e-4 for r in rows)  # the ensemble pushed every image away
    assert "vqa: accuracy clean" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["lvlm", "eval", "--attack", "ensemle"], "unknown LVLM attack 'ensemle' (did you mean 'ensemble'?)"),
    (["lvlm", "eval", "--task", "vqaa"], "unknown LVLM task 'vqaa' (did you mean 'vqa'?)"),
    (["lvlm", "eval", "--attack-arg", "low_precision=float16"], "LVLM attack 'apgd' has no option(s)"),
    (["lvlm", "eval", "--attack", "ensemble", "--attack-arg", "steps=3"], "it accepts ['low_precision']"),
    (["lvlm", "targeted", "--target", "red", "--attack", "ensemble"], "unrecognized arguments: --attack"),
])
def test_lvlm_names_are_one_line_errors_before_anything_runs(tmp_path, model_dir, capsys, argv, message):
    args = ["--model", str(model_dir), "--data", str(_vqa(tmp_path)), "--out", str(tmp_path / "o")]
    with pytest.raises(SystemExit) if "unrecognized" in message else nullcontext():  # argparse's own error
        assert main([*argv, *args]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and ("unrecognized" in message or len(err.splitlines()) == 1), err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("argv, message", [
    (["bench", "run", "mmrr"], "unknown benchmark 'mmrr' (did you mean 'mmr'?)"),
    (["bench", "run", "vqa", "--setting", "prompt=plain"], "benchmark 'vqa' has no option(s) ['prompt']"),
    (["bench", "run", "mmr", "--setting", "limit=many"], "benchmark 'mmr' option limit: expected an int"),
])
def test_bench_errors_are_one_line(tmp_path, capsys, argv, message):
    rc = main([*argv, "--data", str(_vqa(tmp_path)), "--adapter", "scripted", "--model", "random",
               "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and message in err and len(err.splitlines()) == 1, err


def test_registered_names_and_the_vqa_benchmark(tmp_path, capsys):
    assert LVLM_TASKS.list() == ["caption", "mmr", "vqa"] and LVLM_ATTACKS.list() == ["apgd", "ensemble"]
    assert {"mmr", "vqa", "caption"} <= set(BENCHMARKS.list())
    assert LVLM_TASKS.get("mmr").metric_keys == ("ra", "mr") and LVLM_TASKS.get("caption").karpathy
    assert main(["bench", "list"]) == 0 and "prompt, pairing" in capsys.readouterr().out
    out = tmp_path / "out"
    assert main(["bench", "run", "vqa", "--data", str(_vqa(tmp_path)), "--adapter", "scripted", "--model",
                 "constant:Red.", "--out", str(out), "--bootstrap", "10"]) == 0
    rec = json.loads((out / "results_vqa.json").read_text())
    o = rec["metrics"]["overall"]  # one of three answered right; one human answer each: soft accuracy 1/3 of that
    assert o["exact_match"] == pytest.approx(1 / 3) and o["accuracy"] == pytest.approx(1 / 9)
    assert rec["config"]["benchmark"] == "vqa" and rec["kind"] == "vqa"


def test_a_task_without_the_attack_protocol_says_so():
    from mmrobust.eval.mllm.task import MLLMTask, Question

    task = MLLMTask()
    with pytest.raises(NotImplementedError, match="cannot be attacked"):
        task.references(Question("u", "x.png", "p", "A"))
    with pytest.raises(NotImplementedError, match="cannot be attacked"):
        task.sample_scores([])
    assert task.sample_keys == task.metric_keys == ()
