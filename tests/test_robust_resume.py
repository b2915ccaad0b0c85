"""Robust evaluation resumes: finished (eps, batch) chunks are saved as they go, a killed run picks up
where it stopped without attacking those chunks again, and the result equals an uninterrupted run."""
from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from safetensors.torch import load_file

import mmrobust.eval.robust as robust
from mmrobust.data.datasets import ClassInfo, LabelledDataset
from mmrobust.eval.robust import RobustSettings, evaluate_robust
from mmrobust.eval.zeroshot import build_classifier
from mmrobust.models import create_clip
from mmrobust.registry import ATTACKS

EPS = (2 / 255, 4 / 255)
KW = dict(attack="pgd", eps=EPS, n_samples=40, seed=3, batch_size=8, attack_options={"steps": 3})
N_CHUNKS = 2 * 5  # 2 eps x 40 samples / batch 8


class _Stop(Exception):
    """Stands in for a kill after some batches."""


class _CountingAttacks:
    """ATTACKS stand-in: wraps the real attack, logs each call's eps and seed, and can stop after k calls."""

    def __init__(self, stop_after: int | None = None) -> None:
        self.calls: list[tuple[float, int]] = []
        self.stop_after = stop_after

    def get(self, name):
        fn = ATTACKS.get(name)

        @functools.wraps(fn)
        def wrapped(logits_fn, x, y, **kw):
            if self.stop_after is not None and len(self.calls) >= self.stop_after:
                raise _Stop
            self.calls.append((kw["eps"], kw["seed"]))
            return fn(logits_fn, x, y, **kw)

        return wrapped


@pytest.fixture(scope="module")
def setup(micro_world):
    model = create_clip("mmrobust-micro", seed=0)
    classes = ClassInfo.load(micro_world.classes)
    ds = LabelledDataset(micro_world.test_manifest, classes=classes, image_size=16, preload=True)
    return model, ds, build_classifier(model, classes.classnames, classes.templates)


