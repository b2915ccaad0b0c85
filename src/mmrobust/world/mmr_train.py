"""The MMR *training* set: paired straightforward / leading questions over fresh synthetic scenes.

Training-side sibling of :mod:`mmrobust.world.mmr` (the offline evaluation set). For each image a
straightforward multiple-choice question (shape, colour, count or position; the true answer among
options A-D) and, for a ``leading_share`` of the images, a leading twin whose premise is false
("What colour is the *square*?" when the picture shows a circle) and whose right answer rejects the
premise ("There is no square; the picture shows a red circle.", worded as the MMR world words it). ``leading_share=0`` gives the
control set: the same images and straightforward rows, no leading twins.

Written in the instruction JSONL format of :mod:`mmrobust.data.instructions` (``train.jsonl`` +
``images/NNNNNN.png``, ``mmr_train.json`` records the arguments):

- ``question``: the stem, then ``"A. ...\\nB. ..."`` options, as in MMR question files;
- ``answer``: the right option as ``"X. text"`` (letter, dot, option text), which MMR's official
  answer parser reads as ``X``; ``meta.letter`` holds the letter alone;
- ``id``: ``train/NNNNNN/pos`` and ``train/NNNNNN/neg`` (never a benchmark ``level/category/NN`` id);
- ``meta``: ``pair``, ``question_type`` (POS/NEG), ``category``, ``asks``, ``letter``, ``options``,
  ``scene`` (the true attributes) and, on NEG rows, ``premise`` ({attribute, value}, always false).

Right letters follow a shuffled, exactly balanced A-D schedule. Scenes come from the seed stream
``SeedSequence([seed, TRAIN_STREAM])``, never the evaluation set's ``default_rng(seed)``.
:func:`facts_to_pairs` builds the same pairs from a user's ``{"image": ..., "facts": {...}}`` JSONL.
"""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from mmrobust.errors import DataError
from mmrobust.jsonio import write_canonical_jsonl
from mmrobust.safety import check_replace, ensure_regular_file, resolve_inside
from mmrobust.values import SEED_MAX, check_int, check_number
from mmrobust.world.mmr import (QA, Facts, PairSpec, colour_pair, pick_others, plural, position_pair,
                                scene_facts, shape_pair)
from mmrobust.world.shapes import COLORS, POSITIONS, Scene, render_scene, sample_scene

TRAIN_STREAM = 0x6D6D7274  # "mmrt": the training set's seed stream, apart from world/mmr.py's default_rng(seed)
LETTERS = "ABCD"
CATEGORIES = ("attribute/shape", "attribute/color&texture", "attribute/number", "attribute/position")
NUMBER_WORDS = {1: "one", 2: "two", 3: "three", 4: "four", 5: "five", 6: "six", 7: "seven", 8: "eight", 9: "nine"}


def _count_pair(f: Facts, rng: np.random.Generator) -> PairSpec:
    shape, n, w = f["shape"], f["count"], NUMBER_WORDS
    top = max(5, n + 2)  # counts 1..4 for the world's scenes, a window around n for users' facts
    others = [int(k) for k in rng.choice([k for k in range(1, top) if k != n], size=3, replace=False)]
    pos = QA(f"How many {plural(shape)} are in the picture?",
             tuple(f"There {'is' if k == 1 else 'are'} {w[k]}." for k in [n] + others))
    wn = int(rng.choice([k for k in range(2, top) if k != n]))  # plural premise: "the three squares"
    colours = [f.get("colour") or "red"] + pick_others(rng, COLORS, {f.get("colour") or "red"}, 2)
    have = f"{w[n]} {shape if n == 1 else plural(shape)}"
    neg = QA(f"What colour are the {w[wn]} {plural(shape)} in the picture?",
             (f"There {'is' if n == 1 else 'are'} {have}, not {w[wn]}.",
              *(f"The {w[wn]} {plural(shape)} are {c}." for c in colours)))
    return PairSpec("attribute/number", "count", pos, neg, ("count", wn))


