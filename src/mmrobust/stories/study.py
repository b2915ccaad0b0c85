"""The backdoor attack x defense matrix: every attack against every defense, over seeds, in one table.

BackdoorBench (Wu et al., NeurIPS 2022 Datasets and Benchmarks) made this the view of backdoor research
on classifiers; this is it for CLIP. For each seed (a new world and new training seeds) and each attack:
poison the world's training pairs, pretrain a CLIP on them, measure clean accuracy and ASR, and score
every training pair with a poisoned-pair detector (Huang et al., ICLR 2025) against the poison record.
Then for each defense: finetune the poisoned CLIP on clean pairs (MMCL only, CleanCLIP, PAR,
supervised), or drop the detector's top share of the poisoned pairs and pretrain again from scratch
(``filter-retrain``), optionally followed by a cleaning finetune (``filter+cleanclip``, ...).

Stages are shared (one poisoned model per attack and seed, one world per seed) and resumable: a killed
study continues cell by cell. Independent stages run side by side in worker processes, one torch thread
each. Example::

    run_study(BackdoorStudy(attacks=("badnet", "blended"), defenses=("none", "cleanclip")), seeds=[0, 1, 2],
              out_dir="runs/study")
"""
from __future__ import annotations

import dataclasses
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from mmrobust.data.poison import PoisonRecord, make_trigger, poison_manifest
from mmrobust.errors import ConfigError
from mmrobust.stories.backdoor import (BackdoorDemo, evaluate_stage, finetunes, pretrain_stage, train_on_world,
                                      world_stage)
from mmrobust.stories.parallel import run_parallel, torch_threads
from mmrobust.stories.seeds import with_seed
from mmrobust.stories.stages import clean_subset, run_stage, stamp
from mmrobust.values import SEED_MAX, check_int, setting


@dataclass(frozen=True)
class Attack:
    """A row of the matrix: a registered trigger, its parameters, and how rows are chosen.

    ``label_consistent`` poisons only pairs whose caption already names the target (captions are kept);
    ``optimized`` triggers (BadCLIP) are first optimized against a clean surrogate CLIP of the same world.
    """

    trigger: str
    params: Mapping[str, Any] = field(default_factory=dict)
    label_consistent: bool = False
    optimized: bool = False


# the attacks the study knows by name; trigger parameters at the world's 32 px
ATTACKS: dict[str, Attack] = {
    "badnet": Attack("badnet", {"size": 6, "pattern": "checkerboard", "location": "bottom_right"}),
    "blended": Attack("blended", {"alpha": 0.2, "pattern": "noise"}),
    "wanet": Attack("wanet", {"k": 4, "s": 0.5}),
    "sig": Attack("sig", {"delta": 20 / 255, "frequency": 6}),
    "label-consistent": Attack("sig", {"delta": 20 / 255, "frequency": 6}, label_consistent=True),
    # BadCLIP (Liang et al., CVPR 2024): a 6 px patch optimized on a clean surrogate, pasted where badnet's is
    "badclip": Attack("patch", {"size": 6, "location": "bottom_right"}, optimized=True),
    # PAR's structured triggers (Singh, Croce & Hein 2024), sizes scaled from 224 px to the world's 32 px
    "badnet-stripes": Attack("badnet-stripes", {"size": 6}),
    "blended-stripes": Attack("blended-stripes", {}),
    "blended-triangles": Attack("blended-triangles", {"cell": 2}),
    "blended-text": Attack("blended-text", {}),
}


DETECTORS = ("dao", "kdist", "lid", "slof", "iforest")  # all scored in the audit (one neighbour search)
REFERENCES = ("all", "clean")  # where the audit searches neighbours: the audited pairs, or a held-out clean world
REFERENCE_SEED_OFFSET = 1_000_003  # the clean reference world's seed: another world than any study seed's


