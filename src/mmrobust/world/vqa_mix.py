"""The baseline MLLM training mix: what web data teaches, over fresh synthetic scenes.

Per image (a coloured-shape scene from :mod:`mmrobust.world.shapes`) the mix holds, in the instruction
JSONL format of :mod:`mmrobust.data.instructions` (``train.jsonl`` + ``images/NNNNNN.png``):

- ``caption``: "Describe the picture." -> one of the world's captions;
- ``vqa``: a short-answer question about the image's category attribute, with LLaVA-1.5's short-answer
  instruction ("What shape is in the picture?\nAnswer the question using a single word or phrase." -> "circle");
- ``mc``: a straightforward multiple-choice question (the MMR POS form, "What colour is the circle in
  the picture?" with options "It is red." ...);
- ``mc-premise``: a multiple-choice question that names another attribute in its stem, as leading
  questions do, but whose premise is TRUE ("What colour is the circle in the picture?" asked of a
  circle, options "The circle is red." ...). Web data carries true premises: nothing here ever asks
  the model to reject one, which is what the MMR leading questions then exploit.

Multiple-choice questions end with MMR's official instruction (``OFFICIAL_SUFFIX``), so they read
like the benchmark's prompts; answers are ``"X."`` (``answer_format="letter"``, the default: all of the
row's loss falls on choosing the letter) or ``"X. text"`` (``"letter+text"``), which the official parser
reads as ``X``; or, with ``"text"``, the right option's text alone after the ``option-text`` prompt's
instruction (``TEXT_SUFFIX``), which the lenient parser maps to its letter. Right letters follow a shuffled, exactly balanced A-D schedule per kind. ``id``: ``mix/NNNNNN/<kind>``;
``meta``: ``kind``, ``category``, ``scene`` and, on multiple-choice rows, ``letter`` and ``options``.
Scenes come from ``SeedSequence([seed, MIX_STREAM])``, apart from the MMR evaluation world's
``default_rng(seed)`` and the MMR training set's stream.

Example::

    path = generate_vqa_mix("runs/mix", n_images=2000, seed=0)   # runs/mix/train.jsonl
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from mmrobust.errors import DataError
from mmrobust.jsonio import write_canonical_jsonl
from mmrobust.values import SEED_MAX, check_int
from mmrobust.world.mmr import QA, pick_others, plural, scene_facts, with_article
from mmrobust.prompts import OFFICIAL_SUFFIX, TEXT_SUFFIX  # MMR's own instructions
from mmrobust.world.mmr_train import CATEGORIES, draw_scene, NUMBER_WORDS, balanced_letters
from mmrobust.world.shapes import COLORS, POSITIONS, SHAPES, Scene, caption_for, image_set

MIX_STREAM = 0x6D697876  # "mixv": the mix's seed stream
KINDS = ("caption", "vqa", "mc", "mc-premise")
ANSWER_FORMATS = ("letter", "letter+text", "text")
LETTERS = "ABCD"
# LLaVA-1.5's short-answer instruction (eval.lvlm.vqa.VQA_PROMPT), so the VQA evaluation asks as the mix does
VQA_SUFFIX = "\nAnswer the question using a single word or phrase."
SHORT = {  # category -> (short question, scene attribute answered)
    "attribute/shape": ("What shape is in the picture?", "shape"),
    "attribute/color&texture": ("What colour is the {shape} in the picture?", "color"),
    "attribute/number": ("How many {shapes} are in the picture?", "count"),
    "attribute/position": ("Where is the {shape} in the picture?", "position"),
}


def straightforward(category: str, s: Scene, rng: np.random.Generator) -> QA:
    """The MMR POS question of ``category`` for scene ``s``; the right option first."""
    if category == "attribute/shape":
        return QA(f"What shape is the {s.color} object in the picture?",
                  tuple(f"It is {with_article(x)}." for x in [s.shape] + pick_others(rng, SHAPES, {s.shape}, 3)))
    if category == "attribute/color&texture":
        return QA(f"What colour is the {s.shape} in the picture?",
                  tuple(f"It is {c}." for c in [s.color] + pick_others(rng, COLORS, {s.color}, 3)))
    if category == "attribute/number":
        others = [int(k) for k in rng.choice([k for k in range(1, 5) if k != s.count], size=3, replace=False)]
        return QA(f"How many {plural(s.shape)} are in the picture?",
                  tuple(f"There {'is' if k == 1 else 'are'} {NUMBER_WORDS[k]}." for k in [s.count] + others))
    return QA(f"Where is the {s.shape} in the picture?",
              tuple(f"It is in the {p}." for p in [s.position] + pick_others(rng, POSITIONS, {s.position}, 3)))


def with_true_premise(category: str, s: Scene, rng: np.random.Generator) -> QA:
    """The leading form of ``category``'s question (its stem names another attribute), premise true."""
    colours = [s.color] + pick_others(rng, COLORS, {s.color}, 3)
    if category == "attribute/shape":  # the premise names the shape, the question asks the colour
        return QA(f"What colour is the {s.shape} in the picture?", tuple(f"The {s.shape} is {c}." for c in colours))
    if category == "attribute/color&texture":  # names the colour, asks the shape
        shapes = [s.shape] + pick_others(rng, SHAPES, {s.shape}, 3)
        return QA(f"What shape is the {s.color} object in the picture?",
                  tuple(f"The {s.color} object is {with_article(x)}." for x in shapes))
    if category == "attribute/number":  # names the count, asks the colour
        things = f"{NUMBER_WORDS[s.count]} {plural(s.shape) if s.count > 1 else s.shape}"
        verb = "are" if s.count > 1 else "is"
        return QA(f"What colour {verb} the {things} in the picture?", tuple(f"The {things} {verb} {c}." for c in colours))
    return QA(f"What colour is the {s.shape} in the {s.position} of the picture?",  # names the position
              tuple(f"The {s.shape} in the {s.position} is {c}." for c in colours))


