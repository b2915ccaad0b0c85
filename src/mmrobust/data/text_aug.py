"""Seeded EDA text augmentation for CleanCLIP's text views (Wei & Zou 2019, "EDA: Easy Data
Augmentation Techniques for Boosting Performance on Text Classification Tasks", EMNLP).

One operation per caption, chosen uniformly at random: synonym replacement (SR), random insertion
(RI), random swap (RS) or random deletion (RD), with strength ``alpha`` (default 0.1, as CleanCLIP):
SR/RI/RS change ``n = max(1, int(alpha * words))`` words, RD drops each word with probability
``alpha``. Like the reference EDA, captions are lowercased and stripped of punctuation first.
Synonyms come from a small built-in table of common caption words (no WordNet download), so
SR/RI are no-ops on captions without table words.

All randomness goes through an explicit ``random.Random``; the global RNG is never touched::

    eda("a photo of a small red circle.", rng=random.Random(0))
    augment_captions(captions, seed=0)
    # per-sample and per-epoch streams in a Dataset: random.Random(f"{seed}:{epoch}:{index}")
"""
from __future__ import annotations

import random
import re
from typing import Callable, Sequence

from mmrobust.errors import ConfigError

# Groups of interchangeable words. Kept free of clashes between class names of the synthetic
# world (e.g. "circle" and "ring" are both classes, so they are not synonyms here).
_SYNONYM_GROUPS: tuple[tuple[str, ...], ...] = (
    ("photo", "photograph", "picture", "image", "snapshot", "shot"),
    ("drawing", "sketch", "illustration", "rendering"),
    ("drawn", "sketched", "rendered", "painted"),
    ("small", "little", "tiny", "mini"), ("large", "big", "huge", "giant"), ("medium", "average", "moderate"),
    ("red", "crimson", "scarlet"), ("blue", "azure", "navy"), ("green", "emerald", "lime"),
    ("yellow", "golden", "lemon"), ("orange", "tangerine", "amber"), ("purple", "violet", "lilac"),
    ("pink", "rose", "magenta"), ("brown", "chocolate", "umber"), ("black", "ebony", "jet"),
    ("white", "ivory", "snowy"), ("gray", "grey", "ashen"), ("teal", "cyan", "turquoise"),
    ("background", "backdrop", "setting"), ("center", "middle", "centre"),
    ("top", "upper"), ("bottom", "lower"), ("corner", "edge"),
    ("simple", "plain", "basic"), ("shape", "form", "figure"), ("object", "item", "thing"),
    ("bright", "vivid", "brilliant"), ("dark", "dim", "shadowy"), ("light", "pale", "soft"),
    ("beautiful", "pretty", "lovely"), ("old", "aged", "elderly"), ("young", "youthful"),
    ("happy", "cheerful", "glad"), ("empty", "vacant", "bare"), ("tall", "high", "lofty"),
    ("many", "numerous", "several"), ("near", "close", "beside"), ("view", "scene", "sight"),
    ("man", "guy", "gentleman"), ("woman", "lady"), ("person", "individual", "someone"),
    ("people", "folks", "persons"), ("child", "kid", "youngster"), ("dog", "puppy", "hound"),
    ("cat", "kitty", "feline"), ("car", "automobile", "vehicle"), ("street", "road", "avenue"),
    ("house", "home", "residence"), ("sitting", "seated", "resting"), ("standing", "upright"),
    ("walking", "strolling", "wandering"), ("running", "jogging", "racing"),
    ("holding", "carrying", "grasping"), ("looking", "gazing", "staring"), ("eating", "consuming", "munching"),
    ("showing", "depicting", "displaying"), ("shows", "depicts", "displays"),
)
SYNONYMS: dict[str, tuple[str, ...]] = {
    w: tuple(o for o in group if o != w) for group in _SYNONYM_GROUPS for w in group
}
STOPWORDS = frozenset(
    "a an the of in on at to for from by and or but is are was were be been it its this that these those "
    "there here with as into onto over under up down out off some any each".split()
)
_WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)*")


def words_of(caption: str) -> list[str]:
    """Lowercased words, punctuation removed (EDA's preprocessing)."""
    return _WORD.findall(caption.lower())


def _synonyms(word: str) -> tuple[str, ...]:
    return SYNONYMS.get(word, ())


def synonym_replacement(words: list[str], n: int, rng: random.Random) -> list[str]:
    """Replace up to ``n`` distinct non-stopwords that have synonyms with a random synonym."""
    out = list(words)
    pool = sorted({w for w in words if w not in STOPWORDS and _synonyms(w)})
    rng.shuffle(pool)
    for w in pool[:n]:
        syn = rng.choice(_synonyms(w))
        out = [syn if x == w else x for x in out]
    return out


def random_insertion(words: list[str], n: int, rng: random.Random) -> list[str]:
    """Insert a synonym of a random word at a random position, ``n`` times."""
    out = list(words)
    for _ in range(n):
        with_syn = [w for w in out if _synonyms(w)]
        if not with_syn:
            break
        out.insert(rng.randrange(len(out) + 1), rng.choice(_synonyms(rng.choice(with_syn))))
    return out


def random_swap(words: list[str], n: int, rng: random.Random) -> list[str]:
    """Swap two random positions holding different words (up to 10 tries each), ``n`` times."""
    out = list(words)
    if len(set(out)) < 2:
        return out
    for _ in range(n):
        for _try in range(10):
            i, j = rng.sample(range(len(out)), 2)
            if out[i] != out[j]:
                out[i], out[j] = out[j], out[i]
                break
    return out


def random_deletion(words: list[str], p: float, rng: random.Random) -> list[str]:
    """Drop each word with probability ``p``; keep one random word if all would go."""
    if len(words) <= 1:
        return list(words)
    out = [w for w in words if rng.random() >= p]
    return out or [rng.choice(words)]


def _n(alpha: float, words: list[str]) -> int:
    return max(1, int(alpha * len(words)))


# name -> f(words, alpha, rng); EDA's four operations at strength alpha
OPS: dict[str, Callable[[list[str], float, random.Random], list[str]]] = {
    "rd": lambda w, a, r: random_deletion(w, a, r),
    "ri": lambda w, a, r: random_insertion(w, _n(a, w), r),
    "rs": lambda w, a, r: random_swap(w, _n(a, w), r),
    "sr": lambda w, a, r: synonym_replacement(w, _n(a, w), r),
}


def eda(caption: str, *, rng: random.Random, alpha: float = 0.1, op: str | None = None) -> str:
    """One EDA operation (chosen with ``rng`` unless ``op`` is one of "sr", "ri", "rs", "rd").

    Returns the augmented, lowercased caption; a caption without words is returned unchanged.
    Non-empty input gives non-empty output.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ConfigError(f"EDA alpha must be in [0, 1] (0.1 is CleanCLIP's), got {alpha}")
    name = op if op is not None else rng.choice(sorted(OPS))
    if name not in OPS:
        raise ConfigError(f"unknown EDA op {name!r}; choose one of {', '.join(sorted(OPS))}")
    words = words_of(caption)
    if not words:
        return caption
    return " ".join(OPS[name](words, alpha, rng))


def augment_captions(captions: Sequence[str], *, seed: int, alpha: float = 0.1) -> list[str]:
    """EDA views of ``captions``, one op each, from one ``random.Random(seed)`` stream."""
    rng = random.Random(seed)
    return [eda(c, rng=rng, alpha=alpha) for c in captions]