@dataclass(frozen=True)
class Defense:
    """A column of the matrix: an optional filter (drop the detector's top share of the poisoned pairs and
    pretrain again) followed by an optional finetune task on clean pairs."""

    task: str | None = None
    filtered: bool = False


DEFENSES: dict[str, Defense] = {
    "none": Defense(), "mmcl": Defense("clip"), "cleanclip": Defense("cleanclip"), "par": Defense("par"),
    "supervised": Defense("supervised"), "filter-retrain": Defense(filtered=True),
    "filter+mmcl": Defense("clip", filtered=True), "filter+cleanclip": Defense("cleanclip", filtered=True),
    "filter+par": Defense("par", filtered=True), "filter+supervised": Defense("supervised", filtered=True),
}


@dataclass(frozen=True)
class BackdoorStudy:
    """What the matrix crosses, and the detector of the filter defenses. Budgets (world size, steps, lr,
    poison rate, target) are the backdoor story's settings (:class:`BackdoorDemo`), passed beside it."""

    attacks: tuple[str, ...] = setting(("badnet", "blended", "wanet", "sig", "label-consistent", "badclip",
                                        "badnet-stripes", "blended-stripes"), "attacks (rows), comma-separated")
    defenses: tuple[str, ...] = setting(("none", "mmcl", "cleanclip", "par", "supervised", "filter-retrain"),
                                        "defenses (columns), comma-separated")
    detector: str = setting("dao", "poisoned-pair detector of the audit and the filter defenses")
    k: int = setting(16, "neighbours of the detector")
    drop_rate: float = setting(0.10, "share of training pairs the filter defenses drop (twice the poison rate)")
    reference: str = setting("all", "where the detector searches a pair's neighbours: all (every training pair, "
                                    "one reference set) or clean (a held-out clean world the defender holds)")
    reference_pairs: int = setting(1000, "pairs of the clean reference world (with --reference clean)")
    badclip_steps: int = setting(1000, "Adam steps of BadCLIP's patch optimization on the surrogate")
    workers: int = setting(2, "stages side by side, one torch thread each (1: in this process, in order)")

    def __post_init__(self) -> None:
        for kind, names, known in (("attack", self.attacks, ATTACKS), ("defense", self.defenses, DEFENSES)):
            unknown = [n for n in names if n not in known]
            if unknown or not names:
                raise ConfigError(f"unknown {kind} {', '.join(unknown) or '(none given)'}; choose among "
                                  f"{', '.join(known)}")
        if not 0 < self.drop_rate < 1:
            raise ConfigError(f"drop_rate {self.drop_rate} must lie in (0, 1), e.g. 0.1")
        check_int("study k (neighbours)", self.k, low=1, fix="e.g. 16")
        if self.reference not in REFERENCES:
            raise ConfigError(f"reference {self.reference!r} is not one of {', '.join(REFERENCES)}")
        check_int("study reference_pairs", self.reference_pairs, low=self.k + 2, fix=f"at least k + 2 = {self.k + 2}")
        check_int("study badclip_steps", self.badclip_steps, low=1, fix="e.g. 1000")
        check_int("study workers", self.workers, low=1, fix="1 runs the stages in this process")
        if self.detector not in DETECTORS:  # checked before hours of training, not at the first audit
            raise ConfigError(f"unknown detector {self.detector!r}; choose one of {', '.join(DETECTORS)}")


def _task_options(base: BackdoorDemo) -> dict[str, dict[str, Any]]:
    """Finetune task -> its options, as the backdoor story sets them."""
    return {task: opts for task, opts in finetunes(base).values()}


