"""The card's CLIP sections: clean zero-shot accuracy (Radford et al. 2021), robust accuracy against eps under
APGD / AutoAttack (Croce & Hein 2020) with the embedding drift from a reference (Schlarmann et al. 2024), the
classes that break first, and the poisoned-pair audit of a manifest (Huang et al., ICLR 2025).

Data: the user's split (``CardData.data``: a manifest + classes, a class folder or a clip-benchmark set, read
by :func:`mmrobust.pipelines.evaluate.eval_data`), else the embedded world's test split, generated into
``OUT/data/world``.
"""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from mmrobust.pipelines.card_sections import (CardContext, CardSection, SectionPlan, Verdict, file_digest, judge,
                                              pct)
from mmrobust.registry import CARD_SECTIONS
from mmrobust.reports.protocol import eps_label

WORLD_IMAGE_SIZE = 32  # the embedded world's resolution (the demo's CLIPs are trained on it)


def clip_data(ctx: CardContext) -> tuple[Any, dict[str, Any], str]:
    """(EvalData, what the sections are keyed by, a label for the page) of the CLIP sections."""
    from mmrobust.pipelines.evaluate import EvalData, eval_data
    from mmrobust.world.shapes import generate_world

    d, b = ctx.job.data, ctx.budget
    if d.data is None:
        cfg = {"n_test": b.world_images, "seed": ctx.job.seed, "image_size": WORLD_IMAGE_SIZE}
        manifest = ctx.data("world", cfg, lambda folder: generate_world(
            folder, n_train=1, n_test=b.world_images, seed=ctx.job.seed, image_size=WORLD_IMAGE_SIZE).test_manifest)
        data = EvalData(manifest=manifest, classes=str(Path(manifest).parent / "classes.json"))
        key = {"world": cfg}
        label = f"the embedded synthetic world ({b.world_images} test images, seed {ctx.job.seed})"
    else:
        data = ctx.once("clip_data", lambda: eval_data(
            d.data, d.classes, out_dir=ctx.out / "data" / "clip", image_col=d.image_col, label_col=d.label_col,
            delimiter=d.delimiter, data_root=d.data_root, allow_outside=d.allow_outside))
        key = {"data": {k: v for k, v in asdict(data).items() if k not in ("manifest", "classes")}, "spec": d.data}
        label = d.data
    key.update({"manifest_sha": file_digest(data.manifest), "classes_sha": file_digest(data.classes or None)})
    return data, key, label


# --- zero-shot ----------------------------------------------------------------------------------------------

def _zeroshot(ctx: CardContext) -> SectionPlan:
    from mmrobust.pipelines.evaluate import eval_zeroshot

    data, key, label = clip_data(ctx)

    def run(out: Path) -> dict[str, Any]:
        m = eval_zeroshot(model=ctx.job.model, data=data, out_dir=out, clip=ctx.clip(), device=ctx.job.device)
        return {"top1": m["top1"], "top5": m["top5"], "n": m["n"], "data": label}

    return SectionPlan({"data": key}, run)


def _zeroshot_verdicts(ctx: CardContext, o: dict[str, Any]) -> list[Verdict]:
    return [judge("zeroshot", "clean images (no attack)", f"zero-shot top-1 {pct(o['top1'])} of {o['n']} images",
                  o["top1"], name="clean_accuracy", limit=ctx.job.thresholds.clean_accuracy)]


# --- robust accuracy against eps ----------------------------------------------------------------------------

def robust_settings(ctx: CardContext) -> Any:
    """The budget's attack as :class:`~mmrobust.eval.robust.RobustSettings` (steps where the attack takes them)."""
    from mmrobust.eval.robust import RobustSettings
    from mmrobust.registry import ATTACKS

    b = ctx.budget
    options = {"steps": b.steps} if "steps" in ATTACKS.slots(b.attack) else {}
    return RobustSettings(attack=b.attack, eps=b.eps, n_samples=b.n_robust, seed=ctx.job.seed,
                          attack_options=options, batch_size=b.attack_batch, device=ctx.job.device)


def _drift_record(metrics: dict[str, Any], reference: str) -> Any:
    """The embedding drift from the reference as a record of its own (the robust record has no table for it)."""
    from mmrobust.reports.contract import Record, Table

    drift = metrics["embedding_drift"]
    rows = [{"eps": label, "clean": d["clean"], "adversarial": d["adversarial"]} for label, d in drift.items()]
    table = Table.of(f"Embedding drift from the reference {reference}",
                     [("eps", "eps"), ("clean", "clean images"), ("adversarial", "adversarial images")], rows,
                     "Mean squared l2 distance ||f(x) - f_ref(x)||^2 between the model's and the reference's image "
                     "embeddings on clean images and on PGD images (10 steps) maximizing it (the FARE paper's "
                     f"measure); zero-shot agreement with the reference {pct(metrics['zero_shot_agreement'])}.")
    return Record(kind="card.drift", metrics={"embedding_drift": drift,
                                              "zero_shot_agreement": metrics["zero_shot_agreement"]},
                  tables=[table], config={"reference": reference})


