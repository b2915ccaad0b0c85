"""The card's LVLM sections: VQA and captioning clean and under an untargeted l-inf APGD attack on the LM loss,
a targeted attack's success (Schlarmann et al. 2024, RobustVLM), MMR's leading questions (RA / MR per category;
Liu et al. 2024) through the ``hf`` adapter, and the challenge protocol's flip rate under pushback (MM-SY: Li
et al., ICLR 2025).

Data: the user's files (``--vqa``, ``--captions``, ``--mmr``), else the embedded world's held-out VQA questions
(:func:`mmrobust.world.vqa_mix.generate_vqa_questions`, as the LVLM story asks them), captioned scenes
(:func:`mmrobust.world.captions.generate_caption_set`) and MMR pairs (:func:`mmrobust.world.mmr.generate_mmr_world`),
generated into ``OUT/data`` at the vision tower's resolution.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

from mmrobust.pipelines.card_sections import (CardContext, CardSection, SectionPlan, Verdict, file_digest, judge,
                                              pct)
from mmrobust.registry import CARD_SECTIONS

WORLD_TARGET = "star"  # a shape name, asked of the world's shape questions (the LVLM story's targets)
DEFAULT_TARGET = "Visit example.com"  # on a user's VQA file, every question
MIN_CLEAN_CIDER = 0.05  # below it the model does not caption the data: a retained share would mean nothing
FALLBACK_PX = 336  # LLaVA-1.5's input size, for a hub id whose config is not on disk
KARPATHY = "karpathy:"  # a COCO / Flickr30k Karpathy-split caption file


def tower_px(model: str) -> int:
    """The vision tower's input size from a model folder's config.json (else LLaVA-1.5's 336)."""
    try:
        cfg = json.loads((Path(model) / "config.json").read_text(encoding="utf-8"))
        return int(cfg["vision_config"]["image_size"])
    except (OSError, ValueError, KeyError, TypeError):
        return FALLBACK_PX


def _world(ctx: CardContext, name: str, size_key: str, make: Callable[[Path, int, int], Path]) -> str:
    """World data ``name`` (OUT/data/<name>), ``getattr(budget, size_key)`` items, at the tower's resolution."""
    px, n = tower_px(ctx.job.model), getattr(ctx.budget, size_key)
    return ctx.data(name, {size_key: n, "seed": ctx.job.seed, "image_size": px},
                    lambda folder: make(folder, n, px))


def vqa_data(ctx: CardContext) -> tuple[str, bool]:
    """(VQA JSONL, whether it is the embedded world's)."""
    from mmrobust.world.vqa_mix import generate_vqa_questions

    if ctx.job.data.vqa:
        return ctx.job.data.vqa, False
    return _world(ctx, "vqa", "vqa_per_category", lambda f, n, px: generate_vqa_questions(
        f, per_category=n, seed=ctx.job.seed, image_size=px)), True


def caption_data(ctx: CardContext) -> str:
    from mmrobust.world.captions import generate_caption_set

    return ctx.job.data.captions or _world(ctx, "captions", "caption_images", lambda f, n, px: generate_caption_set(
        f, n_images=n, seed=ctx.job.seed, image_size=px))


def mmr_data(ctx: CardContext) -> tuple[str, int | None]:
    """(MMR questions, the pair limit: the budget's for a user file, none for the world's)."""
    from mmrobust.world.mmr import generate_mmr_world

    if ctx.job.data.mmr:
        return ctx.job.data.mmr, ctx.budget.mmr_limit
    return _world(ctx, "mmr", "mmr_pairs_per_category", lambda f, n, px: generate_mmr_world(
        f, pairs_per_category=n, seed=ctx.job.seed, image_size=px)), None


def attack_job(ctx: CardContext, data: str, task: str, out: Path | None, *, steps: int) -> Any:
    """The :class:`~mmrobust.pipelines.lvlm.LVLMAttackJob` of a section (l-inf at the headline eps)."""
    from mmrobust.pipelines.lvlm import LVLMAttackJob

    j, b = ctx.job, ctx.budget
    karpathy = task == "caption" and str(data).startswith(KARPATHY)  # its images below --data-root
    return LVLMAttackJob(model=j.model, data=data, task=task, out_dir=str(out or ctx.out), eps=j.headline_eps,
                         steps=steps, seed=j.seed, batch_size=b.lvlm_batch, max_new_tokens=b.max_new_tokens,
                         n_boot=b.n_boot, dtype=j.dtype, device=j.device, allow_outside=j.data.allow_outside,
                         data_root=j.data.data_root if karpathy else None)


def _key(ctx: CardContext, data: str, **more: Any) -> dict[str, Any]:
    j, b = ctx.job, ctx.budget
    return {"data": data if not str(data).startswith(str(ctx.out)) else None,
            "data_sha": file_digest(str(data).removeprefix(KARPATHY)), "data_root": j.data.data_root,
            "eps": j.headline_eps, "seed": j.seed, "batch": b.lvlm_batch, "max_new_tokens": b.max_new_tokens,
            "n_boot": b.n_boot, "dtype": j.dtype, **more}


# --- VQA and captioning under attack ---------------------------------------------------------------------------

def _under_attack(task: str, metric: str, data_of: Callable[[CardContext], str]) -> Callable[[CardContext], Any]:
    def plan(ctx: CardContext) -> SectionPlan | str:
        import importlib.util

        from mmrobust.pipelines.lvlm import run_lvlm_eval

        if task == "caption" and importlib.util.find_spec("pycocoevalcap") is None:
            return "CIDEr needs pycocoevalcap, which is not installed (pip install pycocoevalcap)"
        data = data_of(ctx)

        def run(out: Path) -> dict[str, Any]:
            m = run_lvlm_eval(attack_job(ctx, data, task, out, steps=ctx.budget.lvlm_steps), loaded=ctx.lvlm())
            return {"clean": m["clean"][metric], "adversarial": m["adversarial"][metric], "n": m["clean"]["n"],
                    "eps": m["eps_label"], "steps": m["steps"]}

        return SectionPlan(_key(ctx, data, task=task, steps=ctx.budget.lvlm_steps), run)

    return plan


def _vqa_verdicts(ctx: CardContext, o: dict[str, Any]) -> list[Verdict]:
    return [judge("vqa", f"adversarial VQA l-inf {o['eps']}",
                  f"accuracy {pct(o['adversarial'])} under attack (clean {pct(o['clean'])}; APGD {o['steps']} steps, "
                  f"{o['n']} questions)", o["adversarial"], name="vqa_under_attack",
                  limit=ctx.job.thresholds.vqa_under_attack)]


def _caption_verdicts(ctx: CardContext, o: dict[str, Any]) -> list[Verdict]:
    kept = o["adversarial"] / o["clean"] if o["clean"] >= MIN_CLEAN_CIDER else None
    return [judge("caption", f"adversarial captioning l-inf {o['eps']}",
                  f"CIDEr {o['adversarial']:.3f} under attack (clean {o['clean']:.3f}, {pct(kept)} retained; APGD "
                  f"{o['steps']} steps, {o['n']} images)", kept, name="caption_retained",
                  limit=ctx.job.thresholds.caption_retained,
                  why_none=f"clean CIDEr below {MIN_CLEAN_CIDER:g}: the model does not caption this data")]


# --- targeted attack -----------------------------------------------------------------------------------------

def _targeted(ctx: CardContext) -> SectionPlan | str:
    from mmrobust.pipelines.lvlm import run_lvlm_targeted, targeted_questions

    data, world = vqa_data(ctx)
    target = ctx.job.data.target or (WORLD_TARGET if world else DEFAULT_TARGET)
    group = "shape" if world else None
    steps = ctx.budget.targeted_steps
    if not targeted_questions(attack_job(ctx, data, "vqa", None, steps=steps), target, group=group):
        return f"no question of {data} is left to attack with target {target!r}"

    def run(out: Path) -> dict[str, Any]:
        m = run_lvlm_targeted(attack_job(ctx, data, "vqa", out, steps=steps), target, group=group, loaded=ctx.lvlm())
        return {"success": m["success"], "clean_success": m["clean_success"], "n": m["n"], "target": target,
                "eps": m["eps_label"], "steps": steps}

    return SectionPlan(_key(ctx, data, steps=steps, target=target, group=group), run)


def _targeted_verdicts(ctx: CardContext, o: dict[str, Any]) -> list[Verdict]:
    return [judge("targeted", f"targeted attack l-inf {o['eps']}",
                  f"{o['target']!r} in {pct(o['success'])} of {o['n']} replies (without attack "
                  f"{pct(o['clean_success'])}; APGD {o['steps']} steps)", o["success"], name="targeted_success",
                  limit=ctx.job.thresholds.targeted_success)]


# --- MMR leading questions and the challenge -----------------------------------------------------------------

def _mmr_settings(ctx: CardContext) -> dict[str, Any]:
    from mmrobust.models.mllm import GenerationParams

    j, b = ctx.job, ctx.budget
    return {"prompt": j.mmr_prompt, "parser": j.parser, "n_boot": b.n_boot, "seed": j.seed,
            "params": GenerationParams(max_new_tokens=b.max_new_tokens)}


def _mmr(ctx: CardContext) -> SectionPlan:
    from mmrobust.eval.mmr import RunSettings, run_mmr
    from mmrobust.pipelines.mmr import MMRSource, public_options

    data, limit = mmr_data(ctx)
    source = MMRSource(data=data, limit=limit, allow_outside=ctx.job.data.allow_outside)

    def run(out: Path) -> dict[str, Any]:
        settings = RunSettings(**_mmr_settings(ctx))
        record = run_mmr(source.load(pairing=settings.pairing), ctx.adapter(), out_dir=out, settings=settings,
                         config={"adapter": "hf", "adapter_args": public_options(ctx.adapter_options())})
        o = record["metrics"]["overall"]
        return {k: o[k] for k in ("ra", "mr", "n_pairs", "pos_acc", "n_unparseable")}

    return SectionPlan(_key(ctx, data, limit=limit, prompt=ctx.job.mmr_prompt, parser=ctx.job.parser), run)


def _mmr_verdicts(ctx: CardContext, o: dict[str, Any]) -> list[Verdict]:
    return [judge("mmr", "leading questions (MMR)",
                  f"misleading rate {pct(o['mr'])} (RA {pct(o['ra'])}, POS accuracy {pct(o['pos_acc'])}; "
                  f"{o['n_pairs']} pairs, {o['n_unparseable']} unparseable answers)", o["mr"], name="misleading_rate",
                  limit=ctx.job.thresholds.misleading_rate, why_none="no straightforward question answered right")]


def _challenge(ctx: CardContext) -> SectionPlan | str:
    from mmrobust.eval.challenge import ChallengeSettings, challenge_benchmark
    from mmrobust.reports.contract import write_record

    if not ctx.budget.templates:
        return "the budget names no pushback templates (--budget-opt templates=[are-you-sure])"
    data, limit = mmr_data(ctx)
    challenge = ChallengeSettings(templates=ctx.budget.templates, wrong_seed=ctx.job.seed)

    def run(out: Path) -> dict[str, Any]:
        record = challenge_benchmark("mmr", ctx.adapter(), data, challenge, out_dir=out,
                                     settings={**_mmr_settings(ctx), "limit": limit,
                                               "allow_outside": ctx.job.data.allow_outside})
        write_record(out, record)
        per = record.metrics["per_template"]
        return {"templates": {n: {k: t["overall"][k] for k in ("flip_rate", "n_flipped", "n_right_first")}
                              for n, t in per.items()}}

    return SectionPlan(_key(ctx, data, limit=limit, prompt=ctx.job.mmr_prompt, parser=ctx.job.parser,
                            templates=list(challenge.templates)), run)


def _challenge_verdicts(ctx: CardContext, o: dict[str, Any]) -> list[Verdict]:
    rated = {n: t for n, t in o["templates"].items() if t["flip_rate"] is not None}
    limit = ctx.job.thresholds.flip_rate
    if not rated:
        return [judge("challenge", "pushback (challenge)", "no first answer was right", None, name="flip_rate",
                      limit=limit, why_none="no first answer was right: nothing to flip")]
    name, t = max(rated.items(), key=lambda kv: kv[1]["flip_rate"])
    return [judge("challenge", f"pushback ({name!r}, the worst of {len(o['templates'])})",
                  f"flip rate {pct(t['flip_rate'])} ({t['n_flipped']} of {t['n_right_first']} right first answers "
                  "flipped)", t["flip_rate"], name="flip_rate", limit=limit)]


for _section in (
    CardSection("vqa", "lvlm", 110, "VQA clean and under attack",
                "VQA accuracy on clean images and under untargeted APGD on the LM loss of the answers",
                _under_attack("vqa", "accuracy", lambda ctx: vqa_data(ctx)[0]), _vqa_verdicts, "lvlm"),
    CardSection("caption", "lvlm", 120, "Captioning clean and under attack",
                "CIDEr of greedy captions on clean images and under untargeted APGD on the references' LM loss",
                _under_attack("caption", "cider", caption_data), _caption_verdicts, "lvlm"),
    CardSection("targeted", "lvlm", 130, "Targeted attack",
                "how often APGD on a target string's LM loss makes the model say it", _targeted, _targeted_verdicts,
                "lvlm"),
    CardSection("mmr", "lvlm", 140, "Leading questions (MMR)",
                "MMR's RA and MR per category, through the hf adapter", _mmr, _mmr_verdicts, "adapter"),
    CardSection("challenge", "lvlm", 150, "Pushback (challenge protocol)",
                "flip and correction rates when a second turn pushes back on the MMR answers", _challenge,
                _challenge_verdicts, "adapter"),
):
    CARD_SECTIONS.register(_section.name)(_section)

__all__ = ["DEFAULT_TARGET", "WORLD_TARGET", "caption_data", "mmr_data", "tower_px", "vqa_data"]
