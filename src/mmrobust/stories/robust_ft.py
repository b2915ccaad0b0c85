"""Cheaper robust finetuning on the embedded world: cost against clean and robust accuracy, over seeds.

FARE (Schlarmann et al., ICML 2024) from the adversarial story's clean CLIP of each seed, three ways at the same
step budget: the story's recipe (PGD-10 of 1/255 inside 4/255), FGSM from a random start (Wong, Rice & Kolter 2020,
"Fast is better than free": one step of 1.25 eps), and LoRA adapters on the image tower's MLPs (Hu et al. 2022)
with PGD-10. Cost is counted (forwards and backwards of the image tower in one training step, by hooks on the
tower) and timed (wall and CPU time per step of the whole training run, as a ratio to PGD-10 at the same seed:
the box is shared, so absolute seconds say nothing); accuracy is the story's: zero-shot clean accuracy on all test
images and the AutoAttack-style worst case (APGD-CE then APGD-T) on the first ``n_eval``.

It reads the finished adversarial story of ``mmrobust demo --seeds`` (``DEMO/seed-K/world`` and
``DEMO/seed-K/adversarial/clip/model``) and never writes there; every stage of its own is resumable. Example::

    run_robust_ft(RobustFTStudy(demo="runs/demo"), seeds=[0, 1, 2], out_dir="runs/robust-ft")
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch

from mmrobust.errors import ConfigError
from mmrobust.eval.robust import RobustSettings
from mmrobust.pipelines.evaluate import EvalData, eval_robust, eval_zeroshot
from mmrobust.pipelines.train import DataSpec, ModelSpec, TrainJob, run_train
from mmrobust.reports.contract import Record, Table, write_record
from mmrobust.reports.protocol import eps_label
from mmrobust.reports.spread import format_spread, spread
from mmrobust.stories.parallel import torch_threads
from mmrobust.stories.stages import run_stage, stamp
from mmrobust.training.loop import TrainConfig
from mmrobust.values import check_int, setting


@dataclass(frozen=True)
class Method:
    """One way to finetune: its row label, the FARE task options, and whether it takes the LoRA learning rate."""

    label: str
    opts: Mapping[str, Any]
    lora: bool = False


PGD = {"attack_steps": 10, "step_size": 1 / 255}
METHODS: dict[str, Method] = {
    "pgd10": Method("FARE-PGD10", PGD),
    "fgsm-rs": Method("FARE-FGSM-RS", {"attack": "fgsm-rs"}),
    "lora": Method("FARE-LoRA", {**PGD}, lora=True),
    "fgsm-rs-lora": Method("FARE-FGSM-RS-LoRA", {"attack": "fgsm-rs"}, lora=True),
}


@dataclass(frozen=True)
class RobustFTStudy:
    """Settings: the adversarial story's finetune budget (280 steps, batch 32, lr 1e-3, eps 4/255) and its
    evaluation (AutoAttack-style worst case, 50 steps, 3 target classes, first 150 test images)."""

    demo: str = setting("runs/demo", "the `mmrobust demo --seeds` folder holding seed-K/world and "
                                     "seed-K/adversarial/clip/model (read only)")
    methods: tuple[str, ...] = setting(("pgd10", "fgsm-rs", "lora"), f"methods, of: {', '.join(METHODS)}")
    steps: int = setting(280, "finetune steps of every method")
    batch: int = setting(32, "batch size")
    lr: float = setting(1e-3, "learning rate of the full finetunes (the story's)")
    lora_lr: float = setting(1e-2, "learning rate of the LoRA finetunes (best of 1e-3, 3e-3, 1e-2 on seed 3, "
                                   "outside the default seeds)")
    lora_r: int = setting(8, "LoRA rank (adapters on the image tower's MLP linears)")
    eps: float = setting(4 / 255, "training eps (l-inf)")
    eval_eps: tuple[float, ...] = field(default=(2 / 255, 4 / 255))
    eval_steps: int = setting(50, "steps of each attack of the worst case")
    n_eval: int = setting(150, "test images attacked")
    n_target_classes: int = 3
    threads: int = setting(1, "torch threads (1: timings of different methods compare)")

    def __post_init__(self) -> None:
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown or not self.methods:
            raise ConfigError(f"unknown method(s) {unknown or '(none)'}; pick from {', '.join(METHODS)}")
        for name in ("steps", "batch", "lora_r", "eval_steps", "n_eval", "threads"):
            check_int(name, getattr(self, name), low=1, high=10**7, fix=f"--{name.replace('_', '-')}")


def _inputs(study: RobustFTStudy, seed: int) -> tuple[Path, Path]:
    """(world, clean CLIP) of the demo's seed; a one-line error when the story has not run there."""
    root = Path(study.demo) / f"seed-{seed}"
    world, clip = root / "world", root / "adversarial" / "clip" / "model"
    if not (world / "train.csv").is_file() or not (clip / "open_clip_config.json").is_file():
        raise ConfigError(f"{root} holds no finished adversarial story (world/train.csv, adversarial/clip/model); run "
                          f"`mmrobust demo --seeds {seed} --out {study.demo}` first or point --demo at its folder")
    return world, clip