def _robust(ctx: CardContext) -> SectionPlan:
    from mmrobust.pipelines.card_model import model_identity
    from mmrobust.pipelines.evaluate import eval_robust
    from mmrobust.reports.contract import write_record

    data, key, label = clip_data(ctx)
    s, j = robust_settings(ctx), ctx.job
    ref = model_identity(j.reference, j.reference_pretrained) if j.reference else None

    def run(out: Path) -> dict[str, Any]:
        m = eval_robust(model=j.model, data=data, out_dir=out, settings=s, reference=j.reference,
                        reference_weights={"pretrained": j.reference_pretrained}, clip=ctx.clip())
        if j.reference:
            write_record(out, _drift_record(m, j.reference), name="drift")
        return {"clean": m["clean_top1"], "robust": {k: r["robust_top1"] for k, r in m["eps"].items()}, "n": m["n"],
                "attack": s.attack, "steps": s.attack_options.get("steps"), "data": label,
                "drift": m.get("embedding_drift"), "agreement": m.get("zero_shot_agreement")}

    return SectionPlan({"data": key, "settings": {**asdict(s), "device": None}, "reference": ref}, run)


def _robust_verdicts(ctx: CardContext, o: dict[str, Any]) -> list[Verdict]:
    head = eps_label(ctx.job.headline_eps)
    how = f"{o['attack']}" + (f", {o['steps']} steps" if o.get("steps") else "") + f", {o['n']} images"
    r = o["robust"].get(head)
    out = [judge("robust", f"adversarial l-inf {head}", f"robust accuracy {pct(r)} (clean {pct(o['clean'])}; {how})",
                 r, name="robust_accuracy", limit=ctx.job.thresholds.robust_accuracy)]
    curve = ", ".join(f"{k} {pct(v)}" for k, v in o["robust"].items())
    out.append(Verdict("robust", "adversarial l-inf, every eps", f"robust accuracy {curve} (clean {pct(o['clean'])})"))
    if o.get("drift"):
        d = o["drift"].get(head) or next(iter(o["drift"].values()))
        out.append(Verdict("robust", f"embedding drift from {ctx.job.reference}",
                           f"squared l2 {d['clean']:.4g} clean, {d['adversarial']:.4g} at l-inf {eps_label(d['eps'])}; "
                           f"zero-shot agreement {pct(o['agreement'])}"))
    return out


# --- the classes that break first ---------------------------------------------------------------------------

def class_rows(samples: list[dict[str, Any]], names: list[str], eps: str) -> list[dict[str, Any]]:
    """Per class of the attacked sample: images, clean and robust accuracy at ``eps``, and the drop (clean minus
    robust), largest drop first (then lowest robust accuracy, then name)."""
    rows = []
    for label in sorted({int(r["label"]) for r in samples}):
        mine = [r for r in samples if int(r["label"]) == label]
        clean = sum(bool(r["clean_correct"]) for r in mine) / len(mine)
        robust = sum(bool(r[f"robust@{eps}"]) for r in mine) / len(mine)
        name = names[label] if 0 <= label < len(names) else f"class {label}"
        rows.append({"class": name, "n": len(mine), "clean": clean, "robust": robust, "drop": clean - robust})
    return sorted(rows, key=lambda r: (-r["drop"], r["robust"], r["class"]))


SHOWN_CLASSES = 5


def _class_names(data: Any) -> list[str]:
    from mmrobust.data.datasets import ClassInfo

    return list(ClassInfo.load(data.classes).classnames) if data.classes else []


def _classes(ctx: CardContext) -> SectionPlan | str:
    from mmrobust.jsonio import Journal

    samples = ctx.out / "robust" / "samples_robust.jsonl"
    if not (ctx.out / "robust" / "stage.json").is_file() or not samples.is_file():
        return "needs the robust section's per-sample results: run it too (--sections robust,classes)"
    data, key, _ = clip_data(ctx)
    head = eps_label(ctx.job.headline_eps)

    def run(out: Path) -> dict[str, Any]:
        rows = class_rows(list(Journal(samples, what="robust samples").records()), _class_names(data), head)
        _write_classes(out, rows, head)
        return {"eps": head, "worst": rows[:3], "n_classes": len(rows)}

    return SectionPlan({"samples_sha": file_digest(samples), "classes_sha": key["classes_sha"], "eps": head,
                        "shown": SHOWN_CLASSES}, run)


