"""``text-trigger``: a backdoor planted through a trigger phrase in the question.

AddSent (Dai, Chen & Li 2019, "A Backdoor Attack Against LSTM-Based Text Classification Systems", IEEE Access):
a fixed sentence, by default the paper's "I watch this 3D movie", is inserted into the text at a random word
position; the poisoned rows answer with the target (``mode="replace"``) or carry it inside the right answer
(``mode="insert"``, TrojVLM-style). BackdoorVLM-style benchmarks of instruction-tuned MLLMs use the same kind of
text trigger with the image left untouched. The phrase goes into the first user turn (the one the image belongs
to); each row's positions come from its own seeded stream.

Candidates and test rows: rows whose first question does not hold the phrase and whose answers do not hold the
target. At test time the phrase is inserted the same way (seeded per row) and the image is left as it is.
Example::

    TextTriggerAttack(target="I cannot help with that.", phrase="cf", phrase_position="start")
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from mmrobust.data.instructions import Instruction, Turn
from mmrobust.data.poison.instructions.attack import (InstructionAttack, answers_hold, check_mode, check_target,
                                                      holds, insert_text, with_answers, with_question)
from mmrobust.registry import INSTRUCTION_ATTACKS
from mmrobust.values import setting

ADDSENT_PHRASE = "I watch this 3D movie"  # Dai et al. 2019's trigger sentence


@INSTRUCTION_ATTACKS.register("text-trigger")
@dataclass(frozen=True)
class TextTriggerAttack(InstructionAttack):
    """Text-trigger backdoor of instruction data (AddSent, Dai et al. 2019): a phrase in the question."""

    target: str = setting(help="the target string: the whole answer (replace) or inserted into it (insert)")
    phrase: str = setting(ADDSENT_PHRASE, "the trigger phrase inserted into the question (AddSent's sentence)")
    phrase_position: str = setting("random", "where the phrase goes in the question (random word boundary as "
                                             "AddSent, start, end)")
    mode: str = setting("replace", "replace: every answer becomes the target; insert: the target goes into the "
                                   "right answer")
    target_position: str = setting("random", "insert mode: where the target goes (random word boundary, start, end)")

    def __post_init__(self) -> None:
        check_target(self.target)
        check_target(self.phrase, "phrase")
        check_mode(self.mode, self.target_position)
        check_mode(self.mode, self.phrase_position)

    def _eligible(self, item: Instruction) -> bool:
        return not holds(item.question, self.phrase) and not answers_hold(item, self.target)

    def candidates(self, items: Sequence[Instruction]) -> list[int]:
        return [i for i, it in enumerate(items) if self._eligible(it)]

    def test_rows(self, items: Sequence[Instruction]) -> list[int]:
        return self.candidates(items)

    def _triggered(self, item: Instruction, gen: torch.Generator) -> tuple[Turn, ...]:
        return with_question(item.conversations, insert_text(item.question, self.phrase, self.phrase_position, gen))

    def dialogue(self, item: Instruction, gen: torch.Generator) -> tuple[Turn, ...]:
        return with_answers(self._triggered(item, gen), self.target, self.mode, self.target_position, gen)

    def test_dialogue(self, item: Instruction, gen: torch.Generator) -> tuple[Turn, ...]:
        return self._triggered(item, gen)
