"""No run writes outside its --out, and no run deletes or changes a file it did not create.

Every command runs in a sandbox holding its inputs; hypothesis fills the --out folder with files of the
user's (some named like the tool's own outputs) or points --out at an input folder. Afterwards every file
that existed before is byte-identical (except the outputs a command documents that it rewrites on a
rerun, e.g. its own results_<name>.json), and every new file lies under --out."""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from _fuzz import FUZZ, assert_clean_failure, run_cli, snapshot
from mmrobust.reports.model_card import MARKER

pytestmark = pytest.mark.timeout(900)

USER_NAMES = st.lists(st.sampled_from(
    ["notes.txt", "train.csv", "test.csv", "classes.json", "manifest.csv", "poison.json", "config.yaml",
     "results.json", "model/open_clip_model.safetensors", "images/00000000.png", "images/mine.png",
     "checkpoints/last.pt", "train_log.jsonl", "cache.jsonl", "report.html", "data/keep.bin", "README.md"]),
    min_size=0, max_size=4, unique=True)

# outputs a command rewrites by design when run again into the same folder (its own results)
REWRITES = {"eval": ("results_", "samples_", "adv_", "partial_"), "mmr": ("results_mmr", "samples_mmr", "cache.jsonl",
                                                                           "mmr_categories"), "report": ()}


@pytest.fixture(scope="module")
def sandbox(micro_world, tmp_path_factory):
    """Inputs every command reads: a world, an MMR world, a 1-step model, a poison record."""
    from mmrobust.world.mmr import generate_mmr_world

    root = tmp_path_factory.mktemp("sandbox")
    shutil.copytree(Path(micro_world.train_manifest).parent, root / "world")
    generate_mmr_world(root / "mmr", pairs_per_category=1, seed=0, image_size=16)
    w = root / "world"
    assert run_cli(["train", "--task", "clip", "--model", "mmrobust-micro", "--data", str(w / "train.csv"), "--out",
                    str(root / "run"), "--steps", "1", "--batch-size", "8", "--quiet"])[0] == 0
    assert run_cli(["poison", "--manifest", str(w / "train.csv"), "--out", str(root / "poisoned"), "--target",
                    "star", "--count", "2"])[0] == 0
    assert run_cli(["mmr", "run", "--data", str(root / "mmr"), "--adapter", "scripted", "--model", "random",
                    "--out", str(root / "mmr-run"), "--bootstrap", "0"])[0] == 0
    return root


def _commands(root: Path, out: Path) -> dict[str, list[str]]:
    w, model = root / "world", root / "run" / "model"
    ev = ["--model", str(model), "--data", str(w / "test.csv"), "--classes", str(w / "classes.json"), "--out", str(out)]
    return {
        "generate": ["generate", "--out", str(out), "--n-train", "8", "--n-test", "4", "--image-size", "16"],
        "poison": ["poison", "--manifest", str(w / "train.csv"), "--out", str(out), "--target", "star", "--count", "2"],
        "train": ["train", "--task", "clip", "--model", "mmrobust-micro", "--data", str(w / "train.csv"), "--out",
                  str(out), "--steps", "1", "--batch-size", "8", "--quiet"],
        "eval zeroshot": ["eval", "zeroshot", *ev],
        "eval backdoor": ["eval", "backdoor", *ev, "--poison-record", str(root / "poisoned" / "poison.json")],
        "eval robust": ["eval", "robust", *ev, "--attack", "pgd", "--n-samples", "2", "--steps", "1", "--save-adv"],
        "mmr run": ["mmr", "run", "--data", str(root / "mmr"), "--adapter", "scripted", "--model", "random", "--out",
                    str(out), "--bootstrap", "0"],
        "mmr score": ["mmr", "score", str(root / "mmr-run" / "samples_mmr.jsonl"), "--out", str(out), "--bootstrap",
                      "0"],
        "report": ["report", str(root / "run"), str(root / "mmr-run"), "--out", str(out / "report.html")],
        "report card": ["report", str(root / "mmr-run"), "--model-card", str(out), "--model", "org/m"],
    }


def _allowed_rewrite(command: str, rel: str) -> bool:
    prefixes = REWRITES.get(command.split()[0], ())
    return any(Path(rel).name.startswith(p) for p in prefixes)


@settings(FUZZ, max_examples=40)
@given(command=st.sampled_from(["generate", "poison", "train", "eval zeroshot", "eval backdoor", "eval robust",
                                "mmr run", "mmr score", "report", "report card"]),
       names=USER_NAMES, into=st.sampled_from(["fresh", "fresh", "input world", "input run"]))
def test_runs_write_only_under_out_and_delete_nothing(sandbox, command, names, into):
    scratch = Path(tempfile.mkdtemp(dir=sandbox))
    out = {"fresh": scratch / "out", "input world": sandbox / "world", "input run": sandbox / "run"}[into]
    for i, name in enumerate(names):  # the user's own files, some named like the tool's outputs
        f = out / name
        f.parent.mkdir(parents=True, exist_ok=True)
        if not f.exists():
            f.write_bytes(f"user file {i}\n".encode())
    before = snapshot(sandbox)
    own_cards = {rel for rel in before if Path(rel).name == "README.md" and MARKER in (sandbox / rel).read_text(
        errors="replace")}  # model cards an earlier example wrote: rewritten by design, a user's README.md never
    rc, _, err = run_cli(_commands(sandbox, out)[command])
    assert_clean_failure(rc, err)
    after = snapshot(sandbox)
    out_rel = out.relative_to(sandbox)
    for rel, digest in before.items():
        inside_out = Path(rel).is_relative_to(out_rel)
        if inside_out and (_allowed_rewrite(command, rel) or rel in own_cards):  # its own, from an earlier example
            continue
        assert after.get(rel) == digest, f"{command} changed or deleted {rel} (rc {rc}): {err[-500:]}"
    for rel in set(after) - set(before):
        assert Path(rel).is_relative_to(out_rel), f"{command} wrote {rel} outside --out {out_rel}"
