"""`mmrobust lvlm eval|targeted` as library functions: an HF LLaVA-style model (its own tower or a swapped-in
robust one, :func:`mmrobust.lvlm.swap_and_save`) on a VQA or caption JSONL, clean and under attack
(Schlarmann et al. 2024). Each writes a record (``results_<name>.json`` + per-sample JSONL) to ``out_dir``;
both resume from per-batch partial files after a kill.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Sequence

from mmrobust.errors import ConfigError
from mmrobust.eval.lvlm.under_attack import UnderAttackSettings
from mmrobust.registry import LVLM_ATTACKS, LVLM_TASKS
from mmrobust.reports.contract import Record, Table, write_record
from mmrobust.models.limits import MAX_ATTACK_EPS, MAX_NEW_TOKENS
from mmrobust.values import check_int, check_number


@dataclass(frozen=True, kw_only=True)
class LVLMAttackJob(UnderAttackSettings):
    """Model, data and attack settings of an LVLM evaluation: the evaluation's own settings
    (:class:`~mmrobust.eval.lvlm.under_attack.UnderAttackSettings`: eps, steps, seed, batch size, decoding, parser,
    bootstrap) plus what to load and where to write (eps in (0, 64/255] image units, l-inf; at most 4,096 new
    tokens: :mod:`mmrobust.models.limits`)."""

    model: str  # an HF model folder or hub id (LLaVA-1.5 / LLaVA-NeXT style)
    data: str  # VQA JSONL (id, image, question, answers), caption JSONL (id, image, captions) or MMR questions
    task: str = "vqa"  # an LVLM_TASKS name (mmrobust.eval.lvlm)
    out_dir: str = "runs/lvlm"
    dtype: str = "float32"
    device: str = "cpu"
    allow_outside: bool = False
    prompt: str = "official"  # MMR's prompt variant (mmrobust.eval.mmr.prompts), with task "mmr"
    split: str = "test"  # with data karpathy:PATH (task "caption"): the Karpathy split
    data_root: str | None = None  # with data karpathy:PATH: the image folder (default: the JSON's folder)
    attack: str = "apgd"  # `lvlm eval`: an LVLM_ATTACKS name (mmrobust.lvlm.attacks); `targeted` is APGD

    def __post_init__(self) -> None:
        LVLM_TASKS.get(self.task)  # unknown names: one line with the choices
        LVLM_ATTACKS.get(self.attack).check_options(self.attack_options)
        check_int("steps", self.steps, low=1, fix="--steps")
        check_int("max_new_tokens", self.max_new_tokens, low=1, high=MAX_NEW_TOKENS, fix="e.g. --max-new-tokens 20")
        # eps 0 attacks nothing (the "under attack" score is the clean one); past 64/255 the image is repainted
        check_number("eps", self.eps, low=0, high=MAX_ATTACK_EPS, low_open=True,
                     fix="use a radius in (0, 64/255], e.g. --eps 4/255")
        super().__post_init__()  # the evaluation's own checks (batch size, seed, parser, bootstrap)

    def under_attack(self, label: str, options: dict[str, Any]) -> UnderAttackSettings:
        """The evaluation's settings: this job's, with the attack's protocol label and typed options."""
        common = {f.name: getattr(self, f.name) for f in fields(UnderAttackSettings)}
        return UnderAttackSettings(**{**common, "attack_label": label, "attack_options": options})


def load_task(job: LVLMAttackJob) -> Any:
    """The registered LVLM task ``job.task`` over ``job.data`` (VQATask, CaptionTask, MMRAttackTask, ...:
    :func:`mmrobust.eval.lvlm.tasks.load_attack_task`)."""
    from mmrobust.eval.lvlm.tasks import LVLMData, load_attack_task

    source = LVLMData(job.data, allow_outside=job.allow_outside, prompt=job.prompt, split=job.split,
                      data_root=job.data_root)
    return load_attack_task(job.task, source)


