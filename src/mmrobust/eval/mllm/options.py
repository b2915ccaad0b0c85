"""Split an MMR question into its stem and lettered options, tolerating the real files' quirks.

The published files write options as ``"\\nA. text"`` but also: all options on one line
(``"...? A. x B. y C. z D. w"``), a letter without its dot (``"B The Merchant of Venice"``), options
out of order (``A, D, C, B``) and stray spaces (``" A.  text"``). Each tolerated quirk is named in
``ParsedOptions.quirks`` so a loader can count them instead of silently rewriting the data.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

LETTERS = ("A", "B", "C", "D")
_LINE_OPTION = re.compile(r"^(\s*)([A-D])(?:\s*([.)：:])|\s)\s*(.*?)\s*$")
_INLINE_PUNCT = r"(?<!\S){}\s*[.)：:]"
_INLINE_BARE = r"(?<!\S){}\s+(?=\S)"


@dataclass(frozen=True)
class ParsedOptions:
    """Question stem, options in file order as (letter, text), and the quirks met while parsing."""

    stem: str
    options: tuple[tuple[str, str], ...]
    quirks: frozenset[str]

    @property
    def letters(self) -> tuple[str, ...]:
        return tuple(letter for letter, _ in self.options)

    def as_dict(self) -> dict[str, str]:
        return dict(self.options)


def parse_options(question: str) -> ParsedOptions:
    """Parse ``question`` into stem + options; see the module docstring for the quirks handled."""
    lines = question.split("\n")
    parsed = _parse_lines(lines)
    if parsed is None:
        parsed = _parse_inline(question)
    if parsed is None:
        return ParsedOptions(question.strip(), (), frozenset({"options_unparsed"}))
    stem, options, quirks = parsed
    if "  " in question or any(ln != ln.strip() for ln in lines if ln.strip()):
        quirks.add("stray_spaces")
    letters = [letter for letter, _ in options]
    if letters != sorted(letters):
        quirks.add("out_of_order")
    if len(set(letters)) != len(letters):
        quirks.add("duplicate_letter")
    return ParsedOptions(stem, tuple(options), frozenset(quirks))


def _parse_lines(lines: list[str]) -> tuple[str, list[tuple[str, str]], set[str]] | None:
    """Options one per line: the trailing run of lines that start with a letter marker."""
    body = list(lines)
    while body and not body[-1].strip():
        body.pop()
    start = len(body)
    while start > 1 and _LINE_OPTION.match(body[start - 1]):
        start -= 1
    if len(body) - start < 2:
        return None
    quirks: set[str] = set()
    options = []
    for line in body[start:]:
        m = _LINE_OPTION.match(line)
        assert m is not None
        _, letter, punct, text = m.groups()
        if not punct:
            quirks.add("missing_dot")
        options.append((letter, text))
    return "\n".join(body[:start]).strip(), options, quirks


def _parse_inline(question: str) -> tuple[str, list[tuple[str, str]], set[str]] | None:
    """Options on one line: find markers A, B, C, D in order, preferring ``X.`` over a bare ``X``."""
    text = question.strip()
    quirks = {"options_inline"}
    marks: list[tuple[str, int, int]] = []  # (letter, marker start, text start)
    pos = 0
    for letter in LETTERS:
        m = re.compile(_INLINE_PUNCT.format(letter)).search(text, pos)
        if m is None:
            m = re.compile(_INLINE_BARE.format(letter)).search(text, pos)
            if m is None:
                break
            quirks.add("missing_dot")
        marks.append((letter, m.start(), m.end()))
        pos = m.end()
    if len(marks) < 2:
        return None
    options = []
    for i, (letter, _, begin) in enumerate(marks):
        end = marks[i + 1][1] if i + 1 < len(marks) else len(text)
        options.append((letter, text[begin:end].strip()))
    return text[: marks[0][1]].strip(), options, quirks
