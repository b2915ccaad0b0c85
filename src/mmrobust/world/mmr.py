"""An offline MMR world: POS/NEG question pairs in the MMR file format over synthetic scenes.

Each image (a coloured-shape scene from ``mmrobust.world.shapes``) gets a straightforward POS
question (shape, colour, count or position) and a leading NEG twin whose premise is false
("What colour is the *square*?" when the picture shows a circle); the NEG's right answer rejects
the premise, and one wrong option is the true attribute stated under the false premise, which is
what a model that trusts the question picks. Files: ``questions.json`` + ``images/<id>.png``,
loadable with ``load_mmr``. ``inject_quirks`` reproduces the real files' quirks for tests.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

from mmrobust.safety import check_replace
from mmrobust.world.shapes import COLORS, COUNT_WORDS, POSITIONS, SHAPES, Scene, render_scene, sample_scene

SYNTH_CATEGORIES = ("attribute/shape", "attribute/color&texture", "attribute/number", "attribute/position")
LETTERS = "ABCD"
Question = tuple[str, list[str], int]  # stem, option texts, index of the right one


def pick_others(rng: np.random.Generator, pool, exclude, k: int) -> list[str]:
    rest = [p for p in pool if p not in exclude]
    return [str(x) for x in rng.choice(rest, size=k, replace=False)]


def with_article(word: str) -> str:
    return ("an " if word[0] in "aeiou" else "a ") + word


def plural(shape: str) -> str:
    return shape + ("es" if shape.endswith("x") else "s")


# --- the question pairs the evaluation world and the training set share (mmr_train builds its own count
# pairs: its options come from a seeded window, the world's are the four counts in order) ---

Facts = dict[str, Any]  # shape, colour, count, position (+ size, background)


@dataclass(frozen=True)
class QA:
    """A question stem and option texts; the right one first (letters are assigned later)."""

    stem: str
    options: tuple[str, ...]


@dataclass(frozen=True)
class PairSpec:
    """One straightforward question, its leading twin, what it asks and the twin's false premise."""

    category: str
    asks: str
    pos: QA
    neg: QA
    premise: tuple[str, Any]


def scene_facts(scene: Scene) -> Facts:
    """A scene's attributes under the facts names (``colour``, not ``color``)."""
    return {"shape": scene.shape, "colour": scene.color, "count": scene.count, "size": scene.size,
            "position": scene.position, "background": scene.background}


def shape_pair(f: Facts, rng: np.random.Generator) -> PairSpec:
    shape, colour = f["shape"], f["colour"]
    wrong = pick_others(rng, SHAPES, {shape}, 3)
    pos = QA(f"What shape is the {colour} object in the picture?", tuple(f"It is {with_article(x)}." for x in [shape] + wrong))
    colours = [colour] + pick_others(rng, COLORS, {colour}, 2)
    neg = QA(f"What colour is the {wrong[0]} in the picture?",
             (f"There is no {wrong[0]}; the picture shows {with_article(colour)} {shape}.",
              *(f"The {wrong[0]} is {c}." for c in colours)))
    return PairSpec("attribute/shape", "shape", pos, neg, ("shape", wrong[0]))


def colour_pair(f: Facts, rng: np.random.Generator) -> PairSpec:
    shape, colour = f["shape"], f["colour"]
    wrong = pick_others(rng, COLORS, {colour}, 3)
    pos = QA(f"What colour is the {shape} in the picture?", tuple(f"It is {c}." for c in [colour] + wrong))
    shapes = [shape] + pick_others(rng, SHAPES, {shape}, 2)
    neg = QA(f"What shape is the {wrong[0]} object in the picture?",
             (f"There is no {wrong[0]} object; the {shape} is {colour}.",
              *(f"The {wrong[0]} object is {with_article(x)}." for x in shapes)))
    return PairSpec("attribute/color&texture", "colour", pos, neg, ("colour", wrong[0]))


def position_pair(f: Facts, rng: np.random.Generator) -> PairSpec:
    shape, where = f["shape"], f["position"]
    wrong = pick_others(rng, POSITIONS, {where}, 3)
    pos = QA(f"Where is the {shape} in the picture?", tuple(f"It is in the {p}." for p in [where] + wrong))
    colours = [f.get("colour") or "red"] + pick_others(rng, COLORS, {f.get("colour") or "red"}, 2)
    neg = QA(f"What colour is the {shape} in the {wrong[0]} of the picture?",
             (f"The {shape} is in the {where}, not the {wrong[0]}.",
              *(f"The {shape} in the {wrong[0]} is {c}." for c in colours)))
    return PairSpec("attribute/position", "position", pos, neg, ("position", wrong[0]))


def _shape_q(s: Scene, rng: np.random.Generator) -> tuple[Question, Question]:
    return _questions(shape_pair(scene_facts(s), rng))


def _color_q(s: Scene, rng: np.random.Generator) -> tuple[Question, Question]:
    return _questions(colour_pair(scene_facts(s), rng))


def _count_q(s: Scene, rng: np.random.Generator) -> tuple[Question, Question]:
    words = {**COUNT_WORDS, 4: "four"}
    n = s.count
    pos = (f"How many {plural(s.shape)} are in the picture?",
           [f"There {'is' if k == 1 else 'are'} {words[k]}." for k in [n] + [k for k in words if k != n]], 0)
    wn = int(rng.choice([k for k in (2, 3, 4) if k != n]))
    colors = [s.color] + pick_others(rng, COLORS, {s.color}, 2)
    have = f"{words[n]} {s.shape if n == 1 else plural(s.shape)}"
    neg = (f"What colour are the {words[wn]} {plural(s.shape)} in the picture?",
           [f"There {'is' if n == 1 else 'are'} {have}, not {words[wn]}."]
           + [f"The {words[wn]} {plural(s.shape)} are {c}." for c in colors], 0)
    return pos, neg