def _poison(out: Path, base: BackdoorDemo, name: str, world: Path, trigger: dict[str, Any]) -> PoisonRecord:
    attack = ATTACKS[name]
    cfg = {"rate": base.poison_rate, "trigger": trigger, "target": base.target, "seed": base.seed,
           "templates": list(base.poison_templates), "label_consistent": attack.label_consistent,
           "inputs": stamp(world / "train.csv")}
    run_stage(out / "stage", cfg, lambda: {"n": len(poison_manifest(
        manifest=world / "train.csv", out_dir=out, trigger=trigger, target=base.target, rate=base.poison_rate,
        seed=base.seed, caption_templates=base.poison_templates, label_consistent=attack.label_consistent,
        overwrite=True).poisoned_ids)})
    return PoisonRecord.load(out / "poison.json")


def poisoned_stage(out: Path, base: BackdoorDemo, study: BackdoorStudy, name: str, trigger: dict[str, Any], *,
                   progress: bool) -> dict[str, Any]:
    """Poison, pretrain, evaluate and audit one attack at one seed (``out`` = OUT/seed-K/<attack>)."""
    world = out.parent / "world"
    rec = _poison(out / "poisoned", base, name, world, trigger)
    model = pretrain_stage(out / "pretrain", base, rec.manifest, world / "classes.json", progress=progress)
    metrics = evaluate_stage(out / "pretrain", model, world, rec, base)
    suffix = "" if study.reference == "all" else f"-{study.reference}"  # both kinds of audit kept side by side
    audit = audit_stage(out / f"audit{suffix}", model, rec, study,
                        reference_world(out.parent / "reference-world", base, study))
    clean = clean_subset(world / "train.csv", out / "finetune_clean.csv", exclude=rec.poisoned_ids,
                         n=base.finetune_pairs)  # written here once: the cells of this attack run side by side
    return {"model": model, "record": str(rec.record_path), "n_poisoned": len(rec.poisoned_ids),
            "clean_top1": metrics["clean_top1"], "asr": metrics["asr"], "audit": audit, "clean": str(clean),
            "filtered": f"filtered{suffix}"}


def reference_world(out: Path, base: BackdoorDemo, study: BackdoorStudy) -> Path | None:
    """With ``reference="clean"``: the defender's held-out clean pairs, a world of ``reference_pairs`` pairs
    drawn with another seed than the audited world's (in ``out``; generated once), as a manifest."""
    if study.reference != "clean":
        return None
    held_out = dataclasses.replace(base, n_train=study.reference_pairs, n_test=1,
                                   world_seed=(base.world_seed + REFERENCE_SEED_OFFSET) % (SEED_MAX + 1))
    return world_stage(out, held_out) / "train.csv"


def audit_stage(out: Path, model: str, rec: PoisonRecord, study: BackdoorStudy,
                reference: Path | None = None) -> dict[str, Any]:
    """Score every pair of the poisoned set with each detector on the poisoned model: detection metrics
    against the record, and a cleaned manifest without the study detector's top ``drop_rate`` share
    (resumable; the audit writes into ``out/run``, a folder of ours that an interrupted stage leaves behind).
    ``reference``: a clean manifest to search the neighbours in (a dedicated reference set)."""
    from mmrobust.pipelines.audit import AuditSettings, run_audit
    from mmrobust.pipelines.train import DataSpec

    settings = AuditSettings(detectors=DETECTORS, k=study.k, drop_top=study.drop_rate, drop_by=study.detector)
    cfg = {"settings": dataclasses.asdict(settings), "inputs": [stamp(model), stamp(rec.manifest)],
           **({"reference": stamp(reference)} if reference is not None else {})}

    def audit() -> dict[str, Any]:
        if (out / "run").is_dir():
            shutil.rmtree(out / "run")  # an interrupted audit of this stage: the cleaned copy is never replaced
        res = run_audit(model=model, data=DataSpec(manifest=str(rec.manifest)), out_dir=out / "run",
                        settings=settings, poison_record=rec.record_path,
                        reference=DataSpec(manifest=str(reference)) if reference is not None else None)
        m = res.metrics
        return {"detectors": {d: {key: m[key][d] for key in ("auroc", "ap", "precision_at_n")} for d in DETECTORS},
                "cleaned_manifest": res.cleaned, "dropped": m["n_dropped"], "dropped_poisoned": m["n_poisoned_dropped"]}

    return run_stage(out, cfg, audit)


