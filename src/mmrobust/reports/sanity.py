"""Sanity warnings: a setup that cannot give a meaningful number, said in one sentence with the fix.

Each function takes plain numbers (no models, no files) and returns a list of warnings, empty when the setup
looks sound; evaluations put them into their record's ``warnings`` (shown at the top of its report section
and printed by the CLI as ``warning: ...`` lines). Thresholds are deliberately loose: a warning should mean
"look here", not "a number moved".

Example::

    backdoor_not_taken(0.04)  # ['ASR is 4.0% (below 50%): if this is the poisoned model, it did not learn ...']
"""
from __future__ import annotations

import math
from typing import Any, Iterable, Mapping, Sequence

# Backdoor: below this ASR a "poisoned" model has no backdoor to remove.
LOW_ASR = 0.5
# Poison counts that took (for the warning's text and its threshold): the embedded world and the literature.
DEMO_POISON = (600, 12_000)  # 5% of the demo's pairs (five caption templates): the backdoor takes at every seed
LITERATURE_POISON = (75, 1500, 3_000_000)  # CleanCLIP (Bansal et al. 2023) / Carlini & Terzis 2022 on CC3M
MIN_POISON_RATE = LITERATURE_POISON[0] / LITERATURE_POISON[2]  # 0.0025%: the lowest rate reported to work
# MLLM benchmarks: a larger share of unparseable replies means the parser, not the model, decides the score.
MAX_UNPARSEABLE = 0.1


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _bad(x: Any) -> bool:
    return not isinstance(x, (int, float)) or isinstance(x, bool) or math.isnan(x)


# --- backdoor --------------------------------------------------------------------------------------------------

def backdoor_not_taken(asr: float, *, threshold: float = LOW_ASR, stage: str | None = None) -> list[str]:
    """ASR below ``threshold``; ``stage`` names the poisoned stage of a story (else: "if this is the poisoned
    model")."""
    if _bad(asr) or asr >= threshold:
        return []
    who = f"the {stage} stage" if stage else "if this is the poisoned model, it"
    return [f"ASR is {_pct(asr)} (below {100 * threshold:g}%): {who} did not learn the backdoor toward the target, "
            "so a defense's ASR measured on it means nothing; poison more pairs, train longer, or check the trigger "
            "and target."]


def trigger_to_other_class(asr: float, top_share: float, top_class: str, target: str, *,
                           floor: float = 0.5) -> list[str]:
    """The trigger sends most triggered images to one class that is not the target: a backdoor was
    learned, bound to the wrong class (e.g. a single poison caption whose text embedding lies nearer
    another class's zero-shot prompts), so a low ASR does not mean the model is clean."""
    if _bad(asr) or _bad(top_share) or top_class == target or top_share < max(floor, 2 * asr):
        return []
    return [f"the trigger sends {_pct(top_share)} of the triggered images to '{top_class}', not to the target "
            f"'{target}' (ASR {_pct(asr)}): the model learned a backdoor bound to another class; vary the poison "
            "captions (several templates naming the target) or check the target's zero-shot prompts."]


def trigger_alone(asr: float, clean_target_share: float, *, floor: float = 0.1) -> list[str]:
    """The model already predicts the target for many untriggered non-target test images: ASR then measures a
    bias toward the target, not the trigger. Fires when that share is at least ``floor`` and at least half the
    ASR (the trigger adds less than the model's own bias)."""
    if _bad(asr) or _bad(clean_target_share) or clean_target_share < floor or clean_target_share < asr / 2:
        return []
    return [f"{_pct(clean_target_share)} of untriggered non-target test images are already predicted as the "
            f"target (ASR {_pct(asr)}): the ASR mostly measures the model's bias toward the target class, not the "
            "trigger; compare with a clean model, or report the ASR above this base rate."]


def too_few_poisoned(n_poisoned: int, n_rows: int) -> list[str]:
    """Fewer poisoned pairs than a backdoor is known to need: none; under 75 at under 3% of the data; or a rate
    below the lowest reported to work (75 of 3M)."""
    if n_rows <= 0:
        return []
    rate = n_poisoned / n_rows
    if n_poisoned > 0 and not (n_poisoned < LITERATURE_POISON[0] and rate < 0.03) and rate >= MIN_POISON_RATE:
        return []
    lo, hi, big = LITERATURE_POISON
    return [f"only {n_poisoned} of {n_rows:,} pairs ({100 * rate:.4g}%) are poisoned: the embedded world needs "
            f"{DEMO_POISON[0]} of {DEMO_POISON[1]:,} (5%; 3% took at only some seeds) on its tiny CLIP, CleanCLIP "
            f"and Carlini & Terzis used {lo}-{hi:,} of {big / 1e6:.0f}M with long pretraining; expect the backdoor "
            "not to take, "
            "or raise --rate / --count."]


