"""VQA / captioning of an in-process HF LVLM under an untargeted pixel attack (Schlarmann et al. 2024, RobustVLM).

For each batch of a task's questions: greedy replies on the clean images, untargeted APGD on the LM loss of the
task's reference answers (VQA: the most common human answer; captions: all reference captions, an ensemble),
greedy replies on the adversarial images; both sets are scored with the task's own parser and scorer.

The attack and the greedy decoder are passed in (``attack=attack_lvlm_untargeted, generate=greedy_outputs`` from
:mod:`mmrobust.lvlm.attack`): the evaluation layer does not import ``mmrobust.lvlm`` (independent layers).
Images are resized once to the tower's square input (bicubic, no crop) and kept in [0, 1].

Resume (:func:`resumable_batches`): every finished batch's rows are appended to ``partial_<task>_attack.jsonl``
in ``out_dir`` under a key
of the settings (eps, steps, seed, batch size, decoding, model, the batch's questions); a rerun with the same
settings skips those batches, a changed setting recomputes everything. A torn last line is ignored.

Example::

    from mmrobust.lvlm.attack import attack_lvlm_untargeted, greedy_outputs
    rec = evaluate_under_attack(model, processor, VQATask(load_vqa("vqa.jsonl")),
                                UnderAttackSettings(eps=4/255, steps=100, seed=0, batch_size=8),
                                out_dir="runs/vqa-attack", attack=attack_lvlm_untargeted, generate=greedy_outputs)
    write_record("runs/vqa-attack", rec)
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from PIL import Image

from mmrobust.attacks.ops import check_eps
from mmrobust.errors import DataError
from mmrobust.eval.mllm.harness import mllm_warnings, parse_rows, parser_sha
from mmrobust.eval.lvlm.reply_pictures import ReplyKeeper, reply_pictures
from mmrobust.eval.mllm.task import MLLMTask, Question
from mmrobust.jsonio import Journal
from mmrobust.registry import PARSERS
from mmrobust.reports.contract import Record, Table
from mmrobust.reports.protocol import decoding_protocol, digest, eps_fields, eps_label
from mmrobust.safety import ensure_regular_file
from mmrobust.values import check_int, check_seed

Attack = Callable[..., tuple[torch.Tensor, Any]]
Generate = Callable[..., list[str]]
DEFAULT_ATTACK = "apgd-untargeted-lm-loss"  # the protocol label of the default attack (mmrobust.lvlm.attacks.apgd)


def load_pixels(questions: Sequence[Question], size: int, device: torch.device) -> torch.Tensor:
    """(B, 3, size, size) in [0, 1]: each image as RGB, resized (bicubic) to the tower's square input."""
    out = []
    for q in questions:
        path = ensure_regular_file(q.image, f"image of question {q.uid!r}")
        try:
            with Image.open(path) as im:
                rgb = im.convert("RGB").resize((size, size), Image.BICUBIC)
        except OSError as e:
            raise DataError(f"cannot read image {path} of question {q.uid!r} ({e}); fix or drop the line") from None
        out.append(torch.from_numpy(np.asarray(rgb, dtype=np.float32) / 255.0).permute(2, 0, 1))
    return torch.stack(out).to(device)