BUILDERS: dict[str, Callable[[Facts, np.random.Generator], PairSpec]] = {
    "attribute/shape": shape_pair, "attribute/color&texture": colour_pair,
    "attribute/number": _count_pair, "attribute/position": position_pair,
}


def balanced_letters(n: int, rng: np.random.Generator) -> list[str]:
    """``n`` right letters, each of A-D used floor(n/4) or ceil(n/4) times, in a seeded random order."""
    return [LETTERS[int(k)] for k in rng.permutation(np.resize(np.arange(4), n))] if n else []


def _lettered(q: QA, letter: str, rng: np.random.Generator) -> tuple[str, dict[str, str]]:
    """The question text with the right option (``q.options[0]``) under ``letter``, the rest shuffled."""
    rest = [q.options[int(j)] for j in rng.permutation(np.arange(1, len(q.options)))]
    slot = LETTERS.index(letter)
    texts = rest[:slot] + [q.options[0]] + rest[slot:]
    options = {LETTERS[k]: t for k, t in enumerate(texts)}
    return q.stem + "\n" + "\n".join(f"{k}. {t}" for k, t in options.items()), options


def _row(pid: str, qtype: str, q: QA, spec: PairSpec, image: str, facts: Facts, letter: str,
         rng: np.random.Generator, answer_format: str) -> dict[str, Any]:
    text, options = _lettered(q, letter, rng)
    meta: dict[str, Any] = {"pair": pid, "question_type": qtype, "category": spec.category, "asks": spec.asks,
                            "letter": letter, "options": options, "scene": dict(facts)}
    if qtype == "NEG":
        meta["premise"] = {"attribute": spec.premise[0], "value": spec.premise[1]}
    return {"id": f"{pid}/{qtype.lower()}", "image": image, "question": text,
            "answer": options[letter] if answer_format == "text" else f"{letter}. {options[letter]}", "meta": meta}


def _emit(items: Sequence[tuple[str, str, Facts, PairSpec, bool]], rng_pos: np.random.Generator,
          rng_neg: np.random.Generator, answer_format: str = "letter+text") -> list[dict[str, Any]]:
    """Rows for (pair id, image, facts, spec, leading?) items: POS always, NEG where leading; balanced letters."""
    pos_letters = balanced_letters(len(items), rng_pos)
    neg_letters = iter(balanced_letters(sum(lead for *_, lead in items), rng_neg))
    rows = []
    for (pid, image, facts, spec, lead), letter in zip(items, pos_letters):
        rows.append(_row(pid, "POS", spec.pos, spec, image, facts, letter, rng_pos, answer_format))
        if lead:
            rows.append(_row(pid, "NEG", spec.neg, spec, image, facts, next(neg_letters), rng_neg, answer_format))
    return rows


def _streams(seed: int) -> list[np.random.Generator]:
    """Scenes, question content, POS letters, NEG letters, leading choice: separate so the control set
    (``leading_share=0``) shares images and POS rows with the leading one of the same seed."""
    return [np.random.default_rng(s) for s in np.random.SeedSequence([seed, TRAIN_STREAM]).spawn(5)]


def _leading_mask(n: int, share: float, rng: np.random.Generator) -> list[bool]:
    chosen = set(int(i) for i in rng.choice(n, size=int(round(share * n)), replace=False))
    return [i in chosen for i in range(n)]


def draw_scene(i: int, category: str, rng: np.random.Generator, root: Path, image_size: int) -> tuple[Scene, str]:
    """Scene ``i`` of a training set (one object, or 1-3 for counting questions), rendered to
    ``root/images/NNNNNN.png``; returns the scene and the image path relative to ``root``."""
    scene = sample_scene(rng)
    scene = replace(scene, count=int(rng.integers(1, 4)) if category == "attribute/number" else 1)
    image = f"images/{i + 1:06d}.png"
    render_scene(scene, image_size=image_size, rng=rng).save(root / image, optimize=False, compress_level=1)
    return scene, image


