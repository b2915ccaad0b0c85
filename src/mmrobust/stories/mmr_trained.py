"""The MMR story with a trained tiny LLaVA (Liu et al. 2024, "Seeing Clearly, Answering Incorrectly"):

world -> the world's CLIP image tower (the adversarial story's clean CLIP, converted exactly into a
CLIPVisionModel and frozen) -> tiny LLaVA -> baseline SFT of projector + Llama on what web data
teaches (short-answer VQA and multiple-choice questions, all premises true) -> held-out
accuracy -> two finetunes of the same length from the baseline: the MMR-tuned twin (paired data,
straightforward + leading twins with false premises) and a control (the straightforward rows
only) -> MMR on the offline MMR world (never the training questions) for all three through the
real ``hf`` adapter -> RA / MR / POS accuracy with CIs -> table, chart, record.

Every stage is resumable (:func:`mmrobust.stories.stages.run_stage`); same seed, same numbers.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

from mmrobust.stories.parallel import torch_threads
from mmrobust.stories.stages import quiet_hf_progress, run_stage, stamp, train_stage
from mmrobust.reports.contract import Record, Table, write_record
from mmrobust.reports.spread import Claim, pick, wilson
from mmrobust.reports.tables import format_table

MODELS = ("baseline", "control", "MMR-tuned")
# The tiny LLaVA answers a multiple-choice question with the right option's text, and the lenient parser maps
# that text to its letter: choosing a letter means finding the option line that holds the answer in the prompt
# (an induction circuit), which a 3-layer Llama trained from scratch learns only after some 3,000 steps,
# beyond this story's budget. The paired POS/NEG scoring is MMR's; only the answer form differs.
PROMPT, PARSER = "option-text", "lenient"


def _model(label: str, key: str) -> Any:
    return lambda m: pick(m["models"], "model", label)[key] or 0.0


# the story's headline effects, checked at every seed by `mmrobust demo --seeds` (reports.spread)
CLAIMS = (
    Claim("baseline-misled", "the baseline's MR", _model("baseline", "MR"), at_least=0.8),
    Claim("control-misled", "the control's MR (more steps, no leading questions)", _model("control", "MR"),
          at_least=0.8),
    Claim("tuned-not-misled", "the MMR-tuned model's MR", _model("MMR-tuned", "MR"), at_most=0.25),
    Claim("tuned-keeps-pos", "the MMR-tuned model's POS accuracy minus the baseline's",
          lambda m: _model("MMR-tuned", "POS")(m) - _model("baseline", "POS")(m), at_least=-0.05),
)


@dataclass(frozen=True)
class MMRTrainedDemo:
    """Settings of the story (32 px images, a ~1M-parameter LLaVA, minutes on 2 CPU cores)."""

    mix_images: int = 2500  # baseline mix: one row per kind per image (+ extra multiple-choice rows)
    mix_kinds: tuple[str, ...] = ("vqa", "mc", "mc-premise")  # vqa_mix.KINDS
    mix_answer_format: str = "text"  # multiple-choice answers: the right option's text (see PROMPT, PARSER)
    mix_mc_per_image: int = 2  # straightforward multiple-choice rows per image (each another category)
    mix_vqa_per_image: int = 1  # short-answer rows per image (each another category)
    vision_feature_layer: int = -2  # the tower layer the projector reads (LLaVA-1.5's penultimate)
    vision_feature_select: str = "full"  # keep the class token (LLaVA-1.5 drops it: "default"); see the README
    letter_bias: float = 0.0  # build_tiny_llava's A-D prior of the random model (no letters to emit here)
    heldout_images: int = 200  # fresh images for the held-out straightforward accuracy
    pair_images: int = 800  # MMR training set: one straightforward row per image, a leading twin for a share
    leading_share: float = 1.0  # MMR's training set pairs every straightforward question
    mmr_pairs_per_category: int = 25  # MMR world: 4 categories x this many POS/NEG pairs
    image_size: int = 32
    hidden_size: int = 128  # Llama width
    num_layers: int = 3  # Llama layers
    base_steps: int = 600
    base_lr: float = 4e-3
    tune_steps: int = 300  # the twin's and the control's extra steps (the same for both)
    tune_lr: float = 2e-3
    batch: int = 64
    weight_decay: float = 0.1  # AdamW (no decay on norms and biases): held-out 87.5% with it, 81% without
    max_new_tokens: int = 16  # the longest option text ("There is no square; the picture shows ...")
    eval_batch: int = 50
    n_boot: int = 1000
    clip_model: str = ""  # a trained CLIP folder; "" = the adversarial story's clean CLIP (trained if absent)
    clip_steps: int = 0  # > 0: train a CLIP of this many steps under this story instead (tests)
    clip_world_images: int = 2000  # its world's size, with clip_steps > 0
    world_seed: int = 0  # the CLIP's world (the adversarial story's, with the same seeds)
    seed: int = 0
    threads: int = 2


def run_mmr_trained_demo(out_dir: str | Path, settings: MMRTrainedDemo = MMRTrainedDemo(), *,
                         progress: bool = True, log: Any = print) -> dict[str, Any]:
    """Run the whole story into ``out_dir``; returns {"table", "plot", "rows", "record"}."""
    with quiet_hf_progress(not progress), torch_threads(settings.threads):
        return _run(Path(out_dir), settings, progress, log)


class _Clock:
    """Seconds per stage, in the order they ran (a reused stage takes ~0 s)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def __call__(self, name: str, fn: Callable[[], Any]) -> Any:
        start = time.perf_counter()
        out = fn()
        self.seconds[name] = round(time.perf_counter() - start, 1)
        return out


