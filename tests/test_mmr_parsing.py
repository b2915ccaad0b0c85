"""Table tests for the MMR answer parsers (DESIGN §3: official rule exactly; strict; lenient)."""
from __future__ import annotations

import pytest

from mmrobust.registry import PARSERS

OPTS = {"A": "It is a circle.", "B": "It is a square.", "C": "It is a star.", "D": "It is a ring."}

# (reply, expected letter or None). The official rule: text before the first '.', commas -> spaces,
# split on single spaces, first of A, B, C, D present as a whole token in that priority.
OFFICIAL = [
    ("A", "A"),
    ("B.", "B"),
    ("C. It is a star.", "C"),
    ("The answer is D.", "D"),
    ("The answer is C", "C"),
    ("B or A", "A"),                      # priority A > B, not position
    ("D, C", "C"),                        # commas split, priority C > D
    ("A,B", "A"),
    ("It is B. A is wrong.", "B"),        # only the text before the first '.'
    (". A", None),                        # nothing before the first '.'
    ("3.5 apples, answer B", None),       # '.' inside a number cuts the reply
    ("(A)", None),                        # not a whole token
    ("**B**", None),
    ("a", None),                          # case-sensitive
    ("Answer: C", "C"),
    ("A cat is on the mat.", "A"),        # the article counts: a known quirk of the rule
    ("ABC", None),
    ("B\nbecause it is a square", None),  # newline is not a separator
    ("C\n", None),
    ("", None),
    ("  D  ", "D"),
    ("I choose B, not D", "B"),
    ("Option B", "B"),
    ("B:", None),
    ("B)", None),
    ("E", None),
    ("A.B", "A"),
    ("D's", None),
    ("C.D", "C"),
    ("Neither A nor B", "A"),
]

STRICT = [
    ("A", "A"),
    ("B.", "B"),
    ("C. It is a star.", "C"),
    ("(D)", "D"),
    ("(D) It is a ring.", "D"),
    ("(B).", "B"),
    ("A)", "A"),
    ("B: It is a square", "B"),
    ("  C  ", "C"),
    ("B.\nBecause the shape has four corners.", "B"),
    ("C.D", "C"),
    ("The answer is D.", None),
    ("a", None),
    ("**B**", None),
    ("B or A", None),
    ("A cat", None),
    ("AB", None),
    ("", None),
    ("Answer: C", None),
    ("E", None),
    ("E.", None),
    ("B\nbecause", None),
    ("[C]", None),
    ("(E)", None),
    ("C,", None),
    ("I think C.", None),
]

LENIENT = [
    ("(B)", "B"),
    ("**C**", "C"),
    ("Answer: B", "B"),
    ("answer: b", "B"),
    ("b", "B"),
    ("  c.  ", "C"),
    ("[A]", "A"),
    ("A", "A"),
    ("The answer is (D).", "D"),
    ("My answer is C.", "C"),
    ("The correct option is C because it has five points.", "C"),
    ("Option D", "D"),
    ("Choice: (b)", "B"),
    ("Answer:\n\nB", "B"),
    ("Let me look.\nC\n", "C"),           # a letter on its own line
    ("B. It is a square.", "B"),
    ("A) The circle", "A"),
    ("It is a square.", "B"),             # quotes exactly one option's text
    ("I believe it is a star", "C"),
    ("I think it's B, not A.", None),     # two letters: ambiguous (official says A)
    ("A cat is on the mat.", None),       # article, not an answer
    ("It's option B rather than option C", None),
    ("B or C", None),
    ("", None),
    ("I don't know", None),
    ("E", None),
    ("answer: e", None),
]


@pytest.mark.parametrize("reply,expected", OFFICIAL)
def test_official(reply: str, expected: str | None) -> None:
    assert PARSERS.get("official")(reply, OPTS) == expected


@pytest.mark.parametrize("reply,expected", STRICT)
def test_strict(reply: str, expected: str | None) -> None:
    assert PARSERS.get("strict")(reply, OPTS) == expected


@pytest.mark.parametrize("reply,expected", LENIENT)
def test_lenient(reply: str, expected: str | None) -> None:
    assert PARSERS.get("lenient")(reply, OPTS) == expected


def test_tables_are_big_enough() -> None:
    assert min(len(OFFICIAL), len(STRICT), len(LENIENT)) >= 25


def test_letters_outside_the_options_are_not_answers() -> None:
    three = {"A": "x", "B": "y", "C": "z"}
    assert PARSERS.get("strict")("D", three) is None
    assert PARSERS.get("lenient")("D", three) is None
    assert PARSERS.get("official")("D", three) == "D"  # the reference ignores the options


def test_official_matches_a_literal_transcription_of_the_reference_rule() -> None:
    def reference(text: str) -> str:  # the rule as described in DESIGN §3, E = no answer
        if text.find(".") != -1:
            text = text.split(".")[0]
        words = text.replace(",", " ").split(" ")
        return next((x for x in "ABCD" if x in words), "E")

    replies = [r for r, _ in OFFICIAL + STRICT + LENIENT]
    for r in replies:
        got = PARSERS.get("official")(r)
        assert (got or "E") == reference(r), r


def test_registry_lists_the_three_parsers() -> None:
    assert {"official", "strict", "lenient"} <= set(PARSERS.list())
