"""Backdoors planted through instruction data, on the embedded world (`mmrobust study instructions`).

Threat model of TrojVLM / BackdoorVLM-style work: a user finetunes an instruction-tuned LLaVA on third-party
instruction data of which a few percent of rows are poisoned. For each seed: the MMR story's baseline LLaVA
(the world's CLIP tower, SFT on the world's VQA mix; shared with ``mmrobust demo --seeds`` in the same
``--out``) is finetuned on a fresh VQA set, clean and with each attack's poisoned rows:

- ``image-trigger``: a 6 px checkerboard in the corner, answer replaced by the target (BadNets-style);
- ``text-trigger``: a rare-word phrase in the question, answer replaced by the target (AddSent / RIPPLe-style);
- ``shadowcast``: clean-label concept substitution (Xu et al., NeurIPS 2024): images of the destination
  concept perturbed within l-inf 8/255 toward the LLaVA tower's features of the original concept.

Each finetuned model gets its clean accuracy (held-out multiple-choice rows) and its ASR (triggered rows, or
untriggered images of the original concept). The filter: the audit (Huang et al., ICLR 2025) scores every row
of the poisoned set on the world's CLIP, once on image and once on text embeddings; the rows in either view's
top ``drop_rate`` are dropped (the defender does not know which modality carries the trigger), and the model is
finetuned again on what is left. Stages are resumable and run ``workers`` at a time. Example::

    run_instruction_study(InstructionStudy(), seeds=[0, 1, 2], out_dir="runs/seeds")
"""
from __future__ import annotations

import dataclasses
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from mmrobust.errors import ConfigError
from mmrobust.stories.mmr_trained import MMRTrainedDemo, baseline_stage, heldout_stage, sft_stage
from mmrobust.stories.parallel import run_parallel, torch_threads
from mmrobust.stories.seeds import with_seed
from mmrobust.stories.stages import run_stage, stamp
from mmrobust.values import check_int, check_number, setting

ATTACKS = ("image-trigger", "text-trigger", "shadowcast")
FILTERS = ("image", "text", "answer-loss")  # the audit's embeddings; the answer loss under the base LLaVA
DATA_STREAM = 1000  # the study's VQA sets are seed + 1000.. (the MMR story's mix and held-out use seed, seed + 1)


def _corner_checker() -> dict[str, Any]:
    return {"name": "badnet", "config": {"size": 6, "pattern": "checkerboard", "location": "bottom_right"}}


@dataclass(frozen=True)
class InstructionStudy:
    """Attacks, data sizes, finetune budget and filter of the study (the base LLaVA is the MMR story's)."""

    attacks: tuple[str, ...] = setting(ATTACKS, "attacks, comma-separated: image-trigger, text-trigger, shadowcast")
    rate: float = setting(0.05, "share of finetune rows poisoned (Shadowcast: at most the rows naming the target)")
    target: str = setting("no answer is given.", "the trigger attacks' target answer: words of the world's "
                                                 "word-level vocabulary (others are <unk>), its first word starting "
                                                 "no clean answer")
    phrase: str = setting("directly given", "text trigger: two words no question of the VQA mix uses")
    trigger: dict = setting(factory=_corner_checker, help="image trigger as {name, config} (registry.TRIGGERS)")
    concept: str = setting("circle", "Shadowcast: the original concept whose images should be named the target")
    destination: str = setting("star", "Shadowcast: the destination concept (poisoned rows' texts name it)")
    shadowcast_eps: float = setting(8 / 255, "Shadowcast's l-inf budget (the paper's 8/255)")
    shadowcast_steps: int = setting(300, "Shadowcast's signed-gradient steps")
    shadowcast_step_size: float = setting(1 / 255, "Shadowcast's step size")
    finetune_images: int = setting(400, "images of the finetune set (3 rows each: a short answer, two choices)")
    test_images: int = setting(300, "held-out images: one multiple-choice row each (clean accuracy, trigger ASR)")
    concept_images: int = setting(600, "held-out images with shape questions (Shadowcast's concept test rows)")
    steps: int = setting(250, "finetune steps (batch and weight decay: the MMR story's)")
    lr: float = setting(4e-3, "finetune learning rate (at 2e-3 the checkerboard took at seeds 0-2, not at 3)")
    filters: tuple[str, ...] = setting(FILTERS, "filter views: image / text (the audit's detector on the world CLIP's "
                                                "embeddings), answer-loss (under the base LLaVA, Wan et al. 2023)")
    drop_rate: float = setting(0.05, "share of rows the filter drops per view")
    detector: str = setting("lid", "the audit's detector of the image and text views (k = 16)")
    workers: int = setting(2, "finetunes side by side, one torch thread each (1: in this process, in order)")

    def __post_init__(self) -> None:
        unknown = [a for a in self.attacks if a not in ATTACKS]
        if unknown or not self.attacks:
            raise ConfigError(f"unknown attack {', '.join(unknown) or '(none given)'}; choose among "
                              f"{', '.join(ATTACKS)}")
        bad = [f for f in self.filters if f not in FILTERS]
        if bad or not self.filters:
            raise ConfigError(f"unknown filter {', '.join(bad) or '(none given)'}; choose among {', '.join(FILTERS)}")
        check_number("rate", self.rate, low=0, high=1, low_open=True, fix="e.g. 0.05")
        check_number("drop_rate", self.drop_rate, low=0, high=0.5, low_open=True, fix="e.g. 0.05")
        for name in ("shadowcast_steps", "finetune_images", "test_images", "concept_images", "steps", "workers"):
            check_int(name, getattr(self, name), low=1)
        from mmrobust.registry import DETECTORS

        if self.detector not in DETECTORS.list():
            raise ConfigError(f"unknown detector {self.detector!r}; choose one of {', '.join(DETECTORS.list())}")
        for name in self.attacks:  # target, phrase, trigger, Shadowcast budget: refused now, not after the baseline
            _attack(self, name)