def baseline_stage(out: Path, s: MMRTrainedDemo, *, progress: bool, log: Any = print,
                   clock: Callable[[str, Callable[[], Any]], Any] | None = None) -> dict[str, Any]:
    """The story's data, CLIP, tiny LLaVA and baseline SFT in ``out`` (each stage resumable): returns
    ``{"data", "clip", "init", "base"}``; ``base["model_dir"]`` is the baseline LLaVA other studies start from."""
    clock = clock or (lambda name, fn: fn())
    data = clock("data", lambda: _data(out, s))
    clip = clock("clip", lambda: _clip(out, s, progress))
    init = clock("llava", lambda: _llava(out, s, clip, data))
    log(f"[mmr-trained] tiny LLaVA with the world's CLIP tower: {init['n_params']:,} parameters")
    base = clock("train baseline", lambda: sft_stage(out / "baseline", s, init["model_dir"], data["mix"],
                                                      steps=s.base_steps, lr=s.base_lr, progress=progress))
    return {"data": data, "clip": clip, "init": init, "base": base}


def _run(out: Path, s: MMRTrainedDemo, progress: bool, log: Any) -> dict[str, Any]:
    clock = _Clock()
    made = baseline_stage(out, s, progress=progress, log=log, clock=clock)
    data, init, base = made["data"], made["init"], made["base"]
    tuned = {"baseline": base}
    for label, folder, key in (("control", "control", "control"), ("MMR-tuned", "mmr-tuned", "paired")):
        tuned[label] = clock(f"train {label}", lambda: sft_stage(out / folder, s, base["model_dir"], data[key],
                                                                 steps=s.tune_steps, lr=s.tune_lr, progress=progress))
    rows = []
    for label in MODELS:
        model_dir = tuned[label]["model_dir"]
        held = clock(f"held-out {label}", lambda: heldout_stage(Path(model_dir).parent / "heldout", s, model_dir,
                                                           data["heldout"]))
        mmr = clock(f"MMR {label}", lambda: _mmr(Path(model_dir).parent / "mmr", s, model_dir, data["world"]))
        rows.append(_row(label, tuned[label], held, mmr))
        log(f"[mmr-trained] {label}: held-out {held['accuracy']:.1%}, RA {rows[-1]['RA']:.1%}, "
            f"MR {_pct(rows[-1]['MR'])}, POS acc {rows[-1]['POS']:.1%}")
    return _summarise(out, s, rows, init, clock.seconds, log)


