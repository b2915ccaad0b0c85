"""Seeded EDA: determinism, no global RNG side effects, non-empty output, exactly one op."""
from __future__ import annotations

import random
from collections import Counter

import pytest

from mmrobust.data.text_aug import (
    OPS,
    STOPWORDS,
    SYNONYMS,
    augment_captions,
    eda,
    random_deletion,
    random_insertion,
    random_swap,
    synonym_replacement,
    words_of,
)
from mmrobust.errors import ConfigError

CAPTIONS = [
    "a photo of a small red circle.",
    "two blue stars in the top left.",
    "there is a green hexagon on gray.",
    "An image of a large yellow square drawn in white, on a black background with a tiny pink ring",
    "a simple drawing of a triangle.",
    "dog",
    "!!!",
    "a man walking a dog on the street",
]


def _is_subsequence(short: list[str], long: list[str]) -> bool:
    it = iter(long)
    return all(w in it for w in short)


def _explained_by_one_op(orig: list[str], out: list[str], alpha: float = 0.1) -> set[str]:
    """Which EDA ops could have turned ``orig`` into ``out``."""
    n = max(1, int(alpha * len(orig)))
    ops = set()
    if len(out) == len(orig):
        diff = [(a, b) for a, b in zip(orig, out) if a != b]
        if all(b in SYNONYMS.get(a, ()) for a, b in diff) and len({a for a, _ in diff}) <= n:
            ops.add("sr")
        if Counter(out) == Counter(orig) and len(diff) <= 2 * n:
            ops.add("rs")
    if len(out) == len(orig) + n and _is_subsequence(orig, out):
        ops.add("ri")
    if 1 <= len(out) <= len(orig) and _is_subsequence(out, orig):
        ops.add("rd")
    return ops


def test_deterministic_given_seed_and_varies_with_seed():
    assert augment_captions(CAPTIONS, seed=3) == augment_captions(CAPTIONS, seed=3)
    runs = {tuple(augment_captions(CAPTIONS, seed=s)) for s in range(5)}
    assert len(runs) > 1
    assert eda(CAPTIONS[3], rng=random.Random("0:1:2")) == eda(CAPTIONS[3], rng=random.Random("0:1:2"))


def test_no_global_rng_side_effects():
    random.seed(1234)
    state = random.getstate()
    augment_captions(CAPTIONS * 5, seed=0)
    eda(CAPTIONS[0], rng=random.Random(1))
    assert random.getstate() == state


def test_output_is_non_empty_and_one_op_explains_it():
    seen_ops = set()
    for seed in range(200):
        for cap, out in zip(CAPTIONS, augment_captions(CAPTIONS, seed=seed)):
            assert isinstance(out, str) and out.strip()
            words = words_of(cap)
            if not words:
                assert out == cap
                continue
            ops = _explained_by_one_op(words, out.split())
            assert ops, f"{cap!r} -> {out!r} is not one EDA op"
            if len(ops) == 1:
                seen_ops |= ops
    assert seen_ops == set(OPS), "every op must get chosen"


@pytest.mark.parametrize("op", sorted(OPS))
def test_each_op_signature(op):
    cap = CAPTIONS[3]
    words = words_of(cap)
    n = max(1, int(0.1 * len(words)))
    for seed in range(30):
        out = eda(cap, rng=random.Random(seed), op=op).split()
        assert op in _explained_by_one_op(words, out)
        if op == "ri":
            assert len(out) == len(words) + n
        if op in ("sr", "rs"):
            assert len(out) == len(words) and out != words


def test_op_functions_directly():
    rng = random.Random(0)
    words = ["a", "small", "red", "circle", "on", "black"]
    sr = synonym_replacement(words, 2, rng)
    assert sum(a != b for a, b in zip(words, sr)) == 2 and all(w not in STOPWORDS for w, s in zip(words, sr) if w != s)
    assert len(random_insertion(words, 3, rng)) == 9
    assert sorted(random_swap(words, 1, rng)) == sorted(words)
    assert random_deletion(words, 1.0, rng) in [[w] for w in words]  # never empty
    assert random_deletion(["dog"], 0.9, rng) == ["dog"]
    assert random_insertion(["zzz", "qqq"], 1, rng) == ["zzz", "qqq"]  # no synonyms: no-op, like EDA


def test_synonym_table_is_symmetric_and_keeps_classes_apart():
    for w, syns in SYNONYMS.items():
        assert w not in syns and all(w in SYNONYMS[s] for s in syns)
    try:
        from mmrobust.world.shapes import SHAPES
    except ImportError:  # the synthetic world is optional for this test
        SHAPES = ("circle", "ring", "semicircle", "square", "bar", "star", "cross", "diamond", "hexagon", "triangle")
    for shape in SHAPES:
        assert not set(SYNONYMS.get(shape, ())) & set(SHAPES), f"{shape} would be swapped for another class"


def test_bad_arguments():
    with pytest.raises(ConfigError, match="alpha"):
        eda("a cat", rng=random.Random(0), alpha=2.0)
    with pytest.raises(ConfigError, match="op"):
        eda("a cat", rng=random.Random(0), op="xx")