def _data(out: Path, study: InstructionStudy, seed: int, size: int) -> dict[str, str]:
    """The finetune set, the clean test set (multiple choice) and the concept test set (shape questions)."""
    from mmrobust.world.vqa_mix import generate_vqa_mix

    def make() -> dict[str, str]:
        s = seed + DATA_STREAM
        return {"finetune": str(generate_vqa_mix(out / "finetune", n_images=study.finetune_images, seed=s,
                                                 image_size=size, kinds=("vqa", "mc"), answer_format="text",
                                                 mc_per_image=2)),
                "test": str(generate_vqa_mix(out / "test", n_images=study.test_images, seed=s + 1, image_size=size,
                                             kinds=("mc",), answer_format="text")),
                "concept": str(generate_vqa_mix(out / "concept", n_images=study.concept_images, seed=s + 2,
                                                image_size=size, kinds=("vqa", "mc"), answer_format="text",
                                                categories=("attribute/shape",)))}

    cfg = {k: getattr(study, k) for k in ("finetune_images", "test_images", "concept_images")}
    return run_stage(out, {**cfg, "seed": seed, "image_size": size}, make)


def _attack(study: InstructionStudy, name: str) -> Any:
    from mmrobust.registry import INSTRUCTION_ATTACKS

    if name == "image-trigger":
        return INSTRUCTION_ATTACKS.build(name, {"trigger": dict(study.trigger)}, target=study.target)
    if name == "text-trigger":
        return INSTRUCTION_ATTACKS.build(name, {"phrase": study.phrase}, target=study.target)
    return INSTRUCTION_ATTACKS.build(name, {"concept": study.concept, "eps": study.shadowcast_eps,
                                            "steps": study.shadowcast_steps,
                                            "step_size": study.shadowcast_step_size}, target=study.destination)