def _data(out: Path, s: MMRTrainedDemo) -> dict[str, str]:
    """The four data sets: baseline mix, held-out mix, paired + control MMR training sets, the MMR world."""
    from mmrobust.world.mmr import generate_mmr_world
    from mmrobust.world.mmr_train import generate_mmr_training_set
    from mmrobust.world.vqa_mix import generate_vqa_mix

    size = s.image_size

    def make() -> dict[str, str]:
        paired = generate_mmr_training_set(out / "data" / "paired", n_images=s.pair_images, seed=s.seed,
                                           image_size=size, leading_share=s.leading_share, answer_format="text")
        control = generate_mmr_training_set(out / "data" / "control", n_images=s.pair_images, seed=s.seed,
                                            image_size=size, leading_share=0.0, answer_format="text")
        return {
            "mix": str(generate_vqa_mix(out / "data" / "mix", n_images=s.mix_images, seed=s.seed, image_size=size,
                                        kinds=tuple(s.mix_kinds), answer_format=s.mix_answer_format,
                                        mc_per_image=s.mix_mc_per_image, vqa_per_image=s.mix_vqa_per_image)),
            # another seed of the mix's stream: fresh scenes, never trained on
            "heldout": str(generate_vqa_mix(out / "data" / "heldout", n_images=s.heldout_images, seed=s.seed + 1,
                                            image_size=size, kinds=("mc",), answer_format=s.mix_answer_format)),
            "paired": str(_with_instruction(paired)), "control": str(_with_instruction(control)),
            "world": str(generate_mmr_world(out / "data" / "mmr-world", pairs_per_category=s.mmr_pairs_per_category,
                                            seed=s.seed, image_size=size)),
        }

    cfg = {k: getattr(s, k) for k in ("mix_images", "mix_kinds", "mix_answer_format", "mix_mc_per_image",
                                      "mix_vqa_per_image", "heldout_images", "pair_images", "leading_share",
                                      "mmr_pairs_per_category", "image_size", "seed")}
    return run_stage(out / "data", cfg, make)


def _with_instruction(path: Path) -> Path:
    """``train.jsonl`` of the MMR training set with the instruction of the ``option-text`` prompt after each
    question (as the mix and the benchmark prompt have it), written beside it as ``train_prompted.jsonl``."""
    from mmrobust.data.instructions import load_instructions, to_record, write_instructions
    from mmrobust.eval.mmr.prompts import TEXT_SUFFIX

    rows = []
    for item in load_instructions(path):
        rec = to_record(item)
        rec["question"] = rec["question"] + TEXT_SUFFIX
        rows.append(rec)
    return write_instructions(path.parent / "train_prompted.jsonl", rows)


def _clip(out: Path, s: MMRTrainedDemo, progress: bool) -> str:
    """The world's clean CLIP: ``clip_model``, else the adversarial story's (same world, same settings,
    so either story reuses the other's), else, with ``clip_steps``, a small one trained here."""
    from mmrobust.stories.adversarial import AdversarialDemo
    from mmrobust.world.shapes import generate_world

    if s.clip_model:
        return s.clip_model
    if s.clip_steps:
        a = AdversarialDemo(n_train=s.clip_world_images, n_test=100, pretrain_steps=s.clip_steps, seed=s.seed)
        world, clip_out = out / "clip-world", out / "clip"
    else:
        a = AdversarialDemo(world_seed=s.world_seed, seed=s.seed)
        world, clip_out = out.parent / "world", out.parent / "adversarial" / "clip"
    run_stage(world, {"n_train": a.n_train, "n_test": a.n_test, "seed": a.world_seed},
              lambda: {"root": str(generate_world(world, n_train=a.n_train, n_test=a.n_test, seed=a.world_seed).root)})
    return train_stage(clip_out, task="clip", model=a.model, manifest=world / "train.csv", classes=world / "classes.json",
                       steps=a.pretrain_steps, batch=a.pretrain_batch, lr=a.pretrain_lr, weight_decay=0.1, seed=a.seed,
                       opts={}, progress=progress)


