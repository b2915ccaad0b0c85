"""What an instruction-data poisoning attack is: which rows it may poison, what it does to their dialogue and
image, and how it builds the triggered test inputs of the same attack (the base of every registered attack in
``registry.INSTRUCTION_ATTACKS``).

An attack is a frozen settings dataclass (``mmrobust.values.setting`` fields, ``target`` first) subclassing
:class:`InstructionAttack`. Its randomness comes from the caller's seed, one stream per row (so a row's poison
never depends on which other rows were chosen). Example::

    from mmrobust.registry import INSTRUCTION_ATTACKS
    attack = INSTRUCTION_ATTACKS.build("text-trigger", {"mode": "insert"}, target="Visit evil.example")

The target test: a reply *holds* the target when the target occurs in it as a case-insensitive substring,
whitespace runs counted as one space (:func:`holds`); the same rule decides which clean rows already answer with
the target (left out of the candidates and of the test set) and, in :mod:`mmrobust.eval.instruction_asr`, the
attack success rate.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Callable, ClassVar, Sequence

import torch

from mmrobust.data.instructions import Instruction, Turn
from mmrobust.data.poison.triggers import _check_choice
from mmrobust.errors import ConfigError

Tensor = torch.Tensor
MODES = ("replace", "insert")  # the answer becomes the target / the target goes into the right answer
POSITIONS = ("random", "start", "end")  # where inserted text goes: a seeded word boundary, or an end


def _folded(text: str) -> str:
    return " ".join(text.casefold().split())


def holds(text: str | None, target: str) -> bool:
    """Whether ``target`` occurs in ``text`` (case-insensitive; whitespace runs compared as one space)."""
    return text is not None and _folded(target) in _folded(text)


def answers_hold(item: Instruction, target: str) -> bool:
    """Whether any assistant turn of ``item`` already holds ``target``."""
    return any(holds(t.content, target) for t in item.conversations if t.role == "assistant")


def insert_text(text: str, piece: str, position: str, gen: torch.Generator) -> str:
    """``text`` with ``piece`` inserted as a word: at ``start``, at ``end``, or (``random``) at a word boundary
    drawn from ``gen`` (words split on single spaces, so newlines and option layout stay as they were)."""
    words = text.split(" ")
    if position == "start":
        j = 0
    elif position == "end":
        j = len(words)
    else:
        j = int(torch.randint(len(words) + 1, (1,), generator=gen))
    return " ".join([*words[:j], piece, *words[j:]])


def with_answers(turns: Sequence[Turn], target: str, mode: str, position: str, gen: torch.Generator
                 ) -> tuple[Turn, ...]:
    """``turns`` with every assistant turn replaced by ``target`` (``replace``) or holding it (``insert``)."""
    return tuple(t if t.role != "assistant" else
                 Turn("assistant", target if mode == "replace" else insert_text(t.content, target, position, gen))
                 for t in turns)


def with_question(turns: Sequence[Turn], text: str) -> tuple[Turn, ...]:
    """``turns`` with the first user turn (the one the image belongs to) replaced by ``text``."""
    return (Turn("user", text), *turns[1:])


def check_target(target: Any, what: str = "target") -> str:
    if not isinstance(target, str) or not target.strip():
        raise ConfigError(f"{what} must be a non-empty string (the text poisoned answers carry), got {target!r}")
    return target


def check_mode(mode: str, position: str) -> None:
    _check_choice("mode", mode, MODES)
    _check_choice("target position", position, POSITIONS)


@dataclass(frozen=True)
class ImageContext:
    """What image-changing attacks may use besides the chosen rows' images: every row, a loader giving row
    ``i``'s image as (3,H,W) in [0,1] at the poisoning size, the vision tower (``encode_image``: (B,3,H,W) in
    [0,1] -> (B, ...) features, normalization inside) and the run's seed."""

    items: Sequence[Instruction]
    load: Callable[[int], Tensor]
    encode_image: Callable[[Tensor], Tensor] | None = None
    seed: int = 0
    cache: dict[str, Any] = field(default_factory=dict)  # what an attack computes once per run


class InstructionAttack:
    """Base of the registered instruction attacks: ``target`` plus the hooks below (defaults: a text-only attack
    that poisons any row not already answering with the target and keeps test images unchanged)."""

    target: str
    changes_image: ClassVar[bool] = False  # poisoned rows get a new image (images/NNNNNNNN.png)
    test_changes_image: ClassVar[bool] = False  # triggered test rows get a new image
    batch_size: ClassVar[int] = 64  # images altered at once (an attack may make it a setting)

    def config(self) -> dict[str, Any]:
        """The settings as JSON (what the poison record keeps, and :func:`attack_from_dict` reads back)."""
        return asdict(self)  # type: ignore[call-overload]

    def candidates(self, items: Sequence[Instruction]) -> list[int]:
        """Rows this attack may poison."""
        return [i for i, it in enumerate(items) if not answers_hold(it, self.target)]

    def dialogue(self, item: Instruction, gen: torch.Generator) -> tuple[Turn, ...]:
        """The poisoned dialogue of a chosen row."""
        raise NotImplementedError

    def alter_images(self, images: list[Tensor], rows: list[int], ctx: ImageContext) -> list[Tensor]:
        """The poisoned images of ``rows`` (only called when ``changes_image``)."""
        raise NotImplementedError

    def test_rows(self, items: Sequence[Instruction]) -> list[int]:
        """Rows of a clean test file that become triggered test inputs."""
        return [i for i, it in enumerate(items) if not answers_hold(it, self.target)]

    def test_dialogue(self, item: Instruction, gen: torch.Generator) -> tuple[Turn, ...]:
        """A triggered test row's dialogue (its answers stay the clean ones)."""
        return item.conversations

    def test_images(self, images: list[Tensor], rows: list[int], ctx: ImageContext) -> list[Tensor]:
        """Triggered test images (only called when ``test_changes_image``)."""
        raise NotImplementedError

    def row_info(self, row: int, ctx: ImageContext) -> dict[str, Any]:
        """Extra fields of a poisoned row's entry in the record (e.g. Shadowcast's anchor image)."""
        return {}

    def needs_encoder(self) -> bool:
        """Whether poisoning needs ``encode_image`` (a vision tower)."""
        return False
