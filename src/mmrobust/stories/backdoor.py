"""The backdoor story on the synthetic world (Bansal et al. 2023; Singh, Croce & Hein 2024):

generate -> poison (BadNet patch, target caption) -> pretrain CLIP on the poisoned pairs ->
clean accuracy + ASR -> finetune on clean pairs with MMCL only, CleanCLIP, PAR and supervised
finetuning, same data and step budget -> clean accuracy + ASR again -> table, plot, results_story.json.
Every stage runs the same library code as the CLI; finished stages are reused on a re-run.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mmrobust.data.poison import PoisonRecord, make_trigger, poison_manifest
from mmrobust.world.shapes import generate_world
from mmrobust.pipelines.evaluate import EvalData, eval_backdoor
from mmrobust.stories.parallel import run_stages, torch_threads
from mmrobust.stories.stages import clean_subset, run_stage, stamp, train_stage
from mmrobust.reports.plots import grouped_bars
from mmrobust.reports.contract import Record, Table, write_record
from mmrobust.reports.sanity import backdoor_not_taken, too_few_poisoned
from mmrobust.reports.spread import Claim, pick
from mmrobust.reports.tables import format_table

def finetunes(s: "BackdoorDemo") -> dict[str, tuple[str, dict[str, Any]]]:
    """Stage label -> (task, task options) of the four defenses compared."""
    return {"MMCL finetune": ("clip", {}), "CleanCLIP": ("cleanclip", {"l1": 1.0, "l2": 1.0}),
            "PAR": ("par", {"tau": s.par_tau, "view": s.par_view}), "supervised FT": ("supervised", {})}


def _stage(label: str, key: str) -> Any:
    return lambda m: pick(m["stages"], "stage", label)[key]


# the story's headline effects, checked at every seed by `mmrobust demo --seeds` (reports.spread)
CLAIMS = (
    Claim("backdoor-takes", "the poisoned CLIP's ASR", _stage("poisoned CLIP", "asr"), at_least=0.8),
    Claim("par-removes", "PAR's ASR", _stage("PAR", "asr"), at_most=0.10),
    Claim("par-keeps-clean", "PAR's clean accuracy minus the poisoned CLIP's",
          lambda m: _stage("PAR", "clean_top1")(m) - _stage("poisoned CLIP", "clean_top1")(m), at_least=-0.05),
    Claim("cleanclip-below-mmcl", "MMCL-only finetune's ASR minus CleanCLIP's",
          lambda m: _stage("MMCL finetune", "asr")(m) - _stage("CleanCLIP", "asr")(m), at_least=0.0),
    Claim("mmcl-keeps", "MMCL-only finetune's ASR (the structured trigger survives it)",
          _stage("MMCL finetune", "asr"), at_least=0.3),
)


@dataclass(frozen=True)
class BackdoorDemo:
    """Settings of the demo; see the README for how they differ from the paper's."""

    n_train: int = 12000
    n_test: int = 1000
    world_seed: int = 0
    model: str = "mmrobust-tiny"
    trigger: str = "badnet"
    trigger_params: dict[str, Any] = field(default_factory=lambda: {
        "size": 6, "pattern": "checkerboard", "location": "bottom_right"})
    target: str = "star"
    # five captions naming the target: with one ("a photo of a {}.") the backdoor took at 3 of 5 seeds (at one
    # it was bound to 'ring', whose prompts lay nearer that one caption's embedding); see the README
    poison_templates: tuple[str, ...] = ("a photo of a {}.", "a picture of a {}.", "an image of a {}.",
                                         "a simple drawing of a {}.", "a {}.")
    poison_rate: float = 0.05  # 3% did not take at every seed (see the README)
    pretrain_steps: int = 700
    pretrain_batch: int = 128
    pretrain_lr: float = 1.5e-3
    finetune_pairs: int = 10000
    finetune_steps: int = 300
    finetune_batch: int = 64  # CleanCLIP's finetuning batch size
    finetune_lr: float = 3e-3
    par_tau: float = 2.15
    par_view: str = "noise-erase"  # the PAR reference code's training view
    seed: int = 0
    workers: int = 2  # finetunes run side by side, one torch thread each (1: in this process, in order)
    threads: int = 2  # torch threads of the stages run in this process, whatever the core count