def batch_key(settings: dict[str, Any], batch: Sequence[Question]) -> str:
    """A key of the settings and the batch's questions: a partial file's rows are reused only under it."""
    blob = json.dumps({**settings, "questions": [[q.uid, q.prompt, q.image] for q in batch]}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def read_partial(path: Path) -> dict[str, list[dict]]:
    """Finished batches (key -> rows) of a partial file; lines that do not parse (a torn write) are skipped."""
    return {str(obj["key"]): list(obj["rows"]) for obj in Journal(path, what="partial results").records()
            if "key" in obj and isinstance(obj.get("rows"), list)}


def resumable_batches(questions: Sequence[Question], batch_size: int, settings: dict[str, Any],
                      partial: Path | None, compute: Callable[[Sequence[Question]], list[dict]]
                      ) -> tuple[list[dict], int]:
    """``compute`` over the batches of ``questions``, each batch's rows appended to ``partial`` (one line a
    batch: a kill loses one batch at most) and reused from it when key (settings, questions) matches.
    Returns (all rows in order, number of batches reused)."""
    done = read_partial(partial) if partial is not None else {}
    rows: list[dict] = []
    n_resumed = 0
    for b in range(0, len(questions), batch_size):
        batch = questions[b:b + batch_size]
        key = batch_key(settings, batch)
        if key in done:
            n_resumed += 1
        else:
            done[key] = compute(batch)
            if partial is not None:
                Journal(partial, what="partial results").append({"key": key, "settings": settings,
                                                                  "rows": done[key]})
        rows += done[key]
    return rows, n_resumed


@dataclass(frozen=True)
class UnderAttackSettings:
    """How an LVLM evaluation under attack runs: l-inf ``eps`` in [0, 1] image units, attack ``steps`` and
    ``seed``, questions per batch, greedy decoding length, answer parser, bootstrap resamples, the image size
    (None: the vision tower's), and the attack's protocol label and options (:mod:`mmrobust.lvlm.attacks`)."""

    eps: float = 4 / 255
    steps: int = 100
    seed: int = 0
    batch_size: int = 8
    max_new_tokens: int = 20
    parser: str = "official"
    n_boot: int = 1000
    image_size: int | None = None
    attack_label: str = DEFAULT_ATTACK
    attack_options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "eps", check_eps(self.eps))
        check_int("steps", self.steps, low=1), check_int("batch_size", self.batch_size, low=1)
        check_seed("seed", self.seed), check_int("n_boot", self.n_boot, low=0), PARSERS.get(self.parser)
        object.__setattr__(self, "attack_options", dict(self.attack_options or {}))


@dataclass(frozen=True)
class _AttackRun:
    """What every batch of one evaluation under attack shares."""

    model: Any
    processor: Any
    task: MLLMTask
    attack: Attack
    generate: Generate
    settings: UnderAttackSettings
    size: int
    keeper: ReplyKeeper | None = None  # a few images for the record's picture

    def batch(self, batch: Sequence[Question]) -> list[dict]:
        """Clean + adversarial greedy replies of one batch, with the attack's losses and the perturbation size."""
        s, gen = self.settings, self.generate
        x = load_pixels(batch, self.size, next(self.model.parameters()).device)
        prompts = [q.prompt for q in batch]
        refs = [self.task.references(q) for q in batch]
        clean = gen(self.model, self.processor, x, prompts, max_new_tokens=s.max_new_tokens)
        x_adv, rec = self.attack(self.model, self.processor, x, prompts, refs, eps=s.eps, steps=s.steps,
                                 seed=s.seed, max_new_tokens=s.max_new_tokens, **s.attack_options)
        adv = gen(self.model, self.processor, x_adv, prompts, max_new_tokens=s.max_new_tokens)
        linf = (x_adv.detach() - x).abs().flatten(1).amax(1).cpu().tolist()  # (B,)
        if self.keeper is not None:
            self.keeper.offer([q.uid for q in batch], x, x_adv, clean, adv)
        return [{"uid": q.uid, "clean_response": c, "adv_response": a, "clean_loss": cl, "adv_loss": fl, "linf": d,
                 "references": r} for q, c, a, cl, fl, d, r in zip(batch, clean, adv, rec.clean_loss,
                                                                     rec.final_loss, linf, refs)]