def _lines(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_interrupted_run_resumes_without_recomputing_and_matches_full_run(tmp_path, setup, monkeypatch):
    model, ds, clf = setup
    full_adv, part_adv = tmp_path / "full", tmp_path / "part"
    full_adv.mkdir(), part_adv.mkdir()
    full = _CountingAttacks()
    monkeypatch.setattr(robust, "ATTACKS", full)
    m_full, rows_full = _robust(model, ds, clf, **KW, save_adv=full_adv)
    assert len(full.calls) == N_CHUNKS

    partial = tmp_path / "partial_robust.jsonl"
    monkeypatch.setattr(robust, "ATTACKS", _CountingAttacks(stop_after=3))
    with pytest.raises(_Stop):
        _robust(model, ds, clf, **KW, save_adv=part_adv, partial=partial)
    first = _lines(partial)
    assert len(first) == 3 and all(c["seed"] == KW["seed"] for c in first)

    resumed = _CountingAttacks()
    monkeypatch.setattr(robust, "ATTACKS", resumed)
    m_res, rows_res = _robust(model, ds, clf, **KW, save_adv=part_adv, partial=partial)
    assert len(resumed.calls) == N_CHUNKS - 3  # the 3 saved chunks are not attacked again
    assert resumed.calls == full.calls[3:]  # same eps and seed per chunk as in the full run
    assert m_res == m_full and rows_res == rows_full
    chunks = _lines(partial)
    assert len({(c["eps"], c["start"]) for c in chunks}) == len(chunks) == N_CHUNKS
    for name in ("adv_2_255", "adv_4_255"):
        a, b = load_file(str(full_adv / f"{name}.safetensors")), load_file(str(part_adv / f"{name}.safetensors"))
        assert a["x_adv"].equal(b["x_adv"]) and a["index"].equal(b["index"])


def test_torn_last_line_is_skipped_and_recomputed(tmp_path, setup, monkeypatch):
    model, ds, clf = setup
    m_full, rows_full = _robust(model, ds, clf, **KW)
    partial = tmp_path / "partial_robust.jsonl"
    monkeypatch.setattr(robust, "ATTACKS", _CountingAttacks(stop_after=4))
    with pytest.raises(_Stop):
        _robust(model, ds, clf, **KW, partial=partial)
    text = partial.read_text().splitlines(keepends=True)
    partial.write_text("".join(text[:3]) + text[3][: len(text[3]) // 2])  # killed while writing line 4
    resumed = _CountingAttacks()
    monkeypatch.setattr(robust, "ATTACKS", resumed)
    m, rows = _robust(model, ds, clf, **KW, partial=partial)
    assert len(resumed.calls) == N_CHUNKS - 3
    assert m == m_full and rows == rows_full
    assert len(_lines_ok(partial)) == N_CHUNKS


def _lines_ok(path):
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            pass
    return out


@pytest.mark.parametrize("change", ["attack_options", "seed", "model", "batch_size"])
def test_partial_file_of_other_settings_is_not_reused(tmp_path, setup, monkeypatch, change):
    model, ds, clf = setup
    partial = tmp_path / "partial_robust.jsonl"
    _robust(model, ds, clf, **KW, partial=partial)  # a finished run of the base settings
    kw = dict(KW)
    other_model = model
    if change == "attack_options":
        kw["attack_options"] = {"steps": 2}
    elif change == "seed":
        kw["seed"] = 4
    elif change == "batch_size":
        kw["batch_size"] = 10
    else:
        other_model = create_clip("mmrobust-micro", seed=1)
    expected = _robust(other_model, ds, clf, **kw)
    counting = _CountingAttacks()
    monkeypatch.setattr(robust, "ATTACKS", counting)
    got = _robust(other_model, ds, clf, **kw, partial=partial)
    assert len(counting.calls) == 2 * -(-40 // kw["batch_size"])  # every chunk attacked anew
    assert got == expected


def _cli_args(world, out):
    return ["eval", "robust", "--model", "mmrobust-tiny", "--data", str(world.test_manifest),
            "--classes", str(world.classes), "--attack", "pgd", "--eps", "2/255,4/255", "--steps", "20",
            "--batch-size", "4", "--n-samples", "80", "--seed", "5", "--out", str(out)]


def _complete_lines(path):
    if not path.is_file():
        return 0
    return len(_lines_ok(path))


def test_cli_killed_mid_run_resumes_to_the_uninterrupted_result(tmp_path, tiny_world, monkeypatch):
    from mmrobust.cli.main import main

    out = tmp_path / "killed"
    partial = out / robust.PARTIAL_NAME
    cmd = [sys.executable, "-m", "mmrobust.cli.main", *_cli_args(tiny_world, out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=dict(os.environ))
    deadline = time.monotonic() + 120
    while _complete_lines(partial) < 3 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]
    assert not (out / "results_robust.json").exists()
    saved = _complete_lines(partial)
    assert 3 <= saved < 40

    resumed = _CountingAttacks()
    monkeypatch.setattr(robust, "ATTACKS", resumed)
    assert main(_cli_args(tiny_world, out)) == 0
    assert len(resumed.calls) == 40 - saved  # 2 eps x 20 batches, the saved ones not attacked again
    assert not partial.exists()  # removed once the results are written

    monkeypatch.setattr(robust, "ATTACKS", ATTACKS)
    ref = tmp_path / "full"
    assert main(_cli_args(tiny_world, ref)) == 0
    a, b = json.loads((out / "results_robust.json").read_text()), json.loads((ref / "results_robust.json").read_text())
    assert a["metrics"] == b["metrics"] and a["sample_ids"] == b["sample_ids"]
    assert (out / "samples_robust.jsonl").read_text() == (ref / "samples_robust.jsonl").read_text()


def test_no_resume_starts_over(tmp_path, micro_world, monkeypatch):
    from mmrobust.pipelines.evaluate import EvalData

    data = EvalData(manifest=str(micro_world.test_manifest), classes=str(micro_world.classes))
    kw = dict(model="mmrobust-micro", data=data, out_dir=tmp_path, attack="pgd", eps=(4 / 255,), n_samples=16,
              batch_size=8, attack_options={"steps": 2})
    monkeypatch.setattr(robust, "ATTACKS", _CountingAttacks(stop_after=1))
    with pytest.raises(_Stop):
        _pipeline(**kw)
    assert len(_lines(tmp_path / robust.PARTIAL_NAME)) == 1
    counting = _CountingAttacks()
    monkeypatch.setattr(robust, "ATTACKS", counting)
    _pipeline(**kw, resume=False)
    assert len(counting.calls) == 2


def test_pipeline_resume_with_saved_adversarials_and_cleanup_keeps_user_files(tmp_path, micro_world, monkeypatch):
    from mmrobust.pipelines.evaluate import EvalData

    data = EvalData(manifest=str(micro_world.test_manifest), classes=str(micro_world.classes))
    kw = dict(model="mmrobust-micro", data=data, attack="pgd", eps=(4 / 255,), n_samples=24, batch_size=8,
              attack_options={"steps": 2}, save_adv=True)
    full = _pipeline(out_dir=tmp_path / "full", **kw)
    out = tmp_path / "part"
    (out / "partial_robust").mkdir(parents=True)
    (out / "partial_robust" / "mine.txt").write_text("keep me")
    monkeypatch.setattr(robust, "ATTACKS", _CountingAttacks(stop_after=2))
    with pytest.raises(_Stop):
        _pipeline(out_dir=out, **kw)
    assert len(list((out / "partial_robust").glob("*.safetensors"))) == 2
    counting = _CountingAttacks()
    monkeypatch.setattr(robust, "ATTACKS", counting)
    assert _pipeline(out_dir=out, **kw) == full and len(counting.calls) == 1
    a, b = load_file(str(tmp_path / "full" / "adv_4_255.safetensors")), load_file(str(out / "adv_4_255.safetensors"))
    assert a["x_adv"].equal(b["x_adv"])
    assert not (out / robust.PARTIAL_NAME).exists()
    assert [p.name for p in (out / "partial_robust").iterdir()] == ["mine.txt"]


def _robust(model, ds, clf, *, save_adv=None, partial=None, **settings):
    """evaluate_robust with its settings given as keywords."""
    return evaluate_robust(model, ds, clf, RobustSettings(**settings), save_adv=save_adv, partial=partial)


def _pipeline(*, model, data, out_dir, clip=None, reference=None, save_adv=False, resume=True, **settings):
    """eval_robust with its settings given as keywords."""
    from mmrobust.pipelines.evaluate import eval_robust

    return eval_robust(model=model, data=data, out_dir=out_dir, clip=clip, reference=reference, save_adv=save_adv,
                       resume=resume, settings=RobustSettings(**settings))