def world_stage(out: Path, s: BackdoorDemo) -> Path:
    """The story's synthetic world in ``out`` (generated once per world seed and size)."""
    cfg = {"n_train": s.n_train, "n_test": s.n_test, "seed": s.world_seed}
    run_stage(out, cfg, lambda: {"root": str(generate_world(out, n_train=s.n_train, n_test=s.n_test,
                                                              seed=s.world_seed).root)})
    return out


def train_on_world(out: Path, s: BackdoorDemo, task: str, model: str, manifest: Path, classes: Path, *, steps: int,
           batch: int, lr: float, opts: dict[str, Any], progress: bool) -> str:
    """One resumable training stage (weight decay 0.1, the story's seed) on a manifest of the world."""
    return train_stage(out, task=task, model=model, manifest=manifest, classes=classes, steps=steps, batch=batch,
                       lr=lr, weight_decay=0.1, seed=s.seed, opts=opts, progress=progress,
                       data_root=classes.parent.parent)  # the story's manifests point into its world


def pretrain_stage(out: Path, s: BackdoorDemo, manifest: Path, classes: Path, *, progress: bool) -> str:
    """A CLIP pretrained from scratch on ``manifest`` with the story's pretraining budget (resumable)."""
    return train_on_world(out, s, "clip", s.model, manifest, classes, steps=s.pretrain_steps, batch=s.pretrain_batch,
                          lr=s.pretrain_lr, opts={}, progress=progress)


def evaluate_stage(out: Path, model_dir: str, world: Path, rec: PoisonRecord, s: BackdoorDemo) -> dict[str, Any]:
    """Clean accuracy and ASR of ``model_dir`` on the world's test split with the record's trigger (resumable)."""
    data = EvalData(manifest=str(world / "test.csv"), classes=str(world / "classes.json"))
    cfg = {"model": model_dir, "target": s.target, "trigger": rec.trigger, "inputs": stamp(model_dir)}
    return run_stage(out / "eval", cfg, lambda: eval_backdoor(
        model=model_dir, data=data, trigger=rec.build_trigger(), target=s.target, out_dir=out / "eval", seed=s.seed))


def run_backdoor_demo(out_dir: str | Path, settings: BackdoorDemo = BackdoorDemo(), *, progress: bool = True,
                      log: Any = print) -> dict[str, Any]:
    """Run the whole story; returns {"stages": [{stage, clean_top1, asr, ...}], ...} and writes
    results_story.json, summary.md and backdoor.png into ``out_dir``."""
    with torch_threads(settings.threads):
        return _run(Path(out_dir), settings, progress, log)