def _model(job: LVLMAttackJob) -> tuple[Any, Any]:
    from mmrobust.tasks.mllm_sft import load_hf_mllm

    m = load_hf_mllm(job.model, dtype=job.dtype)
    return m.model.to(job.device).eval(), m.processor


def run_lvlm_eval(job: LVLMAttackJob, *, loaded: tuple[Any, Any] | None = None) -> dict[str, Any]:
    """Clean and untargeted-attack score (VQA accuracy / CIDEr / MMR's RA and MR) of ``job.model`` on
    ``job.data``: the registered attack ``job.attack`` (default APGD) on the LM loss of the reference answers
    (:func:`mmrobust.eval.lvlm.under_attack.evaluate_under_attack`). ``loaded``: ``job.model`` already loaded,
    as (model, processor) on ``job.device`` (a caller running several evaluations loads it once)."""
    from mmrobust.eval.lvlm.under_attack import evaluate_under_attack
    from mmrobust.lvlm.attack import greedy_outputs

    attack = LVLM_ATTACKS.get(job.attack)
    options = attack.check_options(job.attack_options)
    task = load_task(job)
    model, processor = loaded or _model(job)
    rec = evaluate_under_attack(model, processor, task, job.under_attack(attack.protocol, options), out_dir=job.out_dir,
                                attack=attack.fn, generate=greedy_outputs)
    rec.config = {**asdict(job), **rec.config}
    rec.warnings += _swap_warnings(job, processor)
    write_record(job.out_dir, rec)
    return rec.metrics


def _swap_warnings(job: LVLMAttackJob, processor: Any) -> list[str]:
    """The swapped tower's warnings (resolution, token count, normalization) when ``job.model`` is a folder
    written by ``mmrobust lvlm swap``."""
    from mmrobust.lvlm.checks import deployed_warnings

    return deployed_warnings(job.model, processor) if Path(job.model).is_dir() else []


def targeted_protocol(job: LVLMAttackJob, questions: Sequence[Any], target: str) -> dict[str, Any]:
    """What two targeted runs must share: prompts, target string, greedy decoding, attack and eps (a fraction
    of 1 and k/255)."""
    from mmrobust.reports.protocol import decoding_protocol, digest, eps_fields

    return {"task": job.task, "prompts_sha": digest([q.prompt for q in questions]), "n_questions": len(questions),
            "target": target, "decoding": decoding_protocol(max_new_tokens=job.max_new_tokens),
            "attack": "apgd-targeted-lm-loss", "norm": "linf", "steps": job.steps, **eps_fields(job.eps),
            "prompt": job.prompt, "dtype": job.dtype}


def targeted_rows(model: Any, processor: Any, questions: Sequence[Any], target: str, *, eps: float, steps: int,
                  seed: int, batch_size: int, max_new_tokens: int, partial: Path | None = None) -> list[dict]:
    """Per question: greedy reply clean and after targeted APGD on the LM loss of ``target`` (success =
    ``target`` in the reply, :func:`mmrobust.lvlm.attack.attack_lvlm_targeted`). With ``partial``, finished
    batches are appended there and reused by a rerun with the same settings."""
    from mmrobust.eval.lvlm.under_attack import load_pixels, resumable_batches
    from mmrobust.lvlm.attack import attack_lvlm_targeted, greedy_outputs, tower_size

    device = next(model.parameters()).device
    settings = {"target": target, "eps": eps, "steps": steps, "seed": seed, "max_new_tokens": max_new_tokens,
                "model": str(getattr(model.config, "_name_or_path", "")) or type(model).__name__}

    def attack(batch: Sequence[Any]) -> list[dict]:
        x = load_pixels(batch, tower_size(model), device)
        prompts = [q.prompt for q in batch]
        clean = greedy_outputs(model, processor, x, prompts, max_new_tokens=max_new_tokens)
        x_adv, rec = attack_lvlm_targeted(model, processor, x, prompts, target, eps=eps, steps=steps, seed=seed,
                                          max_new_tokens=max_new_tokens)
        adv = rec.outputs  # the attack's own greedy replies at x_adv (its success is read off them)
        linf = (x_adv - x).abs().flatten(1).amax(1).tolist()
        return [{"uid": q.uid, "group": q.group, "clean_response": c, "adv_response": a, "clean_success": target in c,
                 "success": bool(s), "target_loss_clean": cl, "target_loss_adv": fl, "linf": d}
                for q, c, a, s, cl, fl, d in zip(batch, clean, adv, rec.stopped, rec.clean_loss, rec.final_loss, linf)]

    return resumable_batches(questions, batch_size, settings, partial, attack)[0]