def lettered(q: QA, letter: str, rng: np.random.Generator, suffix: str = OFFICIAL_SUFFIX) -> tuple[str, dict[str, str]]:
    """Question text (stem, ``X. text`` lines, the instruction ``suffix``) with the right option at ``letter``."""
    rest = [q.options[int(j)] for j in rng.permutation(np.arange(1, len(q.options)))]
    slot = LETTERS.index(letter)
    options = dict(zip(LETTERS, rest[:slot] + [q.options[0]] + rest[slot:]))
    return q.stem + "\n" + "\n".join(f"{k}. {t}" for k, t in options.items()) + suffix, options


def _short_answer(category: str, s: Scene) -> tuple[str, str]:
    question, attr = SHORT[category]
    value = getattr(s, attr)
    answer = NUMBER_WORDS[value] if attr == "count" else value
    return question.format(shape=s.shape, shapes=plural(s.shape)) + VQA_SUFFIX, answer


def _extra_categories(category: str, s: Scene, n: int) -> list[str]:
    """Up to ``n`` categories other than ``category`` that scene ``s`` answers unambiguously (no position
    question when the scene holds several objects), in CATEGORIES order after ``category``."""
    k = CATEGORIES.index(category)
    others = [CATEGORIES[(k + j) % len(CATEGORIES)] for j in range(1, len(CATEGORIES))]
    return [c for c in others if not (c == "attribute/position" and s.count > 1)][:n]


def _mc_answer(letter: str, options: dict[str, str], answer_format: str) -> str:
    """The answer of a multiple-choice row: ``X.``, ``X. text`` or the option's text alone."""
    return {"letter": f"{letter}.", "letter+text": f"{letter}. {options[letter]}", "text": options[letter]}[answer_format]


def _mc_row(rid: str, image: str, qa: QA, letter: str, rng: np.random.Generator, answer_format: str,
            meta: dict[str, Any]) -> dict[str, Any]:
    suffix = TEXT_SUFFIX if answer_format == "text" else OFFICIAL_SUFFIX
    q, options = lettered(qa, letter, rng, suffix)
    return {"id": rid, "image": image, "question": q, "answer": _mc_answer(letter, options, answer_format),
            "meta": {**meta, "letter": letter, "options": options}}


def _rows(i: int, category: str, s: Scene, image: str, kinds: tuple[str, ...], letters: dict[str, str],
          rng: np.random.Generator, answer_format: str, mc_per_image: int = 1,
          vqa_per_image: int = 1) -> list[dict[str, Any]]:
    base = f"mix/{i + 1:06d}"
    meta = {"category": category, "scene": scene_facts(s)}
    rows = []
    for kind in kinds:
        if kind == "mc" and mc_per_image > 1:  # extra straightforward rows in other categories: mc2, mc3, ...
            for j, cat in enumerate(_extra_categories(category, s, mc_per_image - 1), start=2):
                rows.append(_mc_row(f"{base}/mc{j}", image, straightforward(cat, s, rng), letters[f"mc{j}"], rng,
                                    answer_format, {"category": cat, "scene": scene_facts(s), "kind": "mc"}))
        if kind in ("mc", "mc-premise"):
            build = straightforward if kind == "mc" else with_true_premise
            rows.append(_mc_row(f"{base}/{kind}", image, build(category, s, rng), letters[kind], rng, answer_format,
                                {**meta, "kind": kind}))
            continue
        q, a = ("Describe the picture.", caption_for(s, rng)) if kind == "caption" else _short_answer(category, s)
        rows.append({"id": f"{base}/{kind}", "image": image, "question": q, "answer": a, "meta": {**meta, "kind": kind}})
        if kind == "vqa":  # extra short-answer rows in other categories: vqa2, vqa3, ...
            for j, cat in enumerate(_extra_categories(category, s, vqa_per_image - 1), start=2):
                q, a = _short_answer(cat, s)
                rows.append({"id": f"{base}/vqa{j}", "image": image, "question": q, "answer": a,
                             "meta": {"category": cat, "scene": scene_facts(s), "kind": "vqa"}})
    return rows