def _llava(out: Path, s: MMRTrainedDemo, clip: str, data: dict[str, str]) -> dict[str, Any]:
    """A tiny LLaVA whose vision tower is ``clip``'s image tower (exact conversion, normalization included)."""
    from mmrobust.data.instructions import load_instructions
    from mmrobust.eval.mmr import load_mmr
    from mmrobust.lvlm.swap import swap_and_save
    from mmrobust.models.clip import create_clip
    from mmrobust.world.llava import build_tiny_llava

    def make() -> dict[str, Any]:
        tower = create_clip(clip).visual  # the tower's shape decides the LLaVA's vision config
        width, layers = tower.transformer.width, tower.transformer.layers
        heads = tower.transformer.resblocks[0].attn.num_heads
        mlp = tower.transformer.resblocks[0].mlp.c_fc.out_features
        patch = tower.conv1.kernel_size[0]
        texts = [t for key in ("mix", "heldout", "paired") for i in load_instructions(data[key])
                 for t in (i.question, i.answer)] + [i.question for i in load_mmr(data["world"]).items]
        raw = build_tiny_llava(out / "llava" / "raw", seed=s.seed, image_size=s.image_size, patch_size=patch,
                               hidden_size=s.hidden_size, num_layers=s.num_layers, extra_words=texts,
                               letter_bias=s.letter_bias,
                               vision_hidden_size=width, vision_layers=layers, vision_heads=heads,
                               vision_intermediate_size=mlp, vision_act="gelu",
                               vision_feature_layer=s.vision_feature_layer,
                               vision_feature_select=s.vision_feature_select)
        model = swap_and_save(raw, clip, out_dir=out / "llava" / "model", overwrite=True)
        return {"model_dir": str(model), "n_params": _n_params(model), "tower": {"width": width, "layers": layers,
                                                                                "heads": heads, "patch": patch}}

    cfg = {"clip": clip, "clip_stamp": stamp(clip), "data": stamp(data["mix"]), "hidden": s.hidden_size,
           "layers": s.num_layers, "image_size": s.image_size, "seed": s.seed, "letter_bias": s.letter_bias,
           "vision_feature_layer": s.vision_feature_layer, "vision_feature_select": s.vision_feature_select}
    return run_stage(out / "llava", cfg, make)


def _n_params(model_dir: Path) -> int:
    from safetensors import safe_open

    with safe_open(str(Path(model_dir) / "model.safetensors"), "pt") as f:
        return sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())