def count_passes(task: Any, image_size: int) -> dict[str, int]:
    """Forwards and backwards of the image tower in one training step of ``task`` (hooks on the trained tower
    and on a frozen reference tower; a backward is counted when a gradient reaches the tower's output)."""
    counts = {"forwards": 0, "backwards": 0}

    def on_forward(_module: Any, _inputs: Any, output: torch.Tensor) -> None:
        counts["forwards"] += 1
        if output.requires_grad:
            output.register_hook(lambda g: counts.__setitem__("backwards", counts["backwards"] + 1))

    towers = [task.model.visual] + ([task.reference] if hasattr(task, "reference") else [])
    hooks = [t.register_forward_hook(on_forward) for t in towers]
    try:
        x = torch.rand(2, 3, image_size, image_size, generator=torch.Generator().manual_seed(0))
        task.train()
        task({"image": x, "index": torch.arange(2)})["loss"].backward()
    finally:
        for h in hooks:
            h.remove()
    task.zero_grad(set_to_none=True)
    return counts


def _job(study: RobustFTStudy, method: Method, seed: int, world: Path, clip: Path, out: Path) -> TrainJob:
    opts = {"eps": study.eps, **method.opts, **({"lora_r": study.lora_r} if method.lora else {}), "seed": seed}
    lr = study.lora_lr if method.lora else study.lr
    optim = TrainConfig(steps=study.steps, batch_size=study.batch, lr=lr, weight_decay=1e-4,
                        warmup_steps=max(1, study.steps // 10), ckpt_every=max(25, study.steps // 4), seed=seed)
    return TrainJob(task="fare", model=ModelSpec(name=str(clip), seed=seed),
                    data=DataSpec(manifest=str(world / "train.csv"), label_col="label",
                                  classes=str(world / "classes.json")), optim=optim, out_dir=str(out),
                    task_options=opts)


def finetune_stage(out: Path, job: TrainJob, *, progress: bool) -> dict[str, Any]:
    """One resumable FARE finetune, timed (wall and CPU seconds of the whole run, per step) and its cost counted
    (tower forwards / backwards of one step, trainable parameters). A stage resumed after a kill keeps the time
    of the part that ran last, so its timing covers fewer steps: ``timed_steps`` says how many."""
    from mmrobust.models.clip import create_clip
    from mmrobust.tasks.build import build_task

    def run() -> dict[str, Any]:
        probe = build_task("fare", create_clip(job.model.name), **job.task_options)
        passes = count_passes(probe, probe.model.image_size)
        trainable = sum(p.numel() for _, p in probe.trainable_named_parameters())
        wall, cpu = time.perf_counter(), time.process_time()
        model_dir, result = run_train(job, resume=True, progress=progress)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        timed = max(1, result.steps_done - (result.resumed_from or 0))
        return {"model_dir": str(model_dir), "steps": result.steps_done, "timed_steps": timed,
                "wall_per_step": wall / timed, "cpu_per_step": cpu / timed, "trainable_params": trainable, **passes}

    cfg = {"job": {**asdict(job), "out_dir": None}, "inputs": [stamp(job.model.name), stamp(job.data.manifest)]}
    return run_stage(out, cfg, run)


def evaluate_stage(out: Path, model_dir: str, world: Path, study: RobustFTStudy, seed: int) -> dict[str, Any]:
    """Clean zero-shot accuracy on all test images; the worst case (APGD-CE then APGD-T) on the first n_eval."""
    data = EvalData(manifest=str(world / "test.csv"), classes=str(world / "classes.json"))
    opts = {"steps": study.eval_steps, "attack_kwargs": {"apgd-t": {"n_target_classes": study.n_target_classes}}}
    settings = RobustSettings(attack="autoattack", eps=study.eval_eps, n_samples=study.n_eval, seed=seed,
                              attack_options=opts)
    cfg = {"model": model_dir, "opts": opts, "eps": list(study.eval_eps), "n": study.n_eval, "seed": seed,
           "inputs": [stamp(model_dir), stamp(world / "test.csv")]}

    def run() -> dict[str, Any]:
        clean = eval_zeroshot(model=model_dir, data=data, out_dir=out)["top1"]
        robust = eval_robust(model=model_dir, data=data, out_dir=out, settings=settings)
        return {"clean": clean, "clean_subset": robust["clean_top1"],
                **{f"aa@{k}": v["robust_top1"] for k, v in robust["eps"].items()}}

    return run_stage(out, cfg, run)


def run_robust_ft(study: RobustFTStudy, *, seeds: Sequence[int], out_dir: str | Path, progress: bool = True,
                  log: Callable[[str], Any] = print) -> dict[str, Any]:
    """Every (seed, method) finetune and evaluation (the starting CLIP evaluated too) into
    ``out_dir/seed-K/<method>/``, stages resumable; the aggregate into ``out_dir/robust-ft/``."""
    out = Path(out_dir)
    inputs = {seed: _inputs(study, seed) for seed in seeds}  # all checked before hours of runs
    rows: dict[tuple[int, str], dict[str, Any]] = {}
    with torch_threads(study.threads):
        for seed in seeds:
            world, clip = inputs[seed]
            rows[seed, "clip"] = evaluate_stage(out / f"seed-{seed}" / "clip" / "eval", str(clip), world, study, seed)
            for name in study.methods:
                where = out / f"seed-{seed}" / name
                job = _job(study, METHODS[name], seed, world, clip, where)
                cost = finetune_stage(where, job, progress=progress)
                acc = evaluate_stage(where / "eval", cost["model_dir"], world, study, seed)
                rows[seed, name] = {**cost, **acc}
                log(f"[robust-ft] seed {seed} {METHODS[name].label}: clean {acc['clean']:.1%}, worst case "
                    f"{eps_label(study.eps)} {acc[f'aa@{eps_label(study.eps)}']:.1%}, "
                    f"{cost['wall_per_step']:.3f} s/step wall")
    return summarise(out / "robust-ft", study, list(seeds), rows)


def _row(label: str, name: str, seeds: list[int], rows: Mapping[tuple[int, str], Mapping[str, Any]],
         study: RobustFTStudy) -> dict[str, Any]:
    """One table row: cost (counts; time per step as a ratio to PGD-10 at the same seed) and accuracy,
    each ``mean ± sd (min-max)`` over the seeds, with every seed's value kept under ``_spread``."""
    stats: dict[str, Any] = {}
    keys = ["clean"] + [f"aa@{eps_label(e)}" for e in study.eval_eps]
    for key in keys:
        stats[key] = spread([rows[s, name][key] for s in seeds])
    if name != "clip":
        base = "pgd10" if "pgd10" in study.methods else name
        for kind in ("wall", "cpu"):
            stats[f"{kind}_ratio"] = spread([rows[s, name][f"{kind}_per_step"] / rows[s, base][f"{kind}_per_step"]
                                             for s in seeds])
    first = rows[seeds[0], name]
    row = {"method": label, "passes": f"{first['forwards']} / {first['backwards']}" if name != "clip" else "-",
           "trainable": f"{first['trainable_params']:,}" if name != "clip" else "-", "_spread": stats}
    row.update({k: format_spread(v, "%") if k in keys else _ratio(v) for k, v in stats.items()})
    return row


def _ratio(stats: Mapping[str, Any]) -> str:
    """``0.30 ± 0.06 (0.26-0.36)``; PGD-10 against itself is the reference, 1."""
    if stats["min"] == stats["max"] == 1.0:
        return "1 (reference)"
    if stats["n"] == 1:
        return f"{stats['mean']:.2f}"
    return f"{stats['mean']:.2f} ± {stats['sd']:.2f} ({stats['min']:.2f}-{stats['max']:.2f})"


def summarise(out: Path, study: RobustFTStudy, seeds: list[int],
              rows: Mapping[tuple[int, str], Mapping[str, Any]]) -> dict[str, Any]:
    """The table (markdown in summary.md, a record in results_robust_ft.json) over ``seeds``."""
    out.mkdir(parents=True, exist_ok=True)
    table_rows = [_row("CLIP (start, no finetune)", "clip", seeds, rows, study)]
    table_rows += [_row(METHODS[m].label, m, seeds, rows, study) for m in study.methods]
    aa = [(f"aa@{eps_label(e)}", f"worst case {eps_label(e)} %") for e in study.eval_eps]
    cols = [("method", "method"), ("passes", "tower fwd / bwd per step"), ("trainable", "trained params"),
            ("wall_ratio", "wall time / step vs PGD-10"), ("cpu_ratio", "CPU time / step vs PGD-10"),
            ("clean", "clean %"), *aa]
    table = _markdown(table_rows, cols)
    caption = (f"FARE finetunes of each seed's clean CLIP ({study.steps} steps, batch {study.batch}, eps "
               f"{eps_label(study.eps)}; lr {study.lr:g}, LoRA rank {study.lora_r} lr {study.lora_lr:g}); mean ± sd "
               f"(min-max) over seeds {', '.join(map(str, seeds))}. Passes: forwards / backwards of the image tower "
               "in one step (the frozen FARE reference's forward included), counted by hooks. Time: wall and CPU "
               "time per step of the whole run (data, checkpoints included), as a ratio to PGD-10 at the same "
               "seed, on a shared CPU. Clean: zero-shot top-1 on all test images; worst case: APGD-CE then APGD-T "
               f"({study.eval_steps} steps, {study.n_target_classes} targets) on the first {study.n_eval}.")
    (out / "summary.md").write_text(f"# Cheaper robust finetuning\n\n{table}\n\n{caption}\n")
    record = Record(kind="study.robust_ft", config={**asdict(study), "seeds": seeds},
                    metrics={"rows": [{k: v for k, v in r.items()} for r in table_rows],
                             "per_seed": {f"{s}/{m}": dict(v) for (s, m), v in rows.items()}},
                    seeds={"seeds": seeds},
                    tables=[Table.of("Cheaper robust finetuning: cost against accuracy", cols,
                                     [{k: r.get(k, "-") for k, _ in cols} for r in table_rows], caption)])
    write_record(out, record, name="robust_ft")
    return {"table": table, "caption": caption, "rows": table_rows, "summary": str(out / "summary.md")}


def _markdown(rows: Sequence[Mapping[str, Any]], cols: Sequence[tuple[str, str]]) -> str:
    lines = ["| " + " | ".join(h for _, h in cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(r.get(k, "-")) for k, _ in cols) + " |" for r in rows]
    return "\n".join(lines)