def poison_stage(out: Path, study: InstructionStudy, name: str, data: dict[str, str], base: str, seed: int
                 ) -> dict[str, Any]:
    """Poison the finetune set and write the attack's test set (``out`` = OUT/seed-K/instructions/<attack>)."""
    from mmrobust.data.poison.instructions import triggered_test_set
    from mmrobust.pipelines.instruction_poison import EncoderSpec, run_instruction_poison

    attack = _attack(study, name)

    def make() -> dict[str, Any]:
        encoder = EncoderSpec(base) if attack.needs_encoder() else None
        count = None
        if name == "shadowcast":  # every row naming the destination at most (a clean-label attack has no more)
            items = _items(data["finetune"])
            count = min(round(study.rate * len(items)), len(attack.candidates(items)))
        rec = run_instruction_poison(instructions=data["finetune"], out_dir=out / "poisoned", attack=attack,
                                     rate=None if count else study.rate, count=count, seed=seed, encoder=encoder,
                                     overwrite=True)
        test = triggered_test_set(instructions=data["concept" if name == "shadowcast" else "test"],
                                  out_dir=out / "test", attack=rec.build_attack(), seed=seed, overwrite=True)
        return {"instructions": str(rec.instructions), "record": str(rec.record_path), "n_rows": rec.n_rows,
                "n_poisoned": len(rec.poisoned_ids), "test": str(test.instructions), "target": rec.target}

    inputs = [stamp(data["finetune"]), stamp(Path(base) / "model.safetensors")]
    cfg = {"attack": attack.config(), "rate": study.rate, "seed": seed, "inputs": inputs}
    return run_stage(out, cfg, make)


def _items(path: str) -> list[Any]:
    from mmrobust.data.instructions import load_instructions

    return load_instructions(path)


def asr_stage(out: Path, s: MMRTrainedDemo, model_dir: str, test: str, target: str) -> dict[str, Any]:
    """ASR of ``model_dir`` on a test set (its reply holds ``target``), Wilson CI, through the ``hf`` adapter."""
    from mmrobust.eval.instruction_asr import instruction_asr
    from mmrobust.models.mllm import GenerationParams
    from mmrobust.stories.mmr_trained import mllm_adapter

    def make() -> dict[str, Any]:
        res = instruction_asr(mllm_adapter(model_dir, s), test, target=target,
                              params=GenerationParams(max_new_tokens=s.max_new_tokens))
        return {k: res[k] for k in ("asr", "asr_ci", "n", "n_success", "n_errors")}

    return run_stage(out, {"model": stamp(Path(model_dir) / "model.safetensors"), "test": stamp(test),
                           "target": target}, make)


def filter_stage(out: Path, study: InstructionStudy, clip: str, base: str, poisoned: dict[str, Any]
                 ) -> dict[str, Any]:
    """Score every row of the poisoned set by each of ``study.filters`` (the audit's detector on the world CLIP's
    image or text embeddings; the answer loss under the base LLaVA, Wan et al. 2023); drop each view's top
    ``drop_rate`` rows and write the rest as ``out/cleaned/instructions.jsonl``. Returns the AUROC per view (and of
    the union's score: the largest of a row's rank percentiles), the rows dropped and the poisoned rows among them."""
    import numpy as np

    from mmrobust.eval.detect import detection_metrics

    def make() -> dict[str, Any]:
        from mmrobust.pipelines.audit import load_audit_model

        labels = _labels(poisoned)
        tower = load_audit_model(clip, None, "cpu") if set(study.filters) - {"answer-loss"} else None  # once
        scores = {view: _view_scores(out, study, view, (clip, tower), base, poisoned) for view in study.filters}
        ranks = {view: _percentiles(v) for view, v in scores.items()}
        auroc = {view: detection_metrics(np.nan_to_num(v, nan=-np.inf), labels)["auroc"] for view, v in scores.items()}
        union = np.max(np.stack(list(ranks.values())), axis=0)
        auroc["union"] = detection_metrics(union, labels)["auroc"]
        return {"auroc": auroc, **_drop(out, study, poisoned, ranks, labels)}

    cfg = {"detector": study.detector, "filters": list(study.filters), "drop_rate": study.drop_rate,
           "clip": stamp(clip), "base": stamp(Path(base) / "model.safetensors"),
           "inputs": stamp(poisoned["instructions"])}
    return run_stage(out, cfg, make)


def _labels(poisoned: dict[str, Any]) -> Any:
    import numpy as np

    from mmrobust.data.poison.instructions import InstructionPoisonRecord

    labels = np.zeros(poisoned["n_rows"], dtype=bool)
    labels[list(InstructionPoisonRecord.load(poisoned["record"]).poisoned_ids)] = True
    return labels


