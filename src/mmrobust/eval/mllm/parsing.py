"""Answer parsers: model reply -> option letter, or ``None`` when no letter can be read.

``None`` means *unparseable*: it is recorded and counted as such and scores as not correct; no
parser ever invents a letter. Registered in ``mmrobust.registry.PARSERS``:

- ``official``: exactly the reference MMR rule (text before the first ``'.'``, commas turned into
  spaces, split on single spaces, then the first of A, B, C, D present as a whole token, in that
  priority, so ``"B or A"`` reads as A and ``"A cat"`` reads as A).
- ``strict``: the reply must *start* with one option letter: ``A``, ``A.``, ``A) text``, ``(A) text``.
- ``lenient``: also ``(B)``, ``**C**``, ``Answer: B``, lower case ``b``, a letter on its own line, one
  unambiguous stand-alone letter, or a reply that quotes exactly one option's text.

Example::

    from mmrobust.registry import PARSERS
    PARSERS.get("official")("B. It is a circle.")   # -> "B"
"""
from __future__ import annotations

import re
from typing import Callable, Mapping, Optional

from mmrobust.registry import PARSERS

LETTERS = ("A", "B", "C", "D")
Parser = Callable[..., Optional[str]]


@PARSERS.register("official")
def parse_official(text: str, options: Mapping[str, str] | None = None) -> str | None:
    """The reference rule, byte for byte (``options`` is ignored, as the reference does)."""
    if text.find(".") != -1:
        text = text.split(".")[0]
    words = text.replace(",", " ").split(" ")
    for letter in LETTERS:
        if letter in words:
            return letter
    return None


_STRICT = re.compile(r"\(([A-D])\)(?:[\s.:,].*)?|([A-D])(?:[.:)](?:.*))?", re.S)


@PARSERS.register("strict")
def parse_strict(text: str, options: Mapping[str, str] | None = None) -> str | None:
    """A letter first and alone: ``"C"``, ``"C."``, ``"C) text"``, ``"(C) text"``; nothing else."""
    m = _STRICT.fullmatch(text.strip())
    if m is None:
        return None
    letter = m.group(1) or m.group(2)
    return letter if options is None or letter in options else None


_MARKUP = re.compile(r"[*_`#>]+")
_BRACKET = r"[\s(\[{<'\"]*"
_CLOSE = r"[\s)\]}>'\".:,!]*"
_ALONE = re.compile(_BRACKET + r"([A-Da-d])" + _CLOSE)
_KEYWORD = re.compile(
    r"\b(?:answer|option|choice)(?:\s+is)?\s*[:：=\-]?\s*[(\[]?([A-D]\b|[a-d](?=\s*(?:$|[.,;:)\]])))", re.I
)
_LEADING = re.compile(r"^\s*\(?([A-D])(?:[.):]|\s+[-–—]\s)")
_PAREN = re.compile(r"[(\[]([A-Da-d])[)\]]")
_TOKEN = re.compile(r"(?<![\w'])([A-D])(?![\w'])")


@PARSERS.register("lenient")
def parse_lenient(text: str, options: Mapping[str, str] | None = None) -> str | None:
    """Try, in order: whole reply is a letter; ``answer/option/choice (is) X``; a line that is only a
    letter; a leading ``X.``/``X)``; one distinct bracketed letter; one distinct stand-alone capital
    letter (an article ``A`` before a lower-case word does not count); the text of exactly one option."""
    s = _MARKUP.sub("", text).replace("（", "(").replace("）", ")").strip()
    valid = tuple(options) if options else LETTERS
    for rule in (_whole, _keyword, _own_line, _leading, _bracketed, _standalone):
        letter = rule(s)
        if letter is not None:
            letter = letter.upper()
            return letter if letter in valid else None
    return _by_option_text(s, options) if options else None


def _whole(s: str) -> str | None:
    m = _ALONE.fullmatch(s)
    return m.group(1) if m else None


def _keyword(s: str) -> str | None:
    found = {m.group(1).upper() for m in _KEYWORD.finditer(s)}
    return found.pop() if len(found) == 1 else None


def _own_line(s: str) -> str | None:
    found = {m.group(1).upper() for line in s.splitlines() if (m := _ALONE.fullmatch(line))}
    return found.pop() if len(found) == 1 else None


def _leading(s: str) -> str | None:
    m = _LEADING.match(s)
    return m.group(1) if m else None


def _bracketed(s: str) -> str | None:
    found = {m.group(1).upper() for m in _PAREN.finditer(s)}
    return found.pop() if len(found) == 1 else None


def _standalone(s: str) -> str | None:
    found = set()
    for m in _TOKEN.finditer(s):
        after = s[m.end():m.end() + 2]
        if m.group(1) == "A" and re.match(r"\s[a-z]", after):  # "A cat", an article
            continue
        found.add(m.group(1))
    return found.pop() if len(found) == 1 else None


def _norm(s: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", s.lower()).split())


def _by_option_text(s: str, options: Mapping[str, str]) -> str | None:
    reply = _norm(s)
    if not reply:
        return None
    exact = [k for k, v in options.items() if _norm(v) == reply]
    if len(exact) == 1:
        return exact[0]
    inside = [k for k, v in options.items() if len(_norm(v)) >= 3 and _norm(v) in reply]
    return inside[0] if len(inside) == 1 else None


def get_parser(name: str) -> Parser:
    """The registered parser ``name`` (``official``, ``strict``, ``lenient``, or one you registered)."""
    return PARSERS.get(name)