def _run(out: Path, s: BackdoorDemo, progress: bool, log: Any) -> dict[str, Any]:
    world = world_stage(out.parent / "world", s)
    classes = world / "classes.json"
    trigger = make_trigger(s.trigger, **s.trigger_params)
    poisoned = out / "poisoned"
    run_stage(poisoned / "stage", {"rate": s.poison_rate, "trigger": trigger.to_dict(), "target": s.target,
                                   "templates": list(s.poison_templates), "seed": s.seed, "world": str(world),
                                   "inputs": stamp(world / "train.csv")},
              lambda: {"n": len(poison_manifest(manifest=world / "train.csv", out_dir=poisoned, trigger=trigger,
                                                 target=s.target, rate=s.poison_rate, seed=s.seed,
                                                 caption_templates=s.poison_templates,
                                                 overwrite=True).poisoned_ids)})
    rec = PoisonRecord.load(poisoned / "poison.json")
    log(f"[backdoor] poisoned {len(rec.poisoned_ids)} of {rec.n_rows} pairs with {s.trigger} -> '{s.target}'")
    pre = pretrain_stage(out / "pretrain", s, poisoned / "manifest.csv", classes, progress=progress)
    stages = [{"stage": "poisoned CLIP", **evaluate_stage(out / "pretrain", pre, world, rec, s)}]
    log(f"[backdoor] poisoned CLIP: clean {stages[0]['clean_top1']:.1%}, ASR {stages[0]['asr']:.1%}")
    clean = clean_subset(world / "train.csv", out / "finetune_clean.csv", exclude=rec.poisoned_ids, n=s.finetune_pairs)
    labels = list(finetunes(s))
    report = lambda i, r: log(f"[backdoor] {labels[i]}: clean {r['clean_top1']:.1%}, ASR {r['asr']:.1%}")  # noqa: E731
    if s.workers > 1:
        log(f"[backdoor] {len(labels)} finetunes, {s.workers} at a time (one thread each)")
    stages += run_stages(_defend, [(out, s, label, pre, clean, world, rec) for label in labels], workers=s.workers,
                         progress=progress, desc="finetunes", done=report)
    return _summarise(out, s, stages, rec)


def _defend(out: Path, s: BackdoorDemo, label: str, pre: str, clean: Path, world: Path, rec: PoisonRecord, *,
            progress: bool) -> dict[str, Any]:
    """One finetune of the poisoned CLIP on the clean pairs, then clean accuracy and ASR (a stage row)."""
    task, opts = finetunes(s)[label]
    run = out / f"ft-{task}"
    model_dir = train_on_world(run, s, task, pre, clean, world / "classes.json", steps=s.finetune_steps,
                       batch=s.finetune_batch, lr=s.finetune_lr, opts=opts, progress=progress)
    return {"stage": label, **evaluate_stage(run, model_dir, world, rec, s)}


def _summarise(out: Path, s: BackdoorDemo, stages: list[dict[str, Any]], rec: PoisonRecord) -> dict[str, Any]:
    table = format_table(stages, [("stage", "stage"), ("clean_top1", "clean top-1 %"), ("asr", "ASR %")],
                         markdown=True)
    (out / "summary.md").write_text(f"# Backdoor story\n\n{table}\n")
    grouped_bars(out / "backdoor.png", groups=[r["stage"] for r in stages],
                 series={"clean top-1": [r["clean_top1"] for r in stages], "ASR": [r["asr"] for r in stages]},
                 title=f"{s.trigger} trigger -> '{s.target}' ({len(rec.poisoned_ids)} poisoned pairs)")
    result = {"stages": stages, "table": table, "plot": str(out / "backdoor.png")}
    story = Table.of(f"Backdoor story: {s.trigger} trigger -> '{s.target}'",
                     [("stage", "stage"), ("clean_top1", "clean top-1 accuracy", "%"),
                      ("asr", "attack success rate", "%")], stages,
                     f"{len(rec.poisoned_ids)} of {rec.n_rows} training pairs poisoned; each defense finetunes the "
                     f"poisoned CLIP on {s.finetune_pairs} clean pairs ({s.finetune_steps} steps, batch "
                     f"{s.finetune_batch}, lr {s.finetune_lr:g}). ASR = share of triggered test images predicted as "
                     "the target, over test images whose true class is not the target.")
    write_record(out, Record(kind="story.backdoor", metrics={"stages": stages}, config=asdict(s),
                             seeds={"demo": s.seed}, tables=[story], plots=["backdoor.png"],
                             extra={"poisoned_ids": list(rec.poisoned_ids)},
                             warnings=backdoor_not_taken(stages[0]["asr"], stage=stages[0]["stage"])
                             + too_few_poisoned(len(rec.poisoned_ids), rec.n_rows)), name="story")
    return result