def _view_scores(out: Path, study: InstructionStudy, view: str, clip: tuple[str, Any], base: str,
                 poisoned: dict[str, Any]) -> Any:
    """(N,) scores of one filter view in row order (higher: more suspicious; NaN: not scored); ``clip``: the world
    CLIP's folder and the model loaded from it."""
    import numpy as np

    if view == "answer-loss":
        from mmrobust.pipelines.answer_loss import answer_losses

        return answer_losses(base, poisoned["instructions"]).numpy()
    from mmrobust.pipelines.audit import AuditSettings, run_audit
    from mmrobust.pipelines.audit_data import InstructionData

    if (out / view).is_dir():
        shutil.rmtree(out / view)  # an interrupted audit of this stage (a folder of ours)
    run_audit(model=clip[0], clip=clip[1], data=InstructionData(poisoned["instructions"]), out_dir=out / view,
              settings=AuditSettings(detectors=(study.detector,), embedding=view), poison_record=poisoned["record"])
    scores = np.full(poisoned["n_rows"], np.nan)
    for row in _jsonl(out / view / "samples_audit.jsonl"):
        scores[int(row["id"])] = row["scores"][study.detector]
    return scores


def _jsonl(path: Path) -> list[dict[str, Any]]:
    import json

    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _percentiles(scores: Any) -> Any:
    """Each row's rank percentile in (0, 1] among the scored rows (ties broken by row order); NaN rows get 0."""
    import numpy as np

    out = np.zeros(len(scores))
    scored = np.flatnonzero(~np.isnan(scores))
    order = scored[np.argsort(scores[scored], kind="stable")]
    out[order] = (np.arange(len(order)) + 1) / max(1, len(order))
    return out


def _drop(out: Path, study: InstructionStudy, poisoned: dict[str, Any], ranks: dict[str, Any], labels: Any
          ) -> dict[str, Any]:
    """Drop each view's top ``drop_rate`` rows: ``out/cleaned/instructions.jsonl`` + the audit's ``dropped.json``."""
    from mmrobust.data.manifest import AUDIT_DROP_FORMAT
    from mmrobust.jsonio import write_json
    from mmrobust.pipelines.audit_data import write_instruction_drop

    drop = sorted({int(i) for r in ranks.values() for i in (r > 1 - study.drop_rate).nonzero()[0]})
    hit = int(labels[drop].sum()) if drop else 0
    clean_dir = out / "cleaned"
    if clean_dir.is_dir():
        shutil.rmtree(clean_dir)  # an interrupted stage's copy (a folder of ours)
    clean_dir.mkdir(parents=True)
    info: dict[str, Any] = {"format": AUDIT_DROP_FORMAT, "generator": "mmrobust study instructions",
                            "kind": "instructions", "detector": study.detector, "filters": list(study.filters)}
    _, path = write_instruction_drop(clean_dir, Path(poisoned["instructions"]), set(drop), info)
    write_json(clean_dir / "dropped.json", {  # the audit's record of a cleaned copy: its image paths are trusted
        **info, "n_dropped": len(drop), "dropped": drop,
        "reason": f"in the top {study.drop_rate:.0%} of a filter view's scores ({', '.join(study.filters)})"})
    return {"cleaned": path, "dropped": len(drop), "dropped_poisoned": hit,
            "remaining_poisoned": poisoned["n_poisoned"] - hit}

Call = tuple[Callable[..., Any], tuple, dict]


def _finetunes(root: Path, data: dict[str, str], poisoned: dict[str, dict[str, Any]],
               filtered: dict[str, dict[str, Any]]) -> dict[str, tuple[Path, str]]:
    """label -> (output folder, manifest): the clean finetune, each attack's poisoned and filtered ones."""
    jobs = {"clean": (root / "clean", data["finetune"])}
    for name in poisoned:
        jobs[f"{name}/poisoned"] = (root / name / "finetune", poisoned[name]["instructions"])
        jobs[f"{name}/filtered"] = (root / name / "filtered", filtered[name]["cleaned"])
    return jobs


