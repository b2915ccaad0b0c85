"""Property-based fuzzing (hypothesis) of the CLI, YAML configs, manifests, MMR question and response files
and model folders: whatever a careless or hostile user hands in, mmrobust either works or stops with exit
code 2 and one error line, never a traceback."""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from _fuzz import FUZZ, HOSTILE, assert_clean_failure, run_cli

pytestmark = pytest.mark.timeout(900)

TRAIN_OPTS = ["--steps", "--batch-size", "--lr", "--weight-decay", "--warmup", "--grad-clip", "--ckpt-every",
              "--seed", "--init-seed", "--workers", "--delimiter", "--image-col", "--precision",
              "--accum-steps", "--image-size"]
TASK_OPTS = ["par:tau", "par:view", "cleanclip:l1", "cleanclip:l2", "fare:eps", "fare:attack_steps",
             "fare:step_size", "fare:attack", "fare:lora_r", "fare:lora_alpha", "fare:lora_targets", "clip:nosuch"]


@pytest.fixture(scope="module")
def paths(micro_world, tmp_path_factory):
    from mmrobust.world.mmr import generate_mmr_world

    mmr = generate_mmr_world(tmp_path_factory.mktemp("mmr"), pairs_per_category=1, seed=0, image_size=16)
    return {"train": str(micro_world.train_manifest), "test": str(micro_world.test_manifest),
            "classes": str(micro_world.classes), "mmr": str(mmr), "tmp": tmp_path_factory.mktemp("fuzz")}


def _out(paths: dict) -> str:
    return tempfile.mkdtemp(dir=paths["tmp"])


@FUZZ
@given(option=st.sampled_from(TRAIN_OPTS), value=HOSTILE)
def test_train_options(paths, option, value):
    base = ["train", "--task", "clip", "--model", "mmrobust-micro", "--data", paths["train"], "--out",
            _out(paths) + "/run", "--steps", "1", "--batch-size", "8", "--quiet"]
    assert_clean_failure(*run_cli([*base, option, value])[::2])


@FUZZ
@given(opt=st.sampled_from(TASK_OPTS), value=HOSTILE)
def test_task_options(paths, opt, value):
    task, key = opt.split(":")
    argv = ["train", "--task", task, "--model", "mmrobust-micro", "--data", paths["train"], "--out",
            _out(paths) + "/run", "--steps", "1", "--batch-size", "8", "--quiet", "--opt", f"{key}={value}"]
    assert_clean_failure(*run_cli(argv)[::2])


@FUZZ
@given(option=st.sampled_from(["--eps", "--n-samples", "--steps", "--batch-size", "--seed", "--attack-opt",
                               "--norm", "--attack"]), value=HOSTILE)
def test_eval_robust_options(paths, option, value):
    argv = ["eval", "robust", "--model", "mmrobust-micro", "--data", paths["test"], "--classes", paths["classes"],
            "--out", _out(paths), "--attack", "pgd", "--n-samples", "4", "--steps", "1", option, value]
    assert_clean_failure(*run_cli(argv)[::2])


@FUZZ
@given(option=st.sampled_from(["--rate", "--count", "--seed", "--trigger-param", "--image-size", "--delimiter",
                               "--template", "--target", "--trigger"]), value=HOSTILE)
def test_poison_options(paths, option, value):
    amount = [] if option in ("--rate", "--count") else ["--count", "3"]
    argv = ["poison", "--manifest", paths["train"], "--out", _out(paths) + "/p", "--target", "star", *amount,
            option, value]
    assert_clean_failure(*run_cli(argv)[::2])


@FUZZ
@given(option=st.sampled_from(["--limit", "--bootstrap", "--max-new-tokens", "--temperature", "--seed",
                               "--adapter-arg", "--prompt", "--parser", "--adapter"]), value=HOSTILE)
def test_mmr_run_options(paths, option, value):
    argv = ["mmr", "run", "--data", paths["mmr"], "--adapter", "scripted", "--model", "random", "--out",
            _out(paths), "--bootstrap", "0", option, value]
    assert_clean_failure(*run_cli(argv)[::2])


YAML_TEXT = st.one_of(
    st.text(max_size=80),
    st.sampled_from(["a: [1,", "steps: !!python/object/apply:os.system ['true']", "3: 4", "help: true",
                     "- a\n- b", "steps: {a: 1}", "steps: -3", "lr: abc", "resume: 3", "? [a]\n: 1", "steps: 1e9999",
                     "batch_size: 99999999999999999999", "config: other.yaml", "opt: [tau=abc]", "&a [*a]", ""]),
)


@FUZZ
@given(text=YAML_TEXT, encoding=st.sampled_from(["utf-8", "utf-16", "latin-1"]))
def test_yaml_configs(paths, text, encoding):
    cfg = Path(_out(paths)) / "c.yaml"
    cfg.write_bytes(text.encode(encoding, errors="replace"))
    argv = ["train", "--config", str(cfg), "--task", "clip", "--model", "mmrobust-micro", "--data", paths["train"],
            "--out", _out(paths) + "/run", "--steps", "1", "--batch-size", "8", "--quiet"]
    assert_clean_failure(*run_cli(argv)[::2])


CELL = st.one_of(HOSTILE, st.sampled_from(["images/00000000.png", "../../../etc/passwd", "/etc/passwd", "/dev/zero",
                                           "star", "0", "a photo of a star."]))


