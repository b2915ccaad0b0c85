"""The LVLM story (Schlarmann et al. 2024, FARE's headline result, on the embedded world):

the MMR story's baseline tiny LLaVA (trained with the adversarial story's clean CLIP tower, frozen) ->
the same LLaVA with the adversarial story's FARE and TeCoA towers swapped in, no retraining
(:func:`mmrobust.lvlm.swap_and_save`) -> short-answer VQA on held-out scenes, clean and under an
untargeted l-inf APGD attack on the LM loss of the right answer (:func:`mmrobust.eval.lvlm.evaluate_under_attack`)
-> a targeted attack that makes the model answer a chosen shape name to "What shape is in the picture?", once
per name in ``targets`` (success = the name in the greedy reply, :func:`mmrobust.lvlm.attack_lvlm_targeted`),
pooled over the names -> table, chart, record.

The LLaVA and the towers come from the stories before it (run first if absent). Every stage is
resumable (:func:`mmrobust.stories.stages.run_stage`); same seed, same numbers.
"""
from __future__ import annotations

import functools
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

from mmrobust.stories.parallel import torch_threads
from mmrobust.stories.stages import quiet_hf_progress, run_stage, stamp
from mmrobust.reports.contract import Record, Table, write_record
from mmrobust.reports.spread import Claim, pick
from mmrobust.reports.tables import format_table

TOWERS = ("CLIP", "FARE", "TeCoA")  # the adversarial story's clip / fare / tecoa models
# Targets of the targeted attack: every shape name of the world but "circle", which a "semicircle" reply
# holds (success is the target as a substring of the reply, as in Schlarmann et al. 2024)
TARGETS = ("square", "triangle", "diamond", "star", "cross", "ring", "hexagon", "semicircle", "bar")


def _tower(label: str, key: str) -> Any:
    return lambda m: pick(m["towers"], "tower", label)[key]


# the story's headline effects, checked at every seed by `mmrobust demo --seeds` (reports.spread)
CLAIMS = (
    Claim("attack-breaks-llava", "the original tower's VQA accuracy under attack", _tower("CLIP", "adv"),
          at_most=0.35),
    Claim("fare-drops-in", "FARE tower's clean VQA minus the original's (swapped in, no retraining)",
          lambda m: _tower("FARE", "clean")(m) - _tower("CLIP", "clean")(m), at_least=-0.15),
    Claim("fare-robust", "FARE tower's VQA under attack minus the original's",
          lambda m: _tower("FARE", "adv")(m) - _tower("CLIP", "adv")(m), at_least=0.15),
    Claim("fare-resists-targeted", "the original tower's targeted success minus FARE's",
          lambda m: _tower("CLIP", "targeted")(m) - _tower("FARE", "targeted")(m), at_least=0.2),
)


@dataclass(frozen=True)
class LVLMDemo:
    """Settings of the story (the tiny LLaVA of the MMR story; APGD on 2 CPU cores)."""

    per_category: int = 25  # held-out VQA questions per category (shape, colour, count, position)
    eps: float = 4 / 255
    steps: int = 20  # untargeted APGD steps (10 steps leave the original tower at 20%, 20 steps at 16%)
    targets: tuple[str, ...] = TARGETS
    targeted_steps: int = 50
    batch: int = 50
    max_new_tokens: int = 6
    n_boot: int = 1000
    world_seed: int = 0  # the world of the adversarial and MMR stories run here when their models are absent
    seed: int = 0
    threads: int = 2
    llava_model: str = ""  # a trained LLaVA folder; "" = the MMR story's baseline (run if absent)
    tower_models: tuple[str, ...] = ()  # CLIP, FARE, TeCoA model folders; () = the adversarial story's