def cell_stage(out: Path, base: BackdoorDemo, name: str, defense: str, poisoned: dict[str, Any], *,
               progress: bool) -> dict[str, Any]:
    """One (attack, defense) cell at one seed: the defended model's clean accuracy and ASR."""
    d = DEFENSES[defense]
    if defense == "none":
        return {"clean_top1": poisoned["clean_top1"], "asr": poisoned["asr"]}
    world = out.parent / "world"
    rec = PoisonRecord.load(poisoned["record"])
    model, run = poisoned["model"], out
    if d.filtered:
        run = out / poisoned["filtered"]
        cleaned = Path(poisoned["audit"]["cleaned_manifest"])
        model = pretrain_stage(run / "pretrain", base, cleaned, world / "classes.json", progress=progress)
        if d.task is None:
            return evaluate_stage(run / "pretrain", model, world, rec, base)
    task = str(d.task)
    model = train_on_world(run / f"ft-{task}", base, task, model, Path(poisoned["clean"]), world / "classes.json",
                           steps=base.finetune_steps, batch=base.finetune_batch, lr=base.finetune_lr,
                           opts=_task_options(base)[task], progress=progress)
    return evaluate_stage(run / f"ft-{task}", model, world, rec, base)


def _trigger(out: Path, base: BackdoorDemo, study: BackdoorStudy, name: str, *, progress: bool) -> dict[str, Any]:
    """The attack's trigger spec at this seed; an optimized trigger is made here (on a clean surrogate)."""
    attack = ATTACKS[name]
    if attack.optimized:
        return optimized_trigger(out, base, attack, steps=study.badclip_steps, progress=progress)
    trigger = make_trigger(attack.trigger, **dict(attack.params))
    if "seed" in trigger.to_dict():  # a trigger's fixed random parts (a noise key) are drawn anew at each seed
        trigger = make_trigger(attack.trigger, **{**attack.params, "seed": base.seed})
    return {"name": attack.trigger, "config": trigger.to_dict()}


def optimized_trigger(out: Path, base: BackdoorDemo, attack: Attack, *, steps: int, progress: bool) -> dict[str, Any]:
    """BadCLIP's patch at this seed (``out`` = OUT/seed-K): the surrogate is a clean CLIP pretrained on the
    world's clean pairs with the story's budget and another training seed (the attacker's own model, not
    the victim's), then the patch is optimized against it on the world's labelled training images."""
    from mmrobust.data.poison.badclip import BadCLIPSettings
    from mmrobust.pipelines.badclip import make_badclip_trigger
    from mmrobust.pipelines.evaluate import EvalData

    world = out / "world"
    own = dataclasses.replace(base, seed=base.seed + 10_000)
    surrogate = pretrain_stage(out / "surrogate", own, world / "train.csv", world / "classes.json", progress=progress)
    params = dict(attack.params)
    settings = BadCLIPSettings(**params, steps=steps, seed=base.seed)
    data = EvalData(manifest=str(world / "train.csv"), classes=str(world / "classes.json"))
    patch = out / "badclip" / "patch"
    cfg = {"settings": dataclasses.asdict(settings), "target": base.target, "inputs": [stamp(surrogate)]}
    made = run_stage(out / "badclip" / "stage", cfg, lambda: {"trigger": make_badclip_trigger(
        surrogate=surrogate, data=data, target=base.target, out_dir=patch, settings=settings,
        overwrite=True).trigger})
    return dict(made["trigger"])


Call = tuple[Callable[..., Any], tuple, dict]