TRAIN_GENERATOR = "mmrobust.world.mmr_train"  # mmr_train.json's generator in a folder this module wrote


def generate_mmr_training_set(
    out_dir: str | Path, *, n_images: int, seed: int, image_size: int = 32, leading_share: float = 0.5,
    categories: tuple[str, ...] = CATEGORIES, answer_format: str = "letter+text", overwrite: bool = True,
) -> Path:
    """Write ``images/``, ``train.jsonl`` and ``mmr_train.json`` under ``out_dir``; returns ``train.jsonl``.
    Same arguments, same bytes. Categories cycle over the images, so each gets an equal share.
    ``answer_format``: ``"letter+text"`` (``"X. text"``) or ``"text"`` (the right option's text alone).
    Files of an earlier set there are replaced only with ``overwrite`` and only if its mmr_train.json (written
    first) says this function wrote them."""
    check_int("n_images", n_images, low=1, fix="ask for at least one image")
    check_int("seed", seed, low=0, high=SEED_MAX)
    check_int("image_size", image_size, low=8, high=1024)
    check_number("leading_share", leading_share, low=0.0, high=1.0, fix="0 = control set, 1 = a twin for every image")
    _check_format(answer_format)
    unknown = [c for c in categories if c not in BUILDERS]
    if unknown or not categories:
        raise DataError(f"unknown or no categories {unknown}; choose from {', '.join(CATEGORIES)}")
    root = Path(out_dir)
    names = ("train.jsonl", "mmr_train.json", *(f"images/{i + 1:06d}.png" for i in range(n_images)))
    check_replace(root, [n for n in names if (root / n).exists()], marker="mmr_train.json", generator=TRAIN_GENERATOR,
                  overwrite=overwrite)
    meta = {"generator": TRAIN_GENERATOR, "seed": seed, "stream": TRAIN_STREAM, "n_images": n_images,
            "image_size": image_size, "leading_share": leading_share, "categories": list(categories),
            "answer_format": "X. text" if answer_format == "letter+text" else "text"}
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "mmr_train.json").write_text(json.dumps(meta, indent=2) + "\n")  # first: it marks the folder as ours
    rng_scene, rng_q, rng_pos, rng_neg, rng_lead = _streams(seed)
    lead = _leading_mask(n_images, leading_share, rng_lead)
    items = []
    for i in range(n_images):
        cat = categories[i % len(categories)]
        scene, image = draw_scene(i, cat, rng_scene, root, image_size)
        facts = scene_facts(scene)
        items.append((f"train/{i + 1:06d}", image, facts, BUILDERS[cat](facts, rng_q), lead[i]))
    out = root / "train.jsonl"
    write_canonical_jsonl(out, _emit(items, rng_pos, rng_neg, answer_format))
    return out


ANSWER_FORMATS = ("letter+text", "text")


def _check_format(answer_format: str) -> None:
    if answer_format not in ANSWER_FORMATS:
        raise DataError(f"unknown answer_format {answer_format!r}; choose one of {', '.join(ANSWER_FORMATS)}")


FACT_KEYS = frozenset({"shape", "colour", "color", "count", "position", "size", "background"})


def _check_facts(facts: Any, loc: str) -> Facts:
    """Validated facts: ``shape`` and ``colour`` (or ``color``) required; ``count`` 1-9, ``position`` optional."""
    if not isinstance(facts, dict) or not facts:
        raise DataError(f"{loc}: 'facts' must be a non-empty object; write e.g. "
                        '{"shape": "circle", "colour": "red"}')
    unknown = sorted(set(facts) - FACT_KEYS)
    if unknown:
        raise DataError(f"{loc}: unknown fact(s) {', '.join(map(repr, unknown))}; use {', '.join(sorted(FACT_KEYS))}")
    f = {("colour" if k == "color" else k): v for k, v in facts.items()}
    for key in ("shape", "colour"):
        if not isinstance(f.get(key), str) or not f[key].strip():
            raise DataError(f"{loc}: fact {key!r} must be a non-empty string (got {f.get(key)!r}); name it")
    count = f.get("count")
    if count is not None and (isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= 9):
        raise DataError(f"{loc}: fact 'count' must be an integer 1-9, got {count!r}; fix or drop it")
    if "position" in f and f["position"] not in POSITIONS:
        raise DataError(f"{loc}: fact 'position' {f['position']!r} is not one of {', '.join(POSITIONS)}; use one")
    return f