def run_lvlm_demo(out_dir: str | Path, settings: LVLMDemo = LVLMDemo(), *, progress: bool = True,
                  log: Any = print) -> dict[str, Any]:
    """Run the story into ``out_dir`` (beside the ``mmr`` and ``adversarial`` stories' folders)."""
    out = Path(out_dir)
    with quiet_hf_progress(not progress), torch_threads(settings.threads):
        start = time.perf_counter()
        sources = _sources(out, settings, progress, log)
        size = _tower_px(sources["llava"])
        questions = run_stage(out / "data", {"per_category": settings.per_category, "seed": settings.seed,
                                             "image_size": size},
                              lambda: {"questions": str(_questions(out / "data", settings, size))})["questions"]
        rows = []
        for label in TOWERS:
            model_dir = _model(out, label, sources)
            load = functools.cache(functools.partial(_load, model_dir))  # once per tower, only if a stage runs
            vqa = _vqa(out / label.lower(), settings, model_dir, questions, load)
            hits = {t: _targeted(out / label.lower() / f"targeted-{_slug(t)}", settings, model_dir, questions, t,
                                 load) for t in settings.targets}
            rows.append(_row(label, vqa, hits))
            r = rows[-1]
            log(f"[lvlm] {label} tower: VQA clean {r['clean']:.1%}, under {vqa['eps_label']} {r['adv']:.1%}; "
                f"targeted {r['targeted']:.1%} of {r['n_targeted']} ({len(hits)} targets, "
                f"{r['targeted_min']:.0%}-{r['targeted_max']:.0%} per target)")
        return _summarise(out, settings, rows, round(time.perf_counter() - start, 1), log)


def _sources(out: Path, s: LVLMDemo, progress: bool, log: Any) -> dict[str, str]:
    """The baseline LLaVA of the MMR story and the adversarial story's towers (those stories run if absent),
    or the folders the settings name."""
    from mmrobust.errors import ConfigError
    from mmrobust.stories.adversarial import AdversarialDemo, run_adversarial_demo
    from mmrobust.stories.mmr_trained import MMRTrainedDemo, run_mmr_trained_demo

    if s.tower_models and len(s.tower_models) != len(TOWERS):
        raise ConfigError(f"tower_models needs {len(TOWERS)} folders ({', '.join(TOWERS)}), got {len(s.tower_models)}")
    adv, mmr = out.parent / "adversarial", out.parent / "mmr"
    towers = dict(zip(TOWERS, map(Path, s.tower_models))) if s.tower_models else {
        "CLIP": adv / "clip" / "model", "FARE": adv / "fare" / "model", "TeCoA": adv / "tecoa" / "model"}
    if not s.tower_models and not all((p / "open_clip_config.json").is_file() for p in towers.values()):
        log("[lvlm] running the adversarial story first (its towers are swapped in here)")
        run_adversarial_demo(adv, AdversarialDemo(world_seed=s.world_seed, seed=s.seed), progress=progress, log=log)
    llava = Path(s.llava_model) if s.llava_model else mmr / "baseline" / "model"
    if not s.llava_model and not (llava / "config.json").is_file():
        log("[lvlm] running the MMR story first (its baseline LLaVA is the model here)")
        run_mmr_trained_demo(mmr, MMRTrainedDemo(world_seed=s.world_seed, seed=s.seed), progress=progress, log=log)
    return {"llava": str(llava), **{k: str(v) for k, v in towers.items()}}


def _tower_px(llava: str) -> int:
    """The LLaVA's vision-tower resolution: the held-out scenes are drawn at it, so none is resized."""
    import json

    return int(json.loads((Path(llava) / "config.json").read_text())["vision_config"]["image_size"])


def _questions(root: Path, s: LVLMDemo, size: int) -> Path:
    from mmrobust.world.vqa_mix import generate_vqa_questions

    return generate_vqa_questions(root, per_category=s.per_category, seed=s.seed, image_size=size)


def _model(out: Path, label: str, sources: dict[str, str]) -> str:
    """The baseline LLaVA itself (its tower is the clean CLIP), or a copy with ``label``'s tower swapped in."""
    from mmrobust.lvlm.swap import swap_and_save

    if label == "CLIP":
        return sources["llava"]
    target = out / f"llava-{label.lower()}"
    cfg = {"llava": stamp(Path(sources["llava"]) / "model.safetensors"), "tower": stamp(Path(sources[label]))}
    return run_stage(target, cfg, lambda: {"model_dir": str(swap_and_save(
        sources["llava"], sources[label], out_dir=target / "model", overwrite=True))})["model_dir"]