def _phases(defenses: Sequence[str]) -> tuple[list[str], list[str]]:
    """Defenses in two rounds: a filter followed by a finetune starts from the filtered pretraining, so
    that pretraining (``filter-retrain``, run even when not asked for) goes first, once per attack and seed."""
    after = [d for d in defenses if DEFENSES[d].filtered and DEFENSES[d].task]
    first = [d for d in defenses if d not in after]
    if after and "filter-retrain" not in first:
        first.append("filter-retrain")
    return first, after


def _stage_calls(fn: Callable[..., Any], args: Sequence[tuple], progress: bool, side_by_side: bool) -> list[Call]:
    return [(fn, a, {"progress": progress and not side_by_side}) for a in args]


def run_study(study: BackdoorStudy, *, seeds: Sequence[int], out_dir: str | Path, base: BackdoorDemo = BackdoorDemo(),
              progress: bool = True, log: Callable[[str], Any] = print) -> dict[str, Any]:
    """Run every (attack, defense, seed) cell of the matrix into ``out_dir/seed-K/<attack>/`` (finished
    stages are reused), then write the aggregate into ``out_dir/matrix/``; returns the aggregate
    (see :func:`mmrobust.stories.study_report.summarise`)."""
    from mmrobust.stories.study_report import check_target, summarise

    out = Path(out_dir)
    check_target(out / "matrix")  # before hours of runs, not after
    bases = {seed: with_seed(base, seed) for seed in seeds}
    with torch_threads(base.threads):
        for seed in seeds:  # generated here, before stages run side by side read them
            world_stage(out / f"seed-{seed}" / "world", bases[seed])
            reference_world(out / f"seed-{seed}" / "reference-world", bases[seed], study)
        poisoned = _poisoned_models(out, study, bases, progress=progress, log=log)
        cells: dict[tuple[int, str, str], dict[str, Any]] = {}
        for phase in _phases(study.defenses):
            keys = [(seed, name, d) for seed, name in poisoned for d in phase]
            args = [(out / f"seed-{s}" / n, bases[s], n, d, poisoned[s, n]) for s, n, d in keys]
            results = run_parallel(_stage_calls(cell_stage, args, progress, study.workers > 1),
                                   workers=study.workers, done=lambda i, r, keys=keys: log(
                                       f"[study] seed {keys[i][0]} {keys[i][1]} x {keys[i][2]}: clean "
                                       f"{r['clean_top1']:.1%}, ASR {r['asr']:.1%}"),
                                   desc="cells" if progress and study.workers > 1 else None)
            cells.update(zip(keys, results))
    return summarise(out, study, base, list(seeds), poisoned, cells)


def _poisoned_models(out: Path, study: BackdoorStudy, bases: Mapping[int, BackdoorDemo], *, progress: bool,
                     log: Callable[[str], Any]) -> dict[tuple[int, str], dict[str, Any]]:
    """(seed, attack) -> :func:`poisoned_stage`'s output, the stages run ``study.workers`` at a time."""
    jobs = [(seed, name) for seed in bases for name in study.attacks]
    triggers = {(seed, name): _trigger(out / f"seed-{seed}", bases[seed], study, name, progress=progress)
                for seed, name in jobs}
    log(f"[study] {len(jobs)} poisoned models ({len(study.attacks)} attacks x {len(bases)} seeds), "
        f"{study.workers} at a time")

    def done(i: int, r: dict[str, Any]) -> None:
        auroc = r["audit"]["detectors"][study.detector]["auroc"]
        log(f"[study] seed {jobs[i][0]} {jobs[i][1]}: {r['n_poisoned']} poisoned, clean {r['clean_top1']:.1%}, "
            f"ASR {r['asr']:.1%}, {study.detector} AUROC {auroc:.3f}")

    args = [(out / f"seed-{seed}" / name, bases[seed], study, name, triggers[seed, name]) for seed, name in jobs]
    made = run_parallel(_stage_calls(poisoned_stage, args, progress, study.workers > 1), workers=study.workers,
                        done=done, desc="poisoned models" if progress and study.workers > 1 else None)
    return dict(zip(jobs, made))