@FUZZ
@given(header=st.lists(st.sampled_from(["image", "caption", "label", "x", ""]), min_size=0, max_size=4),
       rows=st.lists(st.lists(CELL, min_size=0, max_size=4), max_size=5), raw=st.binary(max_size=40),
       use_raw=st.booleans(), command=st.sampled_from(["zeroshot", "poison", "train"]))
def test_manifests(paths, header, rows, raw, use_raw, command):
    root = Path(_out(paths))
    manifest = root / "m.csv"
    if use_raw:
        manifest.write_bytes(raw)
    else:
        manifest.write_text("\n".join(",".join(r) for r in [header, *rows]) + "\n")
    argv = {"zeroshot": ["eval", "zeroshot", "--model", "mmrobust-micro", "--data", str(manifest), "--classes",
                         paths["classes"], "--out", str(root / "e")],
            "poison": ["poison", "--manifest", str(manifest), "--out", str(root / "p"), "--target", "star",
                       "--count", "1"],
            "train": ["train", "--task", "clip", "--model", "mmrobust-micro", "--data", str(manifest), "--out",
                      str(root / "t"), "--steps", "1", "--batch-size", "1", "--quiet"]}[command]
    assert_clean_failure(*run_cli(argv)[::2])


JSONISH = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
                                 st.text(max_size=10)),
                       lambda inner: st.one_of(st.lists(inner, max_size=3),
                                               st.dictionaries(st.text(max_size=8), inner, max_size=4)), max_leaves=8)
MMR_ROW = st.fixed_dictionaries({}, optional={
    "id": st.one_of(st.sampled_from(["attribute/shape/01", "a/b", "", "../x"]), JSONISH),
    "question": st.one_of(st.just("What?\nA. a\nB. b"), JSONISH),
    "ground_truth": st.one_of(st.sampled_from(["A", "B", "E", "(a)", ""]), JSONISH),
    "question_type": st.one_of(st.sampled_from(["POS", "NEG", "neg", "X"]), JSONISH),
    "image": st.one_of(st.sampled_from(["../../../etc/passwd", "/etc/passwd", "images/none.png", "/dev/zero"]),
                       JSONISH)})


@FUZZ
@given(rows=st.one_of(st.lists(MMR_ROW, max_size=4), JSONISH), as_jsonl=st.booleans())
def test_mmr_question_files(paths, rows, as_jsonl):
    root = Path(_out(paths))
    qfile = root / ("q.jsonl" if as_jsonl else "q.json")
    if as_jsonl and isinstance(rows, list):
        qfile.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    else:
        qfile.write_text(json.dumps(rows))
    argv = ["mmr", "run", "--data", str(qfile), "--adapter", "scripted", "--model", "random", "--out",
            str(root / "o"), "--bootstrap", "0"]
    assert_clean_failure(*run_cli(argv)[::2])


RESPONSE_ROW = st.one_of(JSONISH, st.fixed_dictionaries({}, optional={
    "id": st.one_of(st.just("attribute/shape/01"), JSONISH), "ground_truth": st.one_of(st.sampled_from(
        ["A", "Z", "(b)"]), JSONISH), "question_type": st.one_of(st.sampled_from(["POS", "NEG"]), JSONISH),
    "response": st.one_of(st.text(max_size=20), JSONISH), "error": JSONISH, "options": JSONISH}))


@FUZZ
@given(rows=st.lists(RESPONSE_ROW, max_size=5), junk=st.binary(max_size=20), parser=st.sampled_from(
    ["official", "strict", "lenient"]))
def test_mmr_response_files(paths, rows, junk, parser):
    root = Path(_out(paths))
    f = root / "samples_mmr.jsonl"
    f.write_bytes(("\n".join(json.dumps(r) for r in rows) + "\n").encode() + junk)
    assert_clean_failure(*run_cli(["mmr", "score", str(f), "--parser", parser, "--bootstrap", "0", "--out",
                                   str(root / "s")])[::2])


@FUZZ
@given(config=st.one_of(JSONISH, st.fixed_dictionaries({"model_cfg": st.one_of(JSONISH, st.fixed_dictionaries({
    "embed_dim": st.sampled_from([32, 0, -1, 10**7, "x"]), "vision_cfg": st.fixed_dictionaries({
        "image_size": st.sampled_from([16, 0, 10**6]), "layers": st.sampled_from([1, 0, 10**6]),
        "width": st.sampled_from([32, 0, 10**7]), "patch_size": st.sampled_from([8, 0, -8])}),
    "text_cfg": st.fixed_dictionaries({"context_length": st.sampled_from([16, 0]), "vocab_size": st.sampled_from(
        [49408, 0]), "width": st.sampled_from([32, 0]), "heads": st.sampled_from([2, 0]), "layers": st.sampled_from(
        [1, 10**6])})})), "preprocess_cfg": st.one_of(JSONISH, st.fixed_dictionaries({"mean": st.just([0.5] * 3),
                                                                                      "std": st.sampled_from(
                                                                                          [[0.5] * 3, [0, 0, 0],
                                                                                           [1]])}))})),
       weights=st.one_of(st.none(), st.binary(max_size=64)), raw_config=st.booleans())
def test_model_folders(paths, config, weights, raw_config):
    model = Path(_out(paths)) / "model"
    model.mkdir()
    (model / "open_clip_config.json").write_text("{not json" if raw_config and weights is None else json.dumps(config))
    if weights is not None:
        (model / "open_clip_model.safetensors").write_bytes(weights)
    argv = ["eval", "zeroshot", "--model", str(model), "--data", paths["test"], "--classes", paths["classes"],
            "--out", _out(paths)]
    assert_clean_failure(*run_cli(argv)[::2])