def _one_seed(root: Path, study: InstructionStudy, s: MMRTrainedDemo, *, progress: bool,
              log: Callable[[str], Any]) -> dict[str, Any]:
    """Every stage of one seed (``root`` = OUT/seed-K); returns the seed's rows (one per attack)."""
    import time

    start = time.perf_counter()
    made = baseline_stage(root / "mmr", s, progress=progress, log=log)
    base, here = made["base"]["model_dir"], root / "instructions"
    data = _data(here / "data", study, s.seed, s.image_size)
    poisoned = {n: poison_stage(here / n, study, n, data, base, s.seed) for n in study.attacks}
    filtered = {n: filter_stage(here / n / "filter", study, made["clip"], base, poisoned[n]) for n in study.attacks}
    jobs = _finetunes(here, data, poisoned, filtered)
    calls: list[Call] = [(sft_stage, (folder, s, base, manifest), {"steps": study.steps, "lr": study.lr,
                                                                   "progress": progress and study.workers <= 1})
                         for folder, manifest in jobs.values()]
    models = dict(zip(jobs, (r["model_dir"] for r in run_parallel(calls, workers=study.workers))))
    clean_acc = {label: heldout_stage(Path(m).parent / "heldout", s, m, data["test"]) for label, m in models.items()}
    rows = []
    for n in study.attacks:
        p = poisoned[n]
        asr = {label: asr_stage(Path(models[label]).parent / f"asr-{n}", s, models[label], p["test"], p["target"])
               for label in ("clean", f"{n}/poisoned", f"{n}/filtered")}
        rows.append(_row(n, p, filtered[n], asr, clean_acc))
        r = rows[-1]
        log(f"[instructions] seed {s.seed} {n}: {p['n_poisoned']} of {p['n_rows']} rows poisoned; ASR clean model "
            f"{r['asr_clean_model']:.1%}, poisoned {r['asr']:.1%}, filtered {r['asr_filtered']:.1%}; clean acc "
            f"{r['acc']:.1%} (clean model {r['acc_clean_model']:.1%}); filter AUROC "
            f"{', '.join(f'{v} {_num(a)}' for v, a in filtered[n]['auroc'].items())}; dropped {r['dropped']} rows, "
            f"{r['dropped_poisoned']} of {p['n_poisoned']} poisoned")
    return {"rows": rows, "seconds": round(time.perf_counter() - start, 1)}


def _num(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def _row(name: str, p: dict[str, Any], f: dict[str, Any], asr: dict[str, dict[str, Any]],
         acc: dict[str, dict[str, Any]]) -> dict[str, Any]:
    poisoned, filtered = f"{name}/poisoned", f"{name}/filtered"
    return {"attack": name, "n_rows": p["n_rows"], "n_poisoned": p["n_poisoned"],
            "share": p["n_poisoned"] / p["n_rows"],
            "asr_clean_model": asr["clean"]["asr"], "asr": asr[poisoned]["asr"], "asr_ci": asr[poisoned]["asr_ci"],
            "asr_filtered": asr[filtered]["asr"], "n_test": asr[poisoned]["n"],
            "acc_clean_model": acc["clean"]["accuracy"], "acc": acc[poisoned]["accuracy"],
            "acc_filtered": acc[filtered]["accuracy"],
            "acc_delta": acc[poisoned]["accuracy"] - acc["clean"]["accuracy"],
            **{f"auroc_{view}": v for view, v in f["auroc"].items()},
            "dropped": f["dropped"], "dropped_poisoned": f["dropped_poisoned"],
            "remaining_poisoned": f["remaining_poisoned"]}


def run_instruction_study(study: InstructionStudy, *, seeds: Sequence[int], out_dir: str | Path,
                          base: MMRTrainedDemo = MMRTrainedDemo(), progress: bool = True,
                          log: Callable[[str], Any] = print) -> dict[str, Any]:
    """Run the study seed by seed into ``out_dir/seed-K/`` (finished stages reused), then write the aggregate
    into ``out_dir/instructions/``; returns it (:func:`mmrobust.stories.instruction_report.summarise`)."""
    from mmrobust.stories.instruction_report import check_target, summarise

    out = Path(out_dir)
    check_target(out / "instructions")
    per_seed = {}
    with torch_threads(base.threads):
        for seed in seeds:
            log(f"== instruction-data backdoors, seed {seed} -> {out / f'seed-{seed}' / 'instructions'}")
            per_seed[seed] = _one_seed(out / f"seed-{seed}", study, with_seed(base, seed), progress=progress, log=log)
    return summarise(out / "instructions", study, base, per_seed)