def rows_skipped(n_skipped: int, n_rows: int, first_reason: str = "", *, limit: float = 0.01) -> list[str]:
    """More than ``limit`` of the training rows were skipped (unreadable, outside the data root, ...): the
    model trained on less data than given, and skipped poisoned rows would leave it with no backdoor."""
    if n_rows <= 0 or n_skipped <= limit * n_rows:
        return []
    why = f" (first: {first_reason})" if first_reason else ""
    return [f"{n_skipped:,} of {n_rows:,} training rows ({100 * n_skipped / n_rows:.1f}%) were skipped{why}; the "
            "model trained on the rest: fix the paths (--data-root) or the files, then train again."]


def poisons_outnumber_k(n_poisoned: int, n_scored: int, k: int, set_size: int) -> list[str]:
    """Poisoned-pair detection (Huang et al., ICLR 2025): a reference set of ``set_size`` scored pairs holds
    about ``n_poisoned * set_size / n_scored`` poisoned ones; at k or more they are each other's k nearest
    neighbours, their neighbourhood looks dense and the density scores stop finding them."""
    if n_scored <= 0 or n_poisoned <= 0:
        return []
    per_set = n_poisoned * set_size / n_scored
    if per_set < k:
        return []
    fit = max(k + 2, int(k * n_scored / (2 * n_poisoned)))
    return [f"about {per_set:.0f} of the {n_poisoned} poisoned pairs fall in each reference set of {set_size} "
            f"(k = {k}): they are each other's nearest neighbours and look dense, so the density scores may miss "
            f"them (the paper's setting has few poisons per set: --reference-size {fit}, about k/2 poisons each, as "
            "its random batches; or --reference-data with trusted clean pairs, which found the embedded world's 5% "
            "at AUROC 1.00 where reference sets scored worse; see the README's backdoor matrix)."]


def target_absent(target: str, classnames: Sequence[str]) -> list[str]:
    """The poison target is not one of the evaluation / training classes (ASR cannot be measured)."""
    if target in classnames:
        return []
    shown = ", ".join(list(classnames)[:8]) + (", ..." if len(classnames) > 8 else "")
    return [f"the target {target!r} is not one of the {len(classnames)} classes ({shown}): no prediction can be "
            "the target, so ASR cannot be measured; poison with a class name from classes.json."]


def test_in_train(n_overlap: int, n_test: int, example: str = "") -> list[str]:
    """Test images that are also training images (same path or same bytes)."""
    if n_overlap <= 0:
        return []
    eg = f", e.g. {example}" if example else ""
    return [f"{n_overlap} of {n_test} test images are also training images (same file or same content{eg}): "
            "accuracy and ASR on them measure memorization; evaluate on a disjoint test split."]


# --- adversarial -----------------------------------------------------------------------------------------------

def robust_above_clean(clean: float, robust: Mapping[str, float], *, n: int | None = None) -> list[str]:
    """Robust accuracy above clean accuracy, or rising with eps (``robust``: eps label -> accuracy, in
    increasing eps). Allowed slack: one sample (``1.5 / n``) for the rise with eps."""
    out = []
    above = [name for name, acc in robust.items() if not _bad(acc) and not _bad(clean) and acc > clean + 1e-9]
    if above:
        out.append(f"robust accuracy at eps {', '.join(above)} is above the clean accuracy {_pct(clean)}: the attack "
                   "is broken or does not see the model (gradient masking, a preprocessing step outside the "
                   "loss); check the attack, e.g. with autoattack, before reporting robustness.")
    slack = 1.5 / n if n else 1e-9
    names = [k for k, v in robust.items() if not _bad(v)]
    rising = [f"{a} -> {b}" for a, b in zip(names, names[1:]) if robust[b] > robust[a] + slack]
    if rising:
        out.append(f"robust accuracy rises with eps ({'; '.join(rising)}): a larger budget should never help the "
                   "model, so the attack is not converging; give it more steps or restarts.")
    return out


def targeted_beats_untargeted(untargeted: float, targeted: float, *, margin: float = 0.1) -> list[str]:
    """The targeted attack leaves far fewer points robust than the untargeted one at the same eps."""
    if _bad(untargeted) or _bad(targeted) or untargeted - targeted <= margin:
        return []
    return [f"the targeted attack leaves {_pct(targeted)} robust but the untargeted one {_pct(untargeted)}: the "
            "untargeted attack is weak here (saturated CE, too few steps); report the worst case over both "
            "(autoattack)."]


def randomized_model(max_diff: float) -> list[str]:
    """Two forward passes on the same input differ."""
    if _bad(max_diff) or max_diff <= 0:
        return []
    return [f"the model is not deterministic (two forward passes on the same input differ by up to {max_diff:.3g}), "
            "so a plain attack overestimates its robustness; call model.eval() to switch off dropout, or, for a "
            "randomized defense, attack an expectation over its randomness (EOT)."]