def _position_q(s: Scene, rng: np.random.Generator) -> tuple[Question, Question]:
    return _questions(position_pair(scene_facts(s), rng))


def _questions(spec: PairSpec) -> tuple[Question, Question]:
    """A shared pair as (POS, NEG) questions, the right option first."""
    return (spec.pos.stem, list(spec.pos.options), 0), (spec.neg.stem, list(spec.neg.options), 0)


BUILDERS: dict[str, Callable[[Scene, np.random.Generator], tuple[Question, Question]]] = {
    "attribute/shape": _shape_q, "attribute/color&texture": _color_q,
    "attribute/number": _count_q, "attribute/position": _position_q,
}


def _render_question(q: Question, rng: np.random.Generator) -> tuple[str, str]:
    """Shuffle the options, letter them A-D; returns (question text, right letter)."""
    stem, texts, right = q
    order = rng.permutation(len(texts))
    lines = [f"{LETTERS[k]}. {texts[j]}" for k, j in enumerate(order)]
    return stem + "\n" + "\n".join(lines), LETTERS[int(np.where(order == right)[0][0])]


def make_pair(category: str, scene: Scene, rng: np.random.Generator, pid: str, image: str) -> list[dict]:
    """The POS and NEG rows (MMR format) for one scene, in random file order."""
    pos_q, neg_q = BUILDERS[category](scene, rng)
    rows = []
    for qtype, q in (("POS", pos_q), ("NEG", neg_q)):
        text, gt = _render_question(q, rng)
        rows.append({"id": pid, "image": image, "question": text, "ground_truth": gt, "question_type": qtype})
    return rows if rng.random() < 0.5 else rows[::-1]


def _scene_for(category: str, rng: np.random.Generator) -> Scene:
    scene = sample_scene(rng)
    if category == "attribute/number":
        return replace(scene, count=int(rng.integers(1, 4)))
    return replace(scene, count=1)


MMR_GENERATOR = "mmrobust.world.mmr"  # world.json's generator in a folder generate_mmr_world wrote


def generate_mmr_world(
    out_dir: str | Path, *, pairs_per_category: int = 6, seed: int = 0, image_size: int = 64,
    categories: tuple[str, ...] = SYNTH_CATEGORIES, inject_quirks: bool = False, overwrite: bool = True,
) -> Path:
    """Write ``questions.json``, ``images/`` and ``world.json`` under ``out_dir``; returns the question file.
    Files of an earlier world there are replaced only with ``overwrite`` and only if its world.json (written
    first) says this function wrote them."""
    root = Path(out_dir)
    images = [f"images/{cat}/{k:02d}.png" for cat in categories for k in range(1, pairs_per_category + 1)]
    found = [name for name in ("questions.json", "world.json", *images) if (root / name).exists()]
    check_replace(root, found, marker="world.json", generator=MMR_GENERATOR, overwrite=overwrite)
    meta = {"generator": MMR_GENERATOR, "seed": seed, "pairs_per_category": pairs_per_category,
            "image_size": image_size, "categories": list(categories), "inject_quirks": inject_quirks}
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "world.json").write_text(json.dumps(meta, indent=2) + "\n")  # first: it marks the folder as ours
    rng = np.random.default_rng(seed)
    rows: list[dict] = []
    for cat in categories:
        for k in range(1, pairs_per_category + 1):
            pid = f"{cat}/{k:02d}"
            scene = _scene_for(cat, rng)
            img = root / "images" / f"{pid}.png"
            img.parent.mkdir(parents=True, exist_ok=True)
            render_scene(scene, image_size=image_size, rng=rng).save(img)
            rows += make_pair(cat, scene, rng, pid, f"{pid}.png")
    if inject_quirks:
        rows = add_quirks(rows)
    qfile = root / "questions.json"
    qfile.write_text(json.dumps(rows, indent=2) + "\n")
    return qfile


QUIRKS = ("options_inline", "missing_dot", "out_of_order", "stray_spaces")


def apply_quirk(question: str, kind: str) -> str:
    """Rewrite a clean ``stem\\nA. ..\\nB. ..`` question the way the real files sometimes are."""
    stem, *opts = question.split("\n")
    if kind == "options_inline":
        return stem + " " + " ".join(opts)
    if kind == "missing_dot":
        return "\n".join([stem] + [o.replace(". ", " ", 1) if o.startswith("B.") else o for o in opts])
    if kind == "out_of_order":
        return "\n".join([stem] + opts[:1] + opts[1:][::-1])
    if kind == "stray_spaces":
        return "\n".join([stem + " "] + [" " + o.replace(". ", ".  ", 1) + " " for o in opts])
    raise ValueError(f"unknown quirk {kind!r}; one of {QUIRKS}")


def add_quirks(rows: list[dict]) -> list[dict]:
    """Apply each quirk to a few rows and turn the last pair into a POS/POS anomaly (like v1's)."""
    out = [dict(r) for r in rows]
    for i, r in enumerate(out[:-2]):
        if i % 3 == 0:
            r["question"] = apply_quirk(r["question"], QUIRKS[(i // 3) % len(QUIRKS)])
    out[-1]["question_type"] = out[-2]["question_type"] = "POS"
    return out