def _load(model_dir: str) -> tuple[Any, Any]:
    from mmrobust.tasks.mllm_sft import load_hf_mllm

    m = load_hf_mllm(model_dir)
    return m.model.eval(), m.processor


def _vqa(out: Path, s: LVLMDemo, model_dir: str, questions: str, load: Callable[[], tuple[Any, Any]]
         ) -> dict[str, Any]:
    """Clean and attacked VQA accuracy (record written to ``out/vqa``)."""
    from mmrobust.eval.lvlm.under_attack import UnderAttackSettings, evaluate_under_attack
    from mmrobust.eval.vqa import VQATask, load_vqa

    def make() -> dict[str, Any]:
        model, processor = load()
        settings = UnderAttackSettings(eps=s.eps, steps=s.steps, seed=s.seed, batch_size=s.batch, n_boot=s.n_boot,
                                       max_new_tokens=s.max_new_tokens)
        rec = evaluate_under_attack(model, processor, VQATask(load_vqa(questions)), settings, out_dir=out / "vqa")
        write_record(out / "vqa", rec, name="vqa-attack")
        m = rec.metrics
        return {"clean": m["clean"], "adversarial": m["adversarial"], "eps_label": m["eps_label"],
                "inside_eps": m["inside_eps"], "per_group": m["per_group"]}

    cfg = {"model": stamp(Path(model_dir) / "model.safetensors"), "questions": stamp(questions), "eps": s.eps,
           "steps": s.steps, "seed": s.seed, "batch": s.batch, "max_new_tokens": s.max_new_tokens, "n_boot": s.n_boot}
    return run_stage(out / "vqa", cfg, make)


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text.lower())[:40]


def _targeted(out: Path, s: LVLMDemo, model_dir: str, questions: str, target: str,
              load: Callable[[], tuple[Any, Any]]) -> dict[str, Any]:
    """Targeted APGD on the shape questions whose answer is not ``target``: success rate, clean and attacked."""
    from mmrobust.eval.vqa import VQATask, load_vqa
    from mmrobust.pipelines.lvlm import targeted_record, targeted_rows

    def make() -> dict[str, Any]:
        asked = [q for q in VQATask(load_vqa(questions)).questions()
                 if q.group == "shape" and q.ground_truth != target]
        if not asked:  # every shape question's answer is the target (tiny settings): nothing to attack
            return {"n": 0, "success": 0.0, "clean_success": 0.0, "max_linf": 0.0, "inside_eps": True}
        model, processor = load()
        rows = targeted_rows(model, processor, asked, target, eps=s.eps, steps=s.targeted_steps, seed=s.seed,
                             batch_size=s.batch, max_new_tokens=s.max_new_tokens)
        m = targeted_record(rows, target=target, eps=s.eps, steps=s.targeted_steps).metrics
        return {k: m[k] for k in ("n", "success", "clean_success", "max_linf", "inside_eps")}

    cfg = {"model": stamp(Path(model_dir) / "model.safetensors"), "questions": stamp(questions), "eps": s.eps,
           "steps": s.targeted_steps, "target": target, "seed": s.seed, "batch": s.batch,
           "max_new_tokens": s.max_new_tokens}
    return run_stage(out, cfg, make)