def sft_stage(out: Path, s: MMRTrainedDemo, model: str, manifest: str, *, steps: int, lr: float,
         progress: bool) -> dict[str, Any]:
    """One resumable ``mllm-sft`` run (tower frozen; projector + Llama train); returns its model dir and losses."""
    from mmrobust.pipelines.train import DataSpec, ModelSpec, TrainJob, run_train
    from mmrobust.training.loop import TrainConfig

    optim = TrainConfig(steps=steps, batch_size=s.batch, lr=lr, weight_decay=s.weight_decay,
                        warmup_steps=max(1, steps // 10), ckpt_every=max(25, steps // 4), log_every=5, seed=s.seed)
    job = TrainJob(task="mllm-sft", model=ModelSpec(name=model, seed=s.seed), data=DataSpec(manifest=manifest),
                   optim=optim, out_dir=str(out), task_options={"train_vision": False, "cache_features": True})

    def make() -> dict[str, Any]:
        start = time.perf_counter()
        model_dir, _ = run_train(job, resume=True, progress=progress)
        losses = [r["loss"] for r in map(_json_line, (out / "train_log.jsonl").read_text().splitlines()) if "loss" in r]
        k = max(1, len(losses) // 5)  # first and last fifth of the logged steps
        return {"model_dir": str(model_dir), "seconds": round(time.perf_counter() - start, 1),
                "loss_first": sum(losses[:k]) / k, "loss_last": sum(losses[-k:]) / k}

    cfg = {"model": model, "manifest": manifest, "optim": asdict(optim), "inputs": [stamp(Path(model) / "model.safetensors"),
                                                                                   stamp(manifest)]}
    return run_stage(out, cfg, make)


def _json_line(line: str) -> dict[str, Any]:
    import json

    return json.loads(line) if line.strip() else {}


def mllm_adapter(model_dir: str, s: MMRTrainedDemo):
    from mmrobust.models.mllm import build_adapter

    return build_adapter("hf", model=model_dir, options={"device": "cpu", "dtype": "float32", "batch_size": s.eval_batch})


def heldout_stage(out: Path, s: MMRTrainedDemo, model_dir: str, manifest: str) -> dict[str, Any]:
    """Accuracy on held-out straightforward multiple-choice questions (fresh images), the MMR run's parser."""
    from mmrobust.data.instructions import load_instructions
    from mmrobust.eval.mllm.parsing import get_parser
    from mmrobust.models.mllm import GenerationParams, GenRequest

    def make() -> dict[str, Any]:
        items = load_instructions(manifest)
        reqs = [GenRequest(uid=i.id, prompt=i.question, image_path=str(i.image_path)) for i in items]
        replies = dict(mllm_adapter(model_dir, s).generate(reqs, GenerationParams(max_new_tokens=s.max_new_tokens)))
        parse = get_parser(PARSER)
        letters = [parse(replies[k].text, i.meta["options"]) if replies[k].ok else None for k, i in enumerate(items)]
        right = [got == i.meta["letter"] for got, i in zip(letters, items)]
        n, acc = len(right), sum(right) / len(right)
        return {"n": n, "accuracy": acc, "ci": wilson(sum(right), n), "unparseable": letters.count(None)}

    return run_stage(out, {"model": stamp(Path(model_dir) / "model.safetensors"), "manifest": manifest,
                           "max_new_tokens": s.max_new_tokens}, make)


def _mmr(out: Path, s: MMRTrainedDemo, model_dir: str, questions: str) -> dict[str, Any]:
    """The MMR run on the MMR world through the ``hf`` adapter: the overall metrics."""
    from mmrobust.eval.mmr import RunSettings, load_mmr, run_mmr
    from mmrobust.models.mllm import GenerationParams

    def make() -> dict[str, Any]:
        settings = RunSettings(n_boot=s.n_boot, seed=s.seed, params=GenerationParams(max_new_tokens=s.max_new_tokens),
                               prompt=PROMPT, parser=PARSER)
        record = run_mmr(load_mmr(questions), mllm_adapter(model_dir, s), out_dir=out, settings=settings)
        return {"overall": record["metrics"]["overall"], "per_category": record["metrics"]["per_category"],
                "neg_answers": _neg_answers(out / "samples_mmr.jsonl")}

    return run_stage(out, {"model": stamp(Path(model_dir) / "model.safetensors"), "questions": questions,
                           "n_boot": s.n_boot, "max_new_tokens": s.max_new_tokens}, make)


def _neg_answers(samples: Path) -> dict[str, float]:
    """How the leading (NEG) questions were answered: the right (premise-rejecting) option, a misleading
    option, or text that matches no option (the lenient parser found none); shares of the NEG rows."""
    rows = [r for r in map(_json_line, samples.read_text().splitlines()) if r.get("question_type") == "NEG"]
    n = max(1, len(rows))
    right = sum(r.get("pred") == r.get("ground_truth") for r in rows)
    none = sum(r.get("pred") is None for r in rows)
    return {"n": len(rows), "right": right / n, "misleading_option": (len(rows) - right - none) / n, "no_option": none / n}


def _row(label: str, train: dict[str, Any], held: dict[str, Any], mmr: dict[str, Any]) -> dict[str, Any]:
    o = mmr["overall"]
    return {"model": label, "heldout": held["accuracy"], "heldout_ci": held["ci"], "RA": o["ra"], "RA_ci": o["ra_ci"],
            "MR": o["mr"], "MR_ci": o["mr_ci"], "POS": o["pos_acc"], "POS_ci": wilson(o["n_pos_right"], o["n_pairs"]),
            "NEG": o["neg_acc"], "pairs": o["n_pairs"], "unparseable": o["n_unparseable"],
            "NEG_misleading": mmr["neg_answers"]["misleading_option"], "NEG_no_option": mmr["neg_answers"]["no_option"],
            "loss_first": train["loss_first"], "loss_last": train["loss_last"], "train_s": train["seconds"]}


def _kinds(kinds: tuple[str, ...]) -> str:
    names = {"caption": "captions", "vqa": "short-answer VQA", "mc": "multiple-choice questions",
             "mc-premise": "multiple-choice questions naming an attribute in the stem"}
    return ", ".join(names[k] for k in kinds)


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.1%}"


def _ci(v: float | None, ci: list[float] | None) -> str:
    return "n/a" if v is None else f"{v:.1%} [{ci[0]:.0%}, {ci[1]:.0%}]" if ci else f"{v:.1%}"


def _summarise(out: Path, s: MMRTrainedDemo, rows: list[dict[str, Any]], init: dict[str, Any],
               seconds: dict[str, float], log: Any) -> dict[str, Any]:
    from mmrobust.reports.plots import grouped_bars

    shown = [{"model": r["model"], "heldout": _ci(r["heldout"], r["heldout_ci"]), "RA": _ci(r["RA"], r["RA_ci"]),
              "MR": _ci(r["MR"], r["MR_ci"]), "POS": _ci(r["POS"], r["POS_ci"]), "pairs": r["pairs"]} for r in rows]
    cols = [("model", "model"), ("heldout", "held-out acc"), ("RA", "RA"), ("MR", "MR"), ("POS", "POS acc"),
            ("pairs", "pairs")]
    table = format_table(shown, cols, markdown=True)
    total = round(sum(seconds.values()), 1)
    story_s = round(total - seconds.get("clip", 0.0), 1)
    (out / "summary.md").write_text(f"# MMR story, trained tiny LLaVA ({init['n_params']:,} parameters)\n\n{table}\n\n"
                                    f"95% CIs in brackets. Story {story_s} s (+ {seconds.get('clip', 0.0)} s CLIP).\n")
    grouped_bars(out / "mmr_trained.png", groups=[r["model"] for r in rows],
                 series={"held-out acc": [r["heldout"] for r in rows], "RA": [r["RA"] for r in rows],
                         "MR": [r["MR"] or 0.0 for r in rows], "POS acc": [r["POS"] for r in rows]},
                 title=f"trained tiny LLaVA on the MMR world ({rows[0]['pairs']} pairs)",
                 colors=["#8e5bd8", "#3b7dd8", "#d8453b", "#4caf50"])
    story = Table.of(f"MMR story: a tiny LLaVA trained on the world, then MMR-tuned ({rows[0]['pairs']} pairs)",
                     [("model", "model"), ("heldout", "held-out acc", "%"), ("RA", "RA", "%"), ("MR", "MR", "%"),
                      ("POS", "POS acc", "%"), ("NEG", "NEG acc", "%"),
                      ("NEG_misleading", "NEG: misleading option", "%"), ("NEG_no_option", "NEG: no option", "%"),
                      ("pairs", "pairs", "count"),
                      ("train_s", "train time", "s")], rows,
                     f"Baseline: {s.base_steps} SFT steps on {_kinds(s.mix_kinds)} over {s.mix_images} images, "
                     f"premises all true. MMR-tuned: {s.tune_steps} more steps on paired straightforward + leading "
                     f"questions (false premises, share {s.leading_share:g}); control: the same {s.tune_steps} steps on "
                     "the straightforward rows only. RA: pairs with both right; MR: pairs misled by the leading question "
                     "over pairs whose straightforward question is right (bootstrap 95% CIs); POS acc with Wilson CIs. "
                     "NEG answers split into the right option, a misleading option and text matching no option. "
                     "The model answers with an option's text; the lenient parser maps it to the letter.")
    metrics = {"models": rows, "n_params": init["n_params"], "seconds": seconds, "story_seconds": story_s,
               "total_seconds": total}
    write_record(out, Record(kind="story.mmr-trained", metrics=metrics, tables=[story], plots=["mmr_trained.png"],
                             config=asdict(s), seeds={"demo": s.seed}), name="story")
    log(f"[mmr-trained] story {story_s} s (CLIP stage {seconds.get('clip', 0.0)} s)")
    return {"table": table, "plot": str(out / "mmr_trained.png"), "rows": rows, "record": metrics}