def _facts_line(line: str, loc: str, root: Path, allow_outside: bool) -> tuple[str, Facts]:
    try:
        rec = json.loads(line)
    except json.JSONDecodeError as e:
        raise DataError(f"{loc}: not valid JSON ({e.msg} at column {e.colno}); "
                        "write one JSON object per line") from None
    if not isinstance(rec, dict) or set(rec) != {"image", "facts"}:
        raise DataError(f"{loc}: expected an object with exactly 'image' and 'facts'; write "
                        '{"image": "img.png", "facts": {"shape": "circle", "colour": "red"}}')
    image = rec["image"]
    if not isinstance(image, str) or not image.strip():
        raise DataError(f"{loc}: 'image' must be a non-empty path string; fill it in")
    if Path(image).expanduser().is_absolute() and not allow_outside:
        raise DataError(f"{loc}: image {image!r} is absolute; write it relative to {root} or pass "
                        "allow_outside=True (--allow-outside-paths)")
    full = resolve_inside(root, image, allow_outside=allow_outside, what=f"{loc}: image")
    ensure_regular_file(full, f"{loc}: image")
    return image, _check_facts(rec["facts"], loc)


def _fact_categories(f: Facts) -> list[str]:
    """The categories one set of facts supports (single-object questions need a count of one)."""
    single = f.get("count", 1) == 1
    cats = ["attribute/shape", "attribute/color&texture"] if single else []
    cats += ["attribute/number"] if "count" in f else []
    return cats + (["attribute/position"] if single and "position" in f else [])


def facts_to_pairs(facts_jsonl: str | Path, *, seed: int = 0, leading_share: float = 1.0,
                   allow_outside: bool = False) -> list[dict[str, Any]]:
    """Instruction rows (the :mod:`mmrobust.data.instructions` format, ``answer`` as ``"X. text"``) for a
    user's JSONL of ``{"image": "rel/path.png", "facts": {"shape": ..., "colour": ..., "count": 2,
    "position": "top left"}}`` lines: one pair per category the facts support. Image paths stay relative to
    the facts file's folder, so write the rows next to it (``write_instructions``)."""
    check_int("seed", seed, low=0, high=SEED_MAX)
    check_number("leading_share", leading_share, low=0.0, high=1.0, fix="0 = control set, 1 = a twin for every pair")
    path = ensure_regular_file(facts_jsonl, "facts file")
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError:
        raise DataError(f"{path}: not UTF-8 text; save it as UTF-8 JSONL") from None
    _, rng_q, rng_pos, rng_neg, rng_lead = _streams(seed)
    specs = []
    for n, line in enumerate(lines, start=1):
        if line.strip():
            image, facts = _facts_line(line, f"{path}:{n}", path.parent, allow_outside)
            specs += [(f"train/facts/{n:06d}/{cat.split('/')[-1].split('&')[0]}", image, facts,
                       BUILDERS[cat](facts, rng_q)) for cat in _fact_categories(facts)]
    if not specs:
        raise DataError(f"{path}: no facts lines; write one {{\"image\": ..., \"facts\": {{...}}}} object per line")
    lead = _leading_mask(len(specs), leading_share, rng_lead)
    return _emit([(*s, le) for s, le in zip(specs, lead)], rng_pos, rng_neg)
