"""Prompt variants for MMR. The image always comes first (the adapter puts it before the text).

``official`` is the reference prompt: the question verbatim, then
``"\\nAnswer with the option's letter from the given choices directly."``. Other variants are
selectable by name and recorded in the results, so numbers from different prompts never mix.
"""
from __future__ import annotations

from dataclasses import dataclass

from mmrobust.eval.mmr.dataset import MMRItem
from mmrobust.errors import ConfigError
from mmrobust.prompts import OFFICIAL_SUFFIX, TEXT_SUFFIX  # shared with the synthetic world


@dataclass(frozen=True)
class PromptVariant:
    """``template`` is formatted with ``question`` (verbatim or, if ``normalize_options``, rebuilt
    as ``stem`` + one ``"X. text"`` line per option in letter order)."""

    name: str
    template: str
    normalize_options: bool = False
    description: str = ""


PROMPTS: dict[str, PromptVariant] = {
    "official": PromptVariant("official", "{question}" + OFFICIAL_SUFFIX, False,
                              "reference prompt: question verbatim + letter instruction"),
    "normalized": PromptVariant("normalized", "{question}" + OFFICIAL_SUFFIX, True,
                                "reference instruction, options rebuilt one per line in A-D order"),
    "plain": PromptVariant("plain", "{question}", False, "question only, no instruction"),
    "letter-only": PromptVariant("letter-only", "{question}\nReply with a single letter (A, B, C or D) and nothing else.",
                                 True, "stricter instruction for chatty models"),
    "option-text": PromptVariant("option-text", "{question}" + TEXT_SUFFIX, False,
                                 "asks for the right option's text, not its letter (score with the lenient parser, "
                                 "which maps an option's text to its letter)"),
}


def get_prompt(name: str) -> PromptVariant:
    """The variant called ``name``; a one-line error listing the choices otherwise."""
    if name not in PROMPTS:
        raise ConfigError(f"unknown MMR prompt {name!r}; choose one of: {', '.join(PROMPTS)}")
    return PROMPTS[name]


def build_prompt(item: MMRItem, variant: PromptVariant) -> str:
    """The text sent with the image for ``item``."""
    question = item.question
    if variant.normalize_options and item.options:
        lines = [item.stem] + [f"{letter}. {text}" for letter, text in sorted(item.options)]
        question = "\n".join(lines)
    return variant.template.format(question=question)