def generate_vqa_mix(out_dir: str | Path, *, n_images: int, seed: int, image_size: int = 32,
                     kinds: tuple[str, ...] = KINDS, categories: tuple[str, ...] = CATEGORIES,
                     answer_format: str = "letter", mc_per_image: int = 1, vqa_per_image: int = 1) -> Path:
    """Write ``images/``, ``train.jsonl`` and ``vqa_mix.json`` under ``out_dir``; returns ``train.jsonl``.
    Same arguments, same bytes. Categories cycle over the images; every image gets one row per kind.
    ``mc_per_image`` > 1 (with ``"mc"`` in ``kinds``) adds up to that many - 1 more straightforward
    multiple-choice rows per image, each in another category (ids ``.../mc2``, ``.../mc3``, ...);
    ``vqa_per_image`` likewise for short-answer rows (``.../vqa2``, ...)."""
    check_int("n_images", n_images, low=1, fix="ask for at least one image")
    check_int("seed", seed, low=0, high=SEED_MAX)
    check_int("image_size", image_size, low=8, high=1024)
    bad = [k for k in kinds if k not in KINDS] + [c for c in categories if c not in CATEGORIES]
    if bad or not kinds or not categories:
        raise DataError(f"unknown or no kinds/categories {bad}; kinds from {', '.join(KINDS)}, categories from "
                        f"{', '.join(CATEGORIES)}")
    if answer_format not in ANSWER_FORMATS:
        raise DataError(f"unknown answer_format {answer_format!r}; choose one of {', '.join(ANSWER_FORMATS)}")
    check_int("mc_per_image", mc_per_image, low=1, high=len(CATEGORIES))
    check_int("vqa_per_image", vqa_per_image, low=1, high=len(CATEGORIES))
    root = Path(out_dir)
    (root / "images").mkdir(parents=True, exist_ok=True)
    rng_scene, rng_q, rng_letters = (np.random.default_rng(s) for s in
                                     np.random.SeedSequence([seed, MIX_STREAM]).spawn(3))
    schedule = {k: balanced_letters(n_images, rng_letters) for k in ("mc", "mc-premise")}
    schedule.update({f"mc{j}": balanced_letters(n_images, rng_letters) for j in range(2, mc_per_image + 1)})
    rows: list[dict[str, Any]] = []
    for i in range(n_images):
        cat = categories[i % len(categories)]
        scene, image = draw_scene(i, cat, rng_scene, root, image_size)
        rows += _rows(i, cat, scene, image, kinds, {k: v[i] for k, v in schedule.items()}, rng_q, answer_format,
                      mc_per_image, vqa_per_image)
    out = root / "train.jsonl"
    write_canonical_jsonl(out, rows)
    meta = {"generator": "mmrobust.world.vqa_mix", "seed": seed, "stream": MIX_STREAM, "n_images": n_images,
            "image_size": image_size, "kinds": list(kinds), "categories": list(categories),
            "answer_format": answer_format, "mc_per_image": mc_per_image, "vqa_per_image": vqa_per_image,
            "premises": "true"}
    (root / "vqa_mix.json").write_text(json.dumps(meta, indent=2) + "\n")
    return out


VQA_STREAM = 0x76716176  # "vqav": the VQA evaluation questions' seed stream


def generate_vqa_questions(out_dir: str | Path, *, per_category: int, seed: int, image_size: int = 32,
                           categories: tuple[str, ...] = CATEGORIES) -> Path:
    """Held-out short-answer questions over fresh scenes in the VQA JSONL format of
    :mod:`mmrobust.eval.vqa` (``id``, ``image``, ``question`` without the instruction, ``answers``,
    ``group``): ``per_category`` per category, the mix's questions and answers. Writes ``questions.jsonl``
    + ``images/``; returns the file. Same arguments, same bytes."""
    check_int("per_category", per_category, low=1, fix="ask for at least one question per category")
    root, rng = image_set(out_dir, seed=seed, image_size=image_size, stream=VQA_STREAM)
    rows = []
    for i in range(per_category * len(categories)):
        cat = categories[i % len(categories)]
        scene, image = draw_scene(i, cat, rng, root, image_size)
        question, answer = _short_answer(cat, scene)
        rows.append({"id": f"vqa/{i + 1:06d}", "image": image, "question": question.removesuffix(VQA_SUFFIX),
                     "answers": [answer] * 10, "group": cat.split("/")[-1]})  # ten agreeing "humans", as VQAv2 has ten
    out = root / "questions.jsonl"
    write_canonical_jsonl(out, rows)
    return out