def targeted_questions(job: LVLMAttackJob, target: str, *, group: str | None = None) -> list[Any]:
    """The questions of ``job.data`` a targeted attack of ``target`` asks: those of ``group`` (all if None)
    whose right answer is not already the target."""
    questions = [q for q in load_task(job).questions() if group is None or q.group == group]
    return [q for q in questions if target not in (q.ground_truth if isinstance(q.ground_truth, str) else "")]


def run_lvlm_targeted(job: LVLMAttackJob, target: str, *, group: str | None = None,
                      loaded: tuple[Any, Any] | None = None) -> dict[str, Any]:
    """Targeted ("stealthy") attack success of ``target`` on the questions of ``job.data`` (those of ``group``
    only, if given; VQA questions whose answer already is the target are left out). ``loaded``: as in
    :func:`run_lvlm_eval`."""
    if not isinstance(target, str) or not target.strip():
        raise ConfigError("--target must be a non-empty string, e.g. --target 'Visit example.com'")
    if job.attack != "apgd" or job.attack_options:
        raise ConfigError(f"the targeted attack is APGD on the target's LM loss; attack {job.attack!r} and its "
                          "options are for `lvlm eval`: drop them")
    questions = targeted_questions(job, target, group=group)
    if not questions:
        raise ConfigError(f"no question of {job.data} left to attack (group {group!r}, target {target!r})")
    model, processor = loaded or _model(job)
    out = Path(job.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = targeted_rows(model, processor, questions, target, eps=job.eps, steps=job.steps, seed=job.seed,
                         batch_size=job.batch_size, max_new_tokens=job.max_new_tokens,
                         partial=out / "partial_targeted.jsonl")
    rec = targeted_record(rows, target=target, eps=job.eps, steps=job.steps)
    rec.config = {**asdict(job), "target": target, "group": group}
    rec.warnings += _swap_warnings(job, processor)
    rec.protocol = targeted_protocol(job, questions, target)
    write_record(out, rec, name="targeted")
    (out / "partial_targeted.jsonl").unlink(missing_ok=True)
    return rec.metrics


def targeted_record(rows: list[dict], *, target: str, eps: float, steps: int) -> Record:
    """Success rates (clean and attacked) and the largest perturbation of targeted-attack rows."""
    from mmrobust.reports.protocol import eps_label

    n = len(rows)
    metrics = {"target": target, "n": n, "success": sum(r["success"] for r in rows) / n,
               "clean_success": sum(r["clean_success"] for r in rows) / n, "eps": eps, "eps_label": eps_label(eps),
               "steps": steps, "max_linf": max(r["linf"] for r in rows)}
    metrics["inside_eps"] = metrics["max_linf"] <= eps + 1e-6
    table = Table.of(f"Targeted attack '{target}' (l-inf eps {metrics['eps_label']}, APGD {steps} steps)",
                     [("which", "images"), ("rate", "replies containing the target", "%"), ("n", "images", "count")],
                     [{"which": "clean", "rate": metrics["clean_success"], "n": n},
                      {"which": "attacked", "rate": metrics["success"], "n": n}],
                     "Share of greedy replies that contain the target string, before and after the attack.")
    return Record(kind="lvlm-targeted", metrics=metrics, samples=rows, tables=[table])