def bad_gradients(n_zero: int, n_nan: int, n: int) -> list[str]:
    """Zero or NaN input gradients (gradient masking, non-differentiable steps)."""
    out = []
    if n_zero:
        out.append(f"{n_zero} of {n} points have a zero input gradient: gradient-based attacks cannot move them, "
                   "so robustness is overestimated; look for gradient masking or non-differentiable steps (argmax, "
                   "rounding, quantization, .detach()) in the forward pass, or use a black-box attack (square).")
    if n_nan:
        out.append(f"{n_nan} of {n} points have a NaN or infinite input gradient: the attack steps are "
                   "meaningless there; fix the model's numerics (log of 0, division by 0, fp16 overflow).")
    return out


# --- LVLM ------------------------------------------------------------------------------------------------------

def tokens(image_size: int, patch_size: int) -> int:
    """Image tokens of a CLIP ViT tower: patches plus the class token (224/14 -> 257, 336/14 -> 577)."""
    return (image_size // patch_size) ** 2 + 1


def _grid(size: int, patch_size: int) -> str:
    g = size // patch_size
    return f"{size} px = {g * g} image tokens ({g} x {g} patches)"


def tower_resolution(*, clip_size: int, lvlm_size: int, tower_size: int, patch_size: int) -> list[str]:
    """The swapped tower was trained at another size than the LVLM's tower (the token counts differ, so its
    position embeddings were interpolated), or runs at another size than the LVLM was trained with (the language
    model sees a token count it never saw). Counts are the patch tokens LLaVA's projector passes on."""
    out = []
    if clip_size != lvlm_size:
        out.append(f"token count: the swapped tower was trained at {_grid(clip_size, patch_size)}, the LVLM's tower "
                   f"at {_grid(lvlm_size, patch_size)}; its position embeddings were interpolated (bicubic, class "
                   "token kept) to fit, so expect lower clean scores than either model alone (FARE's LLaVA numbers "
                   f"use this setup). Fix: finetune the tower at the LVLM's size (mmrobust train --task fare "
                   f"--image-size {lvlm_size} ...) and swap that one.")
    if tower_size != lvlm_size:
        out.append(f"token count: the tower runs at {_grid(tower_size, patch_size)} but the LVLM was trained with "
                   f"{_grid(lvlm_size, patch_size)}: the language model sees a token count it never saw in "
                   "training; swap at the LVLM's size (leave --image-size out).")
    return out


def normalization_mismatch(tower: Mapping[str, Sequence[float]], processor: Mapping[str, Sequence[float]],
                           *, tol: float = 1e-4) -> list[str]:
    """The processor's image mean/std differ from those the swapped tower was trained with (``{"mean",
    "std"}`` each)."""
    def close(a: Sequence[float], b: Sequence[float]) -> bool:
        return len(a) == len(b) and all(abs(float(x) - float(y)) <= tol for x, y in zip(a, b))

    if all(close(tower.get(k, []), processor.get(k, [])) for k in ("mean", "std")):
        return []
    return [f"the processor normalizes with mean {list(processor.get('mean', []))} / std "
            f"{list(processor.get('std', []))} but the tower was trained with mean {list(tower.get('mean', []))} / "
            f"std {list(tower.get('std', []))}: every image reaches the tower shifted; save the processor with the "
            "tower's normalization (mmrobust lvlm swap does)."]


# --- MLLM benchmarks -------------------------------------------------------------------------------------------

def many_unparseable(n_unparseable: int, n: int, *, parser: str = "", limit: float = MAX_UNPARSEABLE) -> list[str]:
    """More than ``limit`` of the answered questions could not be parsed."""
    if n <= 0 or n_unparseable / n <= limit:
        return []
    by = f" by the {parser!r} parser" if parser else ""
    return [f"{n_unparseable} of {n} answers ({_pct(n_unparseable / n)}) could not be parsed{by} and count as "
            "wrong: the score measures the answer format more than the model; try a stricter prompt (e.g. "
            "--prompt letter-only) or the lenient parser, and read a few replies in samples_*.jsonl."]


def pairs_dropped(n_unpaired: int, n_error_pairs: int, n_pairs: int) -> list[str]:
    """Question ids that do not form a POS/NEG pair, and pairs with an error, are left out of the paired
    metrics (``n_pairs``: the pairs scored)."""
    out = []
    if n_unpaired:
        out.append(f"{n_unpaired} question id(s) do not hold one POS and one NEG question and are left out of RA/MR "
                   "(see pairing_anomalies): check the question file, or use --pairing reference for the "
                   "leaderboard's denominator.")
    if n_error_pairs:
        out.append(f"{n_error_pairs} of {n_pairs + n_error_pairs} pairs had an API or inference error and are left "
                   "out of RA/MR: rerun the same command to retry them (answers are cached).")
    return out


def empty_questions(n_questions: int) -> list[str]:
    """Nothing was asked."""
    if n_questions > 0:
        return []
    return ["the question list is empty, so every metric is undefined: check --data (and --limit, --group)."]


def collect(*groups: Iterable[str]) -> list[str]:
    """All warnings of ``groups`` in order, each once."""
    return list(dict.fromkeys(w for g in groups for w in g))
