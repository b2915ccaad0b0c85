"""Sanity warnings (reports/sanity.py): each fires on a bad setup and stays silent on a good one; the records
written by evaluations carry them, the CLI prints them, and the HTML report shows them at the top of the
record's section."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mmrobust.reports import sanity as s


# --- pure functions: one test per warning, bad and good setup ---------------------------------------------------

def test_backdoor_not_taken():
    assert "did not learn the backdoor" in s.backdoor_not_taken(0.04)[0]
    assert "the poisoned CLIP stage" in s.backdoor_not_taken(0.1, stage="poisoned CLIP")[0]
    assert s.backdoor_not_taken(0.97) == [] and s.backdoor_not_taken(float("nan")) == []


def test_trigger_alone():
    assert "already predicted as the target" in s.trigger_alone(0.6, 0.5)[0]
    assert s.trigger_alone(0.99, 0.02) == [] and s.trigger_alone(0.9, 0.3) == []  # bias well below the ASR


def test_too_few_poisoned():
    (w,) = s.too_few_poisoned(10, 12_000)
    assert "only 10 of 12,000" in w and "600 of 12,000" in w and "75-1,500 of 3M" in w
    assert s.too_few_poisoned(0, 500)  # nothing poisoned
    assert s.too_few_poisoned(50, 100_000_000)  # a rate below 75 of 3M
    assert s.too_few_poisoned(600, 12_000) == [] and s.too_few_poisoned(75, 3_000_000) == []


def test_target_absent():
    assert "not one of the 3 classes" in s.target_absent("star", ["circle", "square", "triangle"])[0]
    assert s.target_absent("star", ["circle", "star"]) == []


def test_test_in_train():
    assert "3 of 40 test images are also training images" in s.test_in_train(3, 40, "a.png")[0]
    assert s.test_in_train(0, 40) == []


def test_robust_above_clean_and_rising_with_eps():
    above = s.robust_above_clean(0.5, {"2/255": 0.6, "4/255": 0.3}, n=100)
    assert len(above) == 1 and "above the clean accuracy" in above[0]
    rising = s.robust_above_clean(0.8, {"2/255": 0.2, "4/255": 0.5}, n=100)
    assert len(rising) == 1 and "rises with eps (2/255 -> 4/255)" in rising[0]
    assert s.robust_above_clean(0.8, {"0/255": 0.8, "2/255": 0.4, "4/255": 0.41}, n=100) == []  # one sample: noise


def test_targeted_beats_untargeted():
    assert "targeted attack leaves 10.0% robust" in s.targeted_beats_untargeted(0.5, 0.1)[0]
    assert s.targeted_beats_untargeted(0.5, 0.47) == []


def test_randomized_model():
    assert "EOT" in s.randomized_model(0.3)[0] and s.randomized_model(0.0) == []


def test_bad_gradients():
    zero, nan = s.bad_gradients(2, 1, 16)
    assert "2 of 16 points have a zero input gradient" in zero and "1 of 16 points have a NaN" in nan
    assert s.bad_gradients(0, 0, 16) == []


def test_tower_resolution():
    assert s.tokens(224, 14) == 257 and s.tokens(336, 14) == 577
    (trained,) = s.tower_resolution(clip_size=224, lvlm_size=336, tower_size=336, patch_size=14)
    assert "trained at 224 px = 256 image tokens (16 x 16 patches)" in trained
    assert "at 336 px = 576 image tokens (24 x 24 patches)" in trained and "--image-size 336" in trained
    (runs,) = s.tower_resolution(clip_size=336, lvlm_size=336, tower_size=224, patch_size=14)
    assert "runs at 224 px = 256 image tokens" in runs and "leave --image-size out" in runs
    assert s.tower_resolution(clip_size=336, lvlm_size=336, tower_size=336, patch_size=14) == []


def test_normalization_mismatch():
    clip = {"mean": [0.481, 0.458, 0.408], "std": [0.269, 0.261, 0.276]}
    assert "normalizes with mean [0.5, 0.5, 0.5]" in s.normalization_mismatch(
        clip, {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]})[0]
    assert s.normalization_mismatch(clip, dict(clip)) == []


def test_many_unparseable():
    assert "30 of 100 answers (30.0%) could not be parsed by the 'official'" in s.many_unparseable(
        30, 100, parser="official")[0]
    assert s.many_unparseable(5, 100) == [] and s.many_unparseable(0, 0) == []


def test_pairs_dropped():
    unpaired, errors = s.pairs_dropped(2, 3, 97)
    assert "2 question id(s)" in unpaired and "3 of 100 pairs had an API or inference error" in errors
    assert s.pairs_dropped(0, 0, 100) == []


def test_empty_questions():
    assert "question list is empty" in s.empty_questions(0)[0] and s.empty_questions(3) == []


# --- records written by evaluations carry them -------------------------------------------------------------------

def _saved_micro(tmp_path: Path) -> Path:
    from mmrobust.models import create_clip, save_clip

    save_clip(create_clip("mmrobust-micro", seed=0), tmp_path / "m")
    return tmp_path / "m"


def test_eval_backdoor_record_and_cli_carry_the_warnings(tmp_path, micro_world, capsys):
    from mmrobust.cli.main import main

    out = tmp_path / "eval"
    target = json.loads(Path(micro_world.classes).read_text())["classnames"][0]
    assert main(["eval", "backdoor", "--model", str(_saved_micro(tmp_path)), "--data", str(micro_world.test_manifest),
                 "--classes", str(micro_world.classes), "--trigger", "badnet", "--target", target,
                 "--out", str(out)]) == 0
    rec = json.loads((out / "results_backdoor.json").read_text())
    assert rec["metrics"]["asr"] < 0.5  # an untrained CLIP has no backdoor
    assert any("did not learn the backdoor" in w for w in rec["warnings"])
    err = capsys.readouterr().err
    assert "warning: ASR is" in err
    p = rec["protocol"]
    assert p["target"] == target and len(p["templates_sha"]) == 16 and p["classifier"] == "zero-shot"
    assert p["packages"]["torch"] and "trigger_sha" in p


def test_poison_record_flags_test_images_that_are_training_images(tmp_path, micro_world):
    from mmrobust.data.poison import make_trigger, poison_manifest
    from mmrobust.pipelines.evaluate import EvalData, poison_warnings

    rec = poison_manifest(manifest=micro_world.train_manifest, out_dir=tmp_path / "p", trigger=make_trigger("badnet"),
                          target="x", count=2, seed=0)
    leaky = EvalData(manifest=str(micro_world.train_manifest), classes=str(micro_world.classes))
    clean = EvalData(manifest=str(micro_world.test_manifest), classes=str(micro_world.classes))
    found = poison_warnings(rec.record_path, leaky)
    assert any("only 2 of 256 pairs" in w for w in found)
    assert any("of 256 test images are also training images" in w for w in found)
    assert not any("also training images" in w for w in poison_warnings(rec.record_path, clean))


class _Noisy(torch.nn.Module):
    """A CLIP whose image embedding gets fresh noise at every forward (a randomized defense)."""

    def __init__(self, clip):
        super().__init__()
        self.clip = clip

    def encode_image(self, x, normalize=False):
        return self.clip.encode_image(x + 0.05 * torch.randn_like(x), normalize=normalize)


def test_robust_eval_records_a_randomized_model_and_protocol(tmp_path, micro_world):
    from mmrobust.data.datasets import ClassInfo, LabelledDataset
    from mmrobust.eval.zeroshot import build_classifier
    from mmrobust.models import create_clip
    from mmrobust.pipelines.evaluate import EvalData

    clip = create_clip("mmrobust-micro", seed=0)
    classes = ClassInfo.load(micro_world.classes)
    ds = LabelledDataset(micro_world.test_manifest, classes=classes, image_size=16, preload=True)
    clf = build_classifier(clip, classes.classnames, classes.templates)
    m, _ = _robust(_Noisy(clip), ds, clf, attack="pgd", eps=[2 / 255], n_samples=8,
                           attack_options={"steps": 2})
    assert any("not deterministic" in w and "EOT" in w for w in m["check_warnings"])
    m, _ = _robust(clip, ds, clf, attack="pgd", eps=[2 / 255], n_samples=8, attack_options={"steps": 2})
    assert m["check_warnings"] == []

    data = EvalData(manifest=str(micro_world.test_manifest), classes=str(micro_world.classes))
    _pipeline(model="mmrobust-micro", clip=clip, data=data, out_dir=tmp_path / "r", attack="pgd",
                eps=(2 / 255, 4 / 255), n_samples=8, attack_options={"steps": 2})
    rec = json.loads((tmp_path / "r" / "results_robust.json").read_text())
    p = rec["protocol"]
    assert p["eps"] == [2 / 255, 4 / 255] and p["eps_255"] == ["2/255", "4/255"] and p["attack"] == "pgd"
    assert p["norm"] == "linf" and p["n_classes"] == len(classes.classnames) and "warnings" in rec


def test_robust_warnings_of_a_worst_case_whose_targeted_attack_breaks_far_more():
    from mmrobust.eval.robust import robust_warnings

    metrics = {"clean_top1": 0.8, "n": 100, "eps": {"4/255": {
        "robust_top1": 0.1, "broken_by": {"": 10, "clean": 20, "apgd-ce": 20, "apgd-t": 50}}}}
    assert any("targeted attack leaves 10.0% robust but the untargeted one 60.0%" in w
               for w in robust_warnings(metrics))
    metrics["eps"]["4/255"]["broken_by"] = {"": 10, "clean": 20, "apgd-ce": 68, "apgd-t": 2}
    assert robust_warnings(metrics) == []


def test_nan_gradients_are_reported_by_the_attack_checks():
    from mmrobust.attacks import AttackCheckWarning, check_gradients

    def nan_grad(x):  # sqrt at 0: infinite derivative
        return torch.stack([torch.sqrt(x.flatten(1) * 0).sum(1), -torch.sqrt(x.flatten(1) * 0).sum(1)], 1)

    with pytest.warns(AttackCheckWarning, match="NaN or infinite input gradient"):
        check_gradients(nan_grad, torch.rand(4, 3, 4, 4), torch.zeros(4, dtype=torch.long), on_fail="warn")


def test_mllm_harness_records_unparseable_and_empty_runs(tmp_path):
    import toy_benchmark  # noqa: F401  (registers the "colour-quiz" evaluation)
    from mmrobust.eval.contract import run_evaluation
    from mmrobust.eval.mllm.harness import build_record
    from mmrobust.eval.mllm.task import MLLMTask
    from mmrobust.models.mllm.scripted import ScriptedAdapter

    (tmp_path / "images").mkdir()
    chatty = ScriptedAdapter(model="toy", responses=lambda r: "hmm, hard to say")
    rec = run_evaluation("colour-quiz", model=chatty, data=tmp_path / "images", settings={"n_boot": 0},
                         out_dir=tmp_path / "a")
    assert any("3 of 3 answers (100.0%) could not be parsed" in w for w in rec.warnings)
    assert rec.protocol["parser"] == "official" and rec.protocol["decoding"]["greedy"] is True
    assert len(rec.protocol["prompts_sha"]) == 16 and rec.protocol["parser_sha"]
    good = ScriptedAdapter(model="toy", responses=lambda r: "A")
    rec = run_evaluation("colour-quiz", model=good, data=tmp_path / "images", settings={"n_boot": 0},
                         out_dir=tmp_path / "b")
    assert rec.warnings == []
    empty = build_record(MLLMTask(), [], out_dir=tmp_path / "c", parser="official", n_boot=0, seed=0)
    assert any("question list is empty" in w for w in empty.warnings)


def test_mmr_record_warns_of_pairs_left_out(tmp_path):
    from mmrobust.eval.mllm.harness import rescore
    from mmrobust.eval.mmr.task import MMRTask

    def row(qid, kind, response="A", error=None):
        return {"uid": f"{qid}|{kind}", "id": qid, "question_type": kind, "category": "attribute/color",
                "level": "attribute", "ground_truth": "A", "options": {}, "response": response, "error": error}

    rows = [row("attribute/color/01", "POS"), row("attribute/color/01", "NEG"),
            row("attribute/color/02", "POS"), row("attribute/color/03", "POS"),
            row("attribute/color/03", "NEG", response=None, error="timeout")]
    rec = rescore(MMRTask(), rows, out_dir=tmp_path, parser="official", n_boot=0)
    assert any("1 question id(s) do not hold one POS and one NEG" in w for w in rec.warnings)
    assert any("1 of 2 pairs had an API or inference error" in w for w in rec.warnings)
    assert rescore(MMRTask(), rows[:2], out_dir=tmp_path, parser="official", n_boot=0).warnings == []


# --- the HTML report shows them first ----------------------------------------------------------------------------

def test_report_shows_the_warnings_at_the_top_of_the_section(tmp_path):
    from mmrobust.reports.contract import Record, Table, write_record
    from mmrobust.reports.html import write_report

    run = tmp_path / "run"
    table = Table.of("Backdoor", [("asr", "ASR", "%")], [{"asr": 0.04}])
    write_record(run, Record(kind="backdoor", metrics={"asr": 0.04}, tables=[table],
                             warnings=s.backdoor_not_taken(0.04)))
    write_record(tmp_path / "ok", Record(kind="backdoor", metrics={"asr": 0.99}, tables=[table]))
    page = write_report([run], tmp_path / "r.html").read_text()
    assert "did not learn the backdoor" in page
    assert page.index("class='warn'") < page.index("<h3>Backdoor</h3>")
    assert "class='warn'" not in write_report([tmp_path / "ok"], tmp_path / "ok.html").read_text()


def test_backdoor_story_record_warns_when_the_poisoned_stage_has_no_backdoor(tmp_path):
    from types import SimpleNamespace

    from mmrobust.stories.backdoor import BackdoorDemo, _summarise

    rec = SimpleNamespace(poisoned_ids=tuple(range(360)), n_rows=12_000)
    for asr, expected in ((0.1, 1), (0.98, 0)):
        stages = [{"stage": "poisoned CLIP", "clean_top1": 0.9, "asr": asr},
                  {"stage": "CleanCLIP", "clean_top1": 0.9, "asr": 0.05}]
        _summarise(tmp_path, BackdoorDemo(), stages, rec)
        warns = json.loads((tmp_path / "results_story.json").read_text())["warnings"]
        assert len(warns) == expected and all("the poisoned CLIP stage did not learn" in w for w in warns)


def test_poison_cli_and_training_on_a_poisoned_copy_warn_of_too_few_pairs_and_an_absent_target(tmp_path,
                                                                                               micro_world, capsys):
    from types import SimpleNamespace

    from mmrobust.cli.main import main
    from mmrobust.pipelines.train import poison_warnings

    out = tmp_path / "p"
    assert main(["poison", "--manifest", str(micro_world.train_manifest), "--out", str(out), "--trigger", "badnet",
                 "--target", "dragon", "--count", "2"]) == 0
    assert "warning: only 2 of 256 pairs" in capsys.readouterr().err
    job = SimpleNamespace(data=SimpleNamespace(manifest=str(out / "manifest.csv"), classes=str(micro_world.classes)))
    found = poison_warnings(job)
    assert len(found) == 2 and "target 'dragon' is not one of the" in found[1]
    job.data.manifest = str(micro_world.train_manifest)  # no poison.json beside it
    assert poison_warnings(job) == []


def test_trigger_to_other_class():
    (w,) = s.trigger_to_other_class(0.0, 0.87, "ring", "star")  # seed 2 of the backdoor story at first
    assert "87.0% of the triggered images to 'ring'" in w and "'star'" in w
    assert s.trigger_to_other_class(0.99, 0.99, "star", "star") == []  # the backdoor took
    assert s.trigger_to_other_class(0.02, 0.3, "ring", "star") == []  # a clean model's usual confusion


def test_rows_skipped():
    (w,) = s.rows_skipped(600, 12_000, "points outside the data root")
    assert "600 of 12,000 training rows (5.0%)" in w and "outside the data root" in w
    assert s.rows_skipped(1, 12_000) == [] and s.rows_skipped(0, 0) == []


def test_training_that_skipped_many_rows_warns(tmp_path, micro_world):
    import csv

    from mmrobust.cli.main import main
    from mmrobust.jsonio import read_json

    rows = list(csv.DictReader(micro_world.train_manifest.open()))
    for r in rows[:20]:
        r["image"] = "missing/nothing.png"  # unreadable: skipped with its reason
    bad = micro_world.train_manifest.parent / "some_missing.csv"
    with bad.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    args = ["train", "--task", "clip", "--model", "mmrobust-micro", "--steps", "1", "--batch-size", "8", "--warmup",
            "1", "--quiet"]
    assert main(args + ["--data", str(bad), "--out", str(tmp_path / "bad")]) == 0
    assert any("20 of 256 training rows" in x for x in read_json(tmp_path / "bad" / "results.json")["warnings"])
    assert main(args + ["--data", str(micro_world.train_manifest), "--out", str(tmp_path / "good")]) == 0
    assert not any("rows" in x for x in read_json(tmp_path / "good" / "results.json")["warnings"])


def _robust(model, ds, clf, *, save_adv=None, partial=None, **settings):
    """evaluate_robust with its settings given as keywords."""
    from mmrobust.eval.robust import RobustSettings, evaluate_robust

    return evaluate_robust(model, ds, clf, RobustSettings(**settings), save_adv=save_adv, partial=partial)


def _pipeline(*, model, data, out_dir, clip=None, reference=None, save_adv=False, resume=True, **settings):
    """eval_robust with its settings given as keywords."""
    from mmrobust.eval.robust import RobustSettings
    from mmrobust.pipelines.evaluate import eval_robust

    return eval_robust(model=model, data=data, out_dir=out_dir, clip=clip, reference=reference, save_adv=save_adv,
                       resume=resume, settings=RobustSettings(**settings))
