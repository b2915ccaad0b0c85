"""The adversarial story on the synthetic world (Schlarmann et al., ICML 2024; Mao et al., ICLR 2023):

pretrain a clean tiny CLIP -> clean and robust zero-shot accuracy per eps under PGD and the
AutoAttack-style worst case (APGD-CE then APGD-T) -> FARE and TeCoA finetunes of the vision
encoder, same data and step budget -> evaluate again (plus FARE's embedding drift) -> table, plot.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mmrobust.world.shapes import generate_world
from mmrobust.eval.robust import RobustSettings
from mmrobust.reports.protocol import eps_label
from mmrobust.pipelines.evaluate import EvalData, eval_robust
from mmrobust.stories.parallel import run_stages, torch_threads
from mmrobust.stories.stages import run_stage, stamp, train_stage
from mmrobust.reports.plots import grouped_bars
from mmrobust.reports.contract import Record, Table, write_record
from mmrobust.reports.spread import Claim, pick
from mmrobust.reports.tables import format_table


def _model(label: str, key: str) -> Any:
    return lambda m: pick(m["models"], "model", label)[key]


# the story's headline effects, checked at every seed by `mmrobust demo --seeds` (reports.spread)
CLAIMS = (
    Claim("attack-breaks-clip", "CLIP's worst-case accuracy at 4/255", _model("CLIP", "autoattack@4/255"), at_most=0.2),
    Claim("fare-robust", "FARE's worst-case accuracy at 4/255 minus CLIP's",
          lambda m: _model("FARE", "autoattack@4/255")(m) - _model("CLIP", "autoattack@4/255")(m), at_least=0.15),
    Claim("fare-keeps-clean", "FARE's clean accuracy minus CLIP's",
          lambda m: _model("FARE", "clean")(m) - _model("CLIP", "clean")(m), at_least=-0.10),
    Claim("fare-agrees", "FARE's zero-shot agreement with the original CLIP (tower drift)",
          _model("FARE", "agreement"), at_least=0.8),
    Claim("tecoa-robust", "TeCoA's worst-case accuracy at 4/255 minus CLIP's",
          lambda m: _model("TeCoA", "autoattack@4/255")(m) - _model("CLIP", "autoattack@4/255")(m), at_least=0.05),
)


@dataclass(frozen=True)
class AdversarialDemo:
    """Settings of the demo (32 px images, so eps up to a few /255 already matter)."""

    n_train: int = 12000
    n_test: int = 1000
    world_seed: int = 0
    model: str = "mmrobust-tiny"
    pretrain_steps: int = 700
    pretrain_batch: int = 128
    pretrain_lr: float = 1.5e-3
    finetune_steps: int = 280
    finetune_batch: int = 32
    finetune_lr: float = 1e-3  # 2e-3 let the tower drift from the original at some seeds (README)
    train_eps: float = 4 / 255
    eval_eps: tuple[float, ...] = (2 / 255, 4 / 255)
    attack_steps: int = 10  # PGD steps in training
    eval_attack: str = "autoattack"
    eval_steps: int = 50
    n_target_classes: int = 3
    n_eval: int = 150
    seed: int = 0
    workers: int = 2  # finetunes and evaluations run side by side, one torch thread each (1: in order)
    threads: int = 2  # torch threads of the stages run in this process, whatever the core count


def _train(out: Path, s: AdversarialDemo, task: str, model: str, world: Path, *, steps: int, batch: int, lr: float,
           opts: dict[str, Any], progress: bool, wd: float = 1e-4) -> str:
    return train_stage(out, task=task, model=model, manifest=world / "train.csv", classes=world / "classes.json",
                       steps=steps, batch=batch, lr=lr, weight_decay=wd, seed=s.seed, opts=opts, progress=progress)


def _robust(out: Path, model_dir: str, world: Path, s: AdversarialDemo, attack: str, steps: int,
            reference: str | None) -> dict[str, Any]:
    data = EvalData(manifest=str(world / "test.csv"), classes=str(world / "classes.json"))
    opts: dict[str, Any] = {"steps": steps}
    if attack == "autoattack":
        opts["attack_kwargs"] = {"apgd-t": {"n_target_classes": s.n_target_classes}}
    cfg = {"model": model_dir, "attack": attack, "opts": opts, "eps": list(s.eval_eps), "n": s.n_eval,
           "reference": reference, "inputs": [stamp(model_dir), stamp(reference or "")],
           **({"drift": ["embedding", "zero-shot agreement"]} if reference else {})}
    settings = RobustSettings(attack=attack, eps=s.eval_eps, n_samples=s.n_eval, seed=s.seed, attack_options=opts)
    return run_stage(out, cfg, lambda: eval_robust(model=model_dir, data=data, out_dir=out, settings=settings,
                                                   reference=reference))


def run_adversarial_demo(out_dir: str | Path, settings: AdversarialDemo = AdversarialDemo(), *,
                         progress: bool = True, log: Any = print) -> dict[str, Any]:
    """Run the whole story; writes results_story.json, summary.md and adversarial.png into ``out_dir``."""
    with torch_threads(settings.threads):
        return _run(Path(out_dir), settings, progress, log)


def _run(out: Path, s: AdversarialDemo, progress: bool, log: Any) -> dict[str, Any]:
    world = out.parent / "world"
    run_stage(world, {"n_train": s.n_train, "n_test": s.n_test, "seed": s.world_seed},
              lambda: {"root": str(generate_world(world, n_train=s.n_train, n_test=s.n_test, seed=s.world_seed).root)})
    base = _train(out / "clip", s, "clip", s.model, world, steps=s.pretrain_steps, batch=s.pretrain_batch,
                  lr=s.pretrain_lr, opts={}, progress=progress, wd=0.1)
    labels = ["FARE", "TeCoA", "CLIP"]  # longest first: the CLIP evaluations fill the gap
    report = lambda i, r: log(f"[adversarial] {labels[i]}: " + ", ".join(  # noqa: E731
        f"{k} {v:.1%}" for k, v in r.items() if isinstance(v, float)))
    if s.workers > 1:
        log(f"[adversarial] FARE and TeCoA finetunes and the evaluations, {s.workers} at a time (one thread each)")
    rows = dict(zip(labels, run_stages(_lane, [(out, s, label, base, world) for label in labels], workers=s.workers,
                                       progress=progress, desc="finetunes + evaluations", done=report)))
    return _summarise(out, s, [rows[k] for k in ("CLIP", "FARE", "TeCoA")])


def _lane(out: Path, s: AdversarialDemo, label: str, base: str, world: Path, *, progress: bool) -> dict[str, Any]:
    """Finetune (FARE, TeCoA; none for CLIP) then PGD and worst-case evaluations: one table row."""
    model_dir = base
    if label != "CLIP":
        task = label.lower()
        adv_opts = {"eps": s.train_eps, "step_size": 1 / 255, "attack_steps": s.attack_steps}
        model_dir = _train(out / task, s, task, base, world, steps=s.finetune_steps, batch=s.finetune_batch,
                           lr=s.finetune_lr, opts=adv_opts, progress=progress)
    row: dict[str, Any] = {"model": label}
    for attack, steps in (("pgd", 10), (s.eval_attack, s.eval_steps)):
        ref = base if (label != "CLIP" and attack == s.eval_attack) else None
        m = _robust(Path(model_dir).parent / f"eval-{attack}", model_dir, world, s, attack, steps, ref)
        row["clean"] = m["clean_top1"]
        for name, r in m["eps"].items():
            row[f"{attack}@{name}"] = r["robust_top1"]
        if "embedding_drift" in m:
            row["drift"] = m["embedding_drift"]
            row["drift_clean"] = m["embedding_drift"][eps_label(s.train_eps)]["clean"] \
                if eps_label(s.train_eps) in m["embedding_drift"] else None
            row["agreement"] = m.get("zero_shot_agreement")
    return row


def _summarise(out: Path, s: AdversarialDemo, rows: list[dict[str, Any]]) -> dict[str, Any]:
    cols = [("model", "model"), ("clean", "clean %")]
    for attack in ("pgd", s.eval_attack):
        cols += [(f"{attack}@{eps_label(e)}", f"{attack} {eps_label(e)} %") for e in s.eval_eps]
    table = format_table(rows, cols, markdown=True)
    (out / "summary.md").write_text(f"# Adversarial story\n\n{table}\n")
    series = {"clean": [r["clean"] for r in rows]}
    series.update({f"{s.eval_attack} {eps_label(e)}": [r[f"{s.eval_attack}@{eps_label(e)}"] for r in rows]
                   for e in s.eval_eps})
    grouped_bars(out / "adversarial.png", groups=[r["model"] for r in rows], series=series,
                 title=f"zero-shot accuracy under {s.eval_attack} (l-inf), {s.n_eval} test images",
                 colors=["#3b7dd8", "#f0a030", "#d8453b"])
    story = Table.of(f"Adversarial story: zero-shot accuracy under attack ({s.n_eval} test images)",
                     [(k, h.replace(" %", ""), "" if k == "model" else "%") for k, h in cols], rows,
                     f"Clean accuracy, then robust accuracy under l-inf PGD-10 and the AutoAttack-style worst case "
                     f"(APGD-CE then APGD-T, {s.eval_steps} steps each) at each eps (images in [0,1]). FARE and TeCoA "
                     f"finetune the vision tower with PGD inside eps {eps_label(s.train_eps)} ({s.finetune_steps} "
                     f"steps, batch {s.finetune_batch}, lr {s.finetune_lr:g}).")
    drift = Table.of("Drift of the finetuned towers from the original CLIP",
                     [("model", "model"), ("drift_clean", "FARE loss on clean images"),
                      ("agreement", "zero-shot agreement with the original", "%")],
                     [r for r in rows if r.get("agreement") is not None],
                     "FARE loss: mean ||f(x) - f_orig(x)||^2 of the image embeddings on clean test images; agreement: "
                     "share of test images on which the finetuned tower and the original predict the same class. "
                     "A tower that drifts far no longer drops into a model built on the original (the LVLM story).")
    write_record(out, Record(kind="story.adversarial", metrics={"models": rows}, config=asdict(s),
                             seeds={"demo": s.seed}, tables=[story, drift], plots=["adversarial.png"]), name="story")
    return {"rows": rows, "table": table, "plot": str(out / "adversarial.png")}