def _row(label: str, vqa: dict[str, Any], hits: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """One tower's row: VQA clean / attacked, and the targeted attack pooled over its targets (Wilson CI)."""
    from mmrobust.reports.spread import wilson

    n = sum(h["n"] for h in hits.values())
    k = sum(round(h["success"] * h["n"]) for h in hits.values())
    k_clean = sum(round(h["clean_success"] * h["n"]) for h in hits.values())
    rates = [h["success"] for h in hits.values() if h["n"]] or [0.0]
    return {"tower": label, "clean": vqa["clean"]["accuracy"], "adv": vqa["adversarial"]["accuracy"],
            "clean_ci": vqa["clean"].get("accuracy_ci"), "adv_ci": vqa["adversarial"].get("accuracy_ci"),
            "n": vqa["clean"]["n"], "targeted": k / max(n, 1), "targeted_ci": wilson(k, n),
            "targeted_clean": k_clean / max(n, 1), "targeted_min": min(rates), "targeted_max": max(rates),
            "n_targeted": n,
            "per_target": {t: {"success": h["success"], "clean_success": h["clean_success"], "n": h["n"]}
                           for t, h in hits.items()},
            "inside_eps": bool(vqa["inside_eps"] and all(h["inside_eps"] for h in hits.values()))}


def _summarise(out: Path, s: LVLMDemo, rows: list[dict[str, Any]], seconds: float, log: Any) -> dict[str, Any]:
    from mmrobust.reports.protocol import eps_label
    from mmrobust.reports.plots import grouped_bars

    eps = eps_label(s.eps)
    cols = [("tower", "vision tower"), ("clean", "VQA clean %"), ("adv", f"VQA at {eps} %"),
            ("targeted", f"targeted ({len(s.targets)} targets) %"), ("spread", "per target %"),
            ("n_targeted", "targeted images"), ("n", "questions")]
    shown = [{**r, **{k: 100 * r[k] for k in ("clean", "adv", "targeted")},
              "spread": f"{r['targeted_min']:.0%}-{r['targeted_max']:.0%}"} for r in rows]
    table = format_table(shown, cols, markdown=True)
    (out / "summary.md").write_text(f"# LVLM story: robust towers swapped into the tiny LLaVA\n\n{table}\n\n"
                                    f"Story {seconds} s.\n")
    grouped_bars(out / "lvlm.png", groups=[r["tower"] for r in rows],
                 series={"VQA clean": [r["clean"] for r in rows], f"VQA at {eps}": [r["adv"] for r in rows],
                         f"targeted ({len(s.targets)} targets)": [r["targeted"] for r in rows]},
                 title=f"tiny LLaVA, towers swapped in without retraining (APGD, eps {eps})",
                 colors=["#3b7dd8", "#d8453b", "#8e5bd8"])
    metrics = {"towers": rows, "seconds": seconds, "eps": s.eps}
    write_record(out, Record(kind="story.lvlm", metrics=metrics, tables=_tables(s, rows, eps), plots=["lvlm.png"],
                             config=asdict(s), seeds={"attack": s.seed}), name="story")
    log(f"[lvlm] story {seconds} s")
    return {"table": table, "plot": str(out / "lvlm.png"), "rows": rows, "record": metrics}


def _tables(s: LVLMDemo, rows: list[dict[str, Any]], eps: str) -> list[Table]:
    """The story's table (one row per tower) and the targeted attack's success per target."""
    title = f"LVLM story: the tiny LLaVA with its CLIP tower and with FARE / TeCoA towers swapped in (eps {eps})"
    story = Table.of(title,
                     [("tower", "vision tower"), ("clean", "VQA clean", "%"), ("adv", f"VQA at {eps}", "%"),
                      ("targeted", "targeted success", "%"), ("targeted_clean", "target without attack", "%"),
                      ("n_targeted", "targeted images", "count"), ("n", "questions", "count")], rows,
                     f"VQA: VQAv2 accuracy of greedy short answers on {rows[0]['n']} held-out questions, clean "
                     f"and after untargeted APGD ({s.steps} steps, l-inf {eps}) on the LM loss of the right answer. "
                     f"Targeted: APGD ({s.targeted_steps} steps, same eps) minimizing the LM loss of a target as "
                     "the answer to 'What shape is in the picture?' on the shapes that are not the target, once per "
                     f"target ({', '.join(s.targets)}), pooled; success = the target in the greedy reply. The LLaVA "
                     "(projector + Llama) was trained once with the CLIP tower; FARE and TeCoA towers are swapped "
                     "in with no retraining.")
    per = [{"target": t, **{r["tower"]: r["per_target"][t]["success"] for r in rows},
            "n": rows[0]["per_target"][t]["n"]} for t in s.targets]
    per_target = Table.of(f"Targeted success per target (APGD {s.targeted_steps} steps, l-inf {eps})",
                          [("target", "target"), *[(r["tower"], f"{r['tower']} tower", "%") for r in rows],
                           ("n", "images", "count")], per,
                          "Share of the shapes that are not the target whose greedy reply holds the target after "
                          "the attack.")
    return [story, per_target]