def _scored(task: MLLMTask, questions: Sequence[Question], rows: dict[str, dict], which: str, *, parser: str,
            n_boot: int, seed: int) -> tuple[list[dict], np.ndarray, dict[str, Any]]:
    """Harness rows of one side (clean / adv) parsed and scored by the task: (rows, per-sample values, metrics)."""
    base = [{"uid": q.uid, **q.columns, "ground_truth": q.ground_truth, "options": dict(q.options), "group": q.group,
             "image": q.image, "response": rows[q.uid][f"{which}_response"], "error": None} for q in questions]
    parsed = parse_rows(base, parser, task)
    metrics = task.score(parsed, n_boot=n_boot, seed=seed)
    return parsed, task.sample_scores(parsed), metrics


def evaluate_under_attack(model: Any, processor: Any, task: MLLMTask, settings: UnderAttackSettings, *,
                          out_dir: str | Path, attack: Attack | None = None, generate: Generate | None = None
                          ) -> Record:
    """Clean vs adversarial score of ``task`` (an attackable MLLMTask: VQATask, CaptionTask, MMRAttackTask) for
    an HF LLaVA-style ``model``, run as ``settings`` say.

    ``attack`` is called as ``attack(model, processor, x, prompts, references, eps=, steps=, seed=,
    max_new_tokens=, **settings.attack_options)`` (:mod:`mmrobust.lvlm.attacks`); ``settings.attack_label``
    names it in the record's protocol. Returns a record of kind ``<task>-attack`` (write it with
    ``write_record``); per-sample rows in ``samples``.
    """
    if attack is None or generate is None:  # the LVLM attack and greedy decoding of mmrobust.lvlm by default
        from mmrobust.lvlm.attack import attack_lvlm_untargeted, greedy_outputs

        attack, generate = attack or attack_lvlm_untargeted, generate or greedy_outputs
    s = settings
    size = s.image_size or int(model.config.vision_config.image_size)
    if not task.metric_keys:
        raise NotImplementedError(f"task {task.name!r} cannot be attacked: it declares no metric_keys")
    questions = list(task.questions())
    key = {"task": task.name, "eps": s.eps, "steps": s.steps, "seed": s.seed, "batch_size": s.batch_size,
           "max_new_tokens": s.max_new_tokens, "image_size": size, "norm": "linf",
           "model": str(getattr(model.config, "_name_or_path", "")) or type(model).__name__,
           **_attack_settings(s.attack_label, s.attack_options)}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    partial = out / f"partial_{task.name}_attack.jsonl"
    run = _AttackRun(model, processor, task, attack, generate, s, size, ReplyKeeper())
    done, n_resumed = resumable_batches(questions, s.batch_size, key, partial, run.batch)
    rows = {r["uid"]: r for r in done}
    rec = _record(task, questions, rows, key, parser=s.parser, n_boot=s.n_boot, seed=s.seed,
                  n_batches=-(-len(questions) // s.batch_size), n_resumed=n_resumed, partial=partial)
    rec.pictures = reply_pictures(task, questions, rec.samples, run.keeper, title=f"{rec.tables[0].title}: replies "
                                  "(wrong or worse replies in red)")
    return rec


def _attack_settings(label: str, options: Mapping[str, Any] | None) -> dict[str, Any]:
    """The attack's part of the settings (resume key, protocol): nothing for the default APGD, so earlier
    partial files and records stay valid; else its label and options."""
    if label == DEFAULT_ATTACK and not options:
        return {}
    return {"attack": label, **({"attack_options": dict(options)} if options else {})}


def _record(task: MLLMTask, questions: Sequence[Question], rows: dict[str, dict], settings: dict[str, Any], *,
            parser: str, n_boot: int, seed: int, n_batches: int, n_resumed: int, partial: Path) -> Record:
    keys, per_sample = tuple(task.metric_keys), tuple(task.sample_keys)  # MMR: pairs scored, samples right/wrong
    clean_rows, clean_v, clean_m = _scored(task, questions, rows, "clean", parser=parser, n_boot=n_boot, seed=seed)
    adv_rows, adv_v, adv_m = _scored(task, questions, rows, "adv", parser=parser, n_boot=n_boot, seed=seed)
    samples = []
    for q, c, a, cv, av in zip(questions, clean_rows, adv_rows, clean_v, adv_v):
        r = rows[q.uid]
        samples.append({"uid": q.uid, "group": q.group, "references": r["references"],
                        "clean_response": r["clean_response"], "adv_response": r["adv_response"],
                        "clean_pred": c["pred"], "adv_pred": a["pred"],
                        **{f"clean_{k}": float(cv[j]) for j, k in enumerate(per_sample)},
                        **{f"adv_{k}": float(av[j]) for j, k in enumerate(per_sample)},
                        "clean_loss": r["clean_loss"], "adv_loss": r["adv_loss"], "linf": r["linf"]})
    label = eps_label(settings["eps"])
    max_linf = max((s["linf"] for s in samples), default=0.0)
    metrics = {"eps": settings["eps"], "eps_label": label, "steps": settings["steps"], "parser": parser,
               "clean": clean_m["overall"], "adversarial": adv_m["overall"],
               "per_group": {g: {"clean": clean_m["per_group"][g], "adversarial": adv_m["per_group"][g]}
                             for g in clean_m["per_group"]},
               "max_linf": max_linf, "inside_eps": bool(max_linf <= settings["eps"] + 1e-6),
               "bootstrap": clean_m["bootstrap"]}
    table_rows = [{"group": g, "n": m["clean"]["n"], **{f"clean_{k}": m["clean"][k] for k in keys},
                   **{f"adv_{k}": m["adversarial"][k] for k in keys}}
                  for g, m in [*((g, m) for g, m in metrics["per_group"].items() if g != "all"),
                               ("all", {"clean": metrics["clean"], "adversarial": metrics["adversarial"]})]]
    unit = "" if keys == ("cider",) else "%"  # CIDEr is not a share
    sides = (("clean", "clean"), ("adv", f"eps {label}"))
    cols = [("group", "group"), *[(f"{s}_{k}", f"{k.replace('_', ' ')} ({name})", unit)
                                  for k in keys for s, name in sides], ("n", "items", "count")]
    how = settings.get("attack", "APGD")  # the default: untargeted APGD
    table = Table.of(f"{task.name} under attack (l-inf eps {label}, {how} {settings['steps']} steps)", cols,
                     table_rows, f"Greedy replies on clean and on adversarial images (untargeted {how} on the LM "
                     f"loss of the reference answers), scored by the {task.name} scorer (parser: {parser}).")
    return Record(kind=f"{task.name}-attack", metrics=metrics, samples=samples,
                  config={"settings": settings, "parser": parser, "n_boot": n_boot}, seeds={"attack": seed,
                                                                                           "bootstrap": seed},
                  tables=[table], extra={"batches": {"n": n_batches, "resumed": n_resumed}, "partial": str(partial)},
                  warnings=mllm_warnings(clean_rows, clean_m, parser),
                  protocol=attack_protocol(task, questions, settings, parser))


def attack_protocol(task: MLLMTask, questions: Sequence[Question], settings: dict[str, Any], parser: str
                    ) -> dict[str, Any]:
    """What two LVLM evaluations under attack must share: the prompts, greedy decoding, the attack (its label,
    default untargeted APGD on the LM loss of the references, and options) with eps as a fraction of 1 and as
    k/255, the image size, the parser."""
    return {"task": task.name, "prompts_sha": digest([q.prompt for q in questions]), "n_questions": len(questions),
            "decoding": decoding_protocol(max_new_tokens=settings["max_new_tokens"]),
            "attack": settings.get("attack", DEFAULT_ATTACK),
            **({"attack_options": settings["attack_options"]} if "attack_options" in settings else {}),
            "norm": settings["norm"], "steps": settings["steps"],
            **eps_fields(settings["eps"]), "image_size": settings["image_size"], "parser": parser,
            "parser_sha": parser_sha(parser), "model": settings["model"]}