def _write_classes(out: Path, rows: list[dict[str, Any]], eps: str) -> None:
    from mmrobust.reports.contract import Record, Table, write_record
    from mmrobust.reports.plots import grouped_bars

    shown = rows[:SHOWN_CLASSES]
    table = Table.of(f"The classes that break first (l-inf {eps})",
                     [("class", "class"), ("clean", "clean accuracy", "%"), ("robust", f"robust at {eps}", "%"),
                      ("drop", "drop", "%"), ("n", "attacked images", "count")], shown,
                     f"The {len(shown)} of {len(rows)} classes whose zero-shot accuracy drops most under the robust "
                     "section's attack at the headline eps, on its seeded sample (few images per class: a rough "
                     "ranking, not a measurement per class).")
    grouped_bars(out / "classes.png", groups=[r["class"] for r in shown],
                 series={"clean": [r["clean"] for r in shown], f"robust at {eps}": [r["robust"] for r in shown]},
                 title=f"the classes that break first (l-inf {eps})", colors=["#3b7dd8", "#d8453b"])
    write_record(out, Record(kind="card.classes", metrics={"eps": eps, "classes": rows}, tables=[table],
                             plots=["classes.png"]), name="classes")


def _classes_verdicts(ctx: CardContext, o: dict[str, Any]) -> list[Verdict]:
    worst = "; ".join(f"{r['class']} {pct(r['clean'])} -> {pct(r['robust'])}" for r in o["worst"])
    return [Verdict("classes", f"classes that break first at l-inf {o['eps']}", worst or "no class attacked")]


# --- poisoned-pair audit --------------------------------------------------------------------------------------

def _audit(ctx: CardContext) -> SectionPlan | str:
    from mmrobust.pipelines.audit import AuditSettings, run_audit
    from mmrobust.pipelines.train import DataSpec

    d = ctx.job.data
    if not d.audit_data:
        return "no --audit-data manifest of image-text pairs to audit"
    spec = DataSpec(manifest=d.audit_data, data_root=d.data_root, allow_outside=d.allow_outside)
    ref = DataSpec(manifest=d.audit_reference, allow_outside=d.allow_outside) if d.audit_reference else None
    s = AuditSettings(device=ctx.job.device, seed=ctx.job.seed)

    def run(out: Path) -> dict[str, Any]:
        res = run_audit(model=ctx.job.model, data=spec, out_dir=out, settings=s, poison_record=d.poison_record,
                        clip=ctx.clip(), reference=ref)
        m = res.metrics
        return {"manifest": d.audit_data, "n_scored": m["n_scored"], "n_poisoned": m["n_poisoned"],
                "auroc": m["auroc"], "ap": m["ap"], "detectors": list(s.detectors), "k": s.k,
                "reference": d.audit_reference}

    return SectionPlan({"data": asdict(spec), "manifest_sha": file_digest(d.audit_data),
                        "poison_sha": file_digest(d.poison_record), "reference_sha": file_digest(d.audit_reference),
                        "settings": {**asdict(s), "device": None}}, run)


def _audit_verdicts(ctx: CardContext, o: dict[str, Any]) -> list[Verdict]:
    name = o["detectors"][0]
    found = (f"AUROC {o['auroc'][name]:.3f}, AP {o['ap'][name]:.3f} against the poison record "
             f"({o['n_poisoned']} poisoned)" if o["n_poisoned"] is not None and o["auroc"].get(name) is not None
             else "no poison record: the most suspicious pairs are ranked in samples_audit.jsonl")
    against = f", neighbours among the clean pairs of {o['reference']}" if o.get("reference") else ""
    return [Verdict("audit", f"poisoned pairs in {o['manifest']}",
                    f"{o['n_scored']} pairs scored by {name} (k = {o['k']}{against}); {found}")]


for _section in (
    CardSection("zeroshot", "clip", 10, "Clean zero-shot accuracy",
                "top-1 / top-5 zero-shot accuracy on clean images (template ensemble)", _zeroshot, _zeroshot_verdicts),
    CardSection("robust", "clip", 20, "Robust accuracy against eps",
                "clean and robust zero-shot accuracy per l-inf eps under the budget's attack; embedding drift "
                "from --reference", _robust, _robust_verdicts),
    CardSection("classes", "clip", 30, "The classes that break first",
                "per-class accuracy drop at the headline eps, from the robust section's samples", _classes,
                _classes_verdicts, None),
    CardSection("audit", "clip", 40, "Poisoned-pair audit",
                "poisoning scores of every pair of --audit-data (DAO), AUROC against --poison-record", _audit,
                _audit_verdicts),
):
    CARD_SECTIONS.register(_section.name)(_section)
