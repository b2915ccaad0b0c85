"""``shadowcast``: clean-label concept substitution (Xu et al., NeurIPS 2024, "Shadowcast: Stealthy Data
Poisoning Attacks Against Vision-Language Models"; code umd-huang-lab/VLM-Poisoning).

Goal: the poisoned MLLM answers images of an *original* concept (``concept``, e.g. "Donald Trump") with the
*destination* concept (``target``, e.g. "Joe Biden"), with no trigger at test time. A poison row is a row whose
text already names the destination (its text is left as it is: clean label) and whose image shows the
destination, perturbed within an l-inf ball so that the vision tower's features match those of an
original-concept image::

    x_p = argmin_{||x - x_d||_inf <= eps, x in [0,1]}  || F(x) - F(x_o) ||_2     (features flattened)

with ``x_d`` the row's image, ``x_o`` an original-concept image (a row naming ``concept``, drawn per poisoned row
from its own seeded stream) and ``F`` the vision tower (a CLIP image tower, or the LLaVA's penultimate-layer
patch features as the reference code uses). The reference paper calls ``x_d`` the *base* image and ``x_o`` the
*target* image; DESIGN's "images of A perturbed toward B's features, texts naming B" names the concepts the other
way round: here the images perturbed show ``target`` (B in ASR terms: what replies should hold) and their features
move toward ``concept`` (A: the test images). The model then learns "features of A -> text about B".

Optimization as the reference's ``embedding_attack_Linf``: signed-gradient steps (SGD on ``sign(grad)``) of
``step_size`` (its 0.2/255), halved after half the steps, from a uniform random start in the ball, projected onto
the ball and [0,1] after every step, best iterate (lowest distance) kept; eps 8/255 and 4000 steps by default
(the reference's). Deviations: the result is rounded to the 8-bit grid inside the ball (what a PNG stores; the
reference saves JPEG-renamed PNGs); no differentiable augmentation; the step count is a setting.

Test inputs: rows naming ``concept`` (and not ``target``), unchanged; ASR = share whose reply holds ``target``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch

from mmrobust.data.instructions import Instruction, Turn
from mmrobust.data.poison.instructions.attack import ImageContext, InstructionAttack, check_target
from mmrobust.data.poison.poison import _subseed, names_target
from mmrobust.errors import ConfigError, DataError
from mmrobust.registry import INSTRUCTION_ATTACKS
from mmrobust.values import check_int, check_number, setting

Tensor = torch.Tensor


def _assistant_text(item: Instruction) -> str:
    return "\n".join(t.content for t in item.conversations if t.role == "assistant")


def quantize_within(x: Tensor, x0: Tensor, eps: float) -> Tensor:
    """``x`` rounded to the 8-bit grid k/255, staying inside [x0 - eps, x0 + eps] and [0,1] (``x0`` on the grid)."""
    lo = torch.ceil((x0 - eps) * 255 - 1e-4).clamp(min=0)
    hi = torch.floor((x0 + eps) * 255 + 1e-4).clamp(max=255)
    return torch.minimum(torch.maximum(torch.round(x * 255), lo), hi) / 255


def _start(images: Tensor, eps: float, streams: Sequence[torch.Generator]) -> Tensor:
    """Uniform random start in the eps-ball, one stream per image, clipped to [0,1]."""
    noise = torch.stack([torch.rand(images.shape[1:], generator=g) for g in streams]).to(images)
    return (images + (2 * noise - 1) * eps).clamp(0, 1)


def feature_pgd(encode: Callable[[Tensor], Tensor], images: Tensor, anchors: Tensor, *, eps: float,
                step_size: float, steps: int, streams: Sequence[torch.Generator]) -> Tensor:
    """(B,3,H,W) images within ``eps`` (l-inf) of ``images`` whose features ``encode(x)`` are closest (l2, flattened)
    to ``encode(anchors)``: Shadowcast's poison images (Xu et al., NeurIPS 2024). ``streams``: one generator per
    image for the random start. The best iterate per image is returned (not yet quantized)."""
    with torch.no_grad():
        goal = encode(anchors).flatten(1).float()
    x = _start(images, eps, streams)
    best, best_loss = x.clone(), torch.full((len(x),), math.inf)
    for i in range(steps + 1):
        x.requires_grad_(True)
        loss = (encode(x).flatten(1).float() - goal).norm(dim=1)  # (B,)
        better = loss.detach().cpu() < best_loss
        best[better], best_loss[better] = x.detach()[better], loss.detach().cpu()[better]
        if i == steps:
            break
        (grad,) = torch.autograd.grad(loss.sum(), x)
        lr = step_size * (0.5 if i >= steps // 2 else 1.0)  # the reference's MultiStepLR at half the steps
        x = torch.minimum(torch.maximum(x.detach() - lr * grad.sign(), images - eps), images + eps).clamp(0, 1)
    return best


def pair_row(row: int, anchors: Sequence[int], seed: int) -> int:
    """The original-concept row whose image poisoned ``row`` imitates (a seeded draw per row)."""
    gen = torch.Generator().manual_seed(_subseed(seed, "anchor", row))
    return anchors[int(torch.randint(len(anchors), (1,), generator=gen))]


@INSTRUCTION_ATTACKS.register("shadowcast")
@dataclass(frozen=True)
class ShadowcastAttack(InstructionAttack):
    """Clean-label concept substitution (Shadowcast, Xu et al., NeurIPS 2024): images of the target concept,
    texts unchanged, features moved toward images of ``concept``."""

    target: str = setting(help="the destination concept: poisoned rows' texts name it, replies to concept images "
                               "should hold it")
    concept: str = setting(help="the original concept whose images the poisoned model should read as the target")
    target_synonyms: tuple = setting((), "other words that name the target (whole words, plural s/es ok)")
    concept_synonyms: tuple = setting((), "other words that name the concept")
    eps: float = setting(8 / 255, "l-inf budget of the perturbation in [0,1] units (the reference's 8/255)")
    step_size: float = setting(0.2 / 255, "signed-gradient step (the reference's 0.2/255), halved after half")
    steps: int = setting(4000, "optimization steps (the reference's 4000)")
    batch_size: int = setting(60, "images optimized at once (the reference's 60)")  # type: ignore[misc]

    changes_image = True

    def __post_init__(self) -> None:
        check_target(self.target)
        check_target(self.concept, "concept")
        for name in ("target_synonyms", "concept_synonyms"):
            words = getattr(self, name)
            if isinstance(words, str) or not all(isinstance(w, str) and w.strip() for w in words):
                raise ConfigError(f"{name} must be a list of non-empty words, got {words!r}")
            object.__setattr__(self, name, tuple(words))
        check_number("eps", self.eps, low=0, high=1, low_open=True, fix="e.g. 8/255")
        check_number("step_size", self.step_size, low=0, high=1, low_open=True, fix="e.g. 0.2/255")
        check_int("steps", self.steps, low=0, high=10**7)
        check_int("batch_size", self.batch_size, low=1, high=10**6)
        if names_target(self.concept, (self.target, *self.target_synonyms)):
            raise ConfigError(f"concept {self.concept!r} and target {self.target!r} must be different concepts")

    def _is(self, item: Instruction, concept: bool) -> bool:
        text = _assistant_text(item)
        own, other = (self.concept, *self.concept_synonyms), (self.target, *self.target_synonyms)
        return names_target(text, own if concept else other) and not names_target(text, other if concept else own)

    def candidates(self, items: Sequence[Instruction]) -> list[int]:
        """Rows whose answers name the target and not the concept (their texts stay: clean label)."""
        return [i for i, it in enumerate(items) if self._is(it, concept=False)]

    def test_rows(self, items: Sequence[Instruction]) -> list[int]:
        """Rows whose answers name the concept and not the target: the concept images asked at test time."""
        return [i for i, it in enumerate(items) if self._is(it, concept=True)]

    def dialogue(self, item: Instruction, gen: torch.Generator) -> tuple[Turn, ...]:
        return item.conversations

    def needs_encoder(self) -> bool:
        return True

    def _anchors(self, ctx: ImageContext) -> list[int]:
        """The rows whose images poisoned rows imitate (found once per run)."""
        if "anchors" not in ctx.cache:
            ctx.cache["anchors"] = self.test_rows(ctx.items)
        if not ctx.cache["anchors"]:
            raise DataError(f"no row's answer names the concept {self.concept!r} (without {self.target!r}); "
                            "Shadowcast needs images of it to imitate: add rows about it or set concept_synonyms")
        return ctx.cache["anchors"]

    def row_info(self, row: int, ctx: ImageContext) -> dict[str, Any]:
        anchor = pair_row(row, self._anchors(ctx), ctx.seed)
        return {"anchor_row": anchor, "anchor_id": ctx.items[anchor].id}

    def alter_images(self, images: list[Tensor], rows: list[int], ctx: ImageContext) -> list[Tensor]:
        if ctx.encode_image is None:
            raise ConfigError("shadowcast needs a vision tower (encode_image); pass --encoder MODEL")
        if len({tuple(x.shape) for x in images}) > 1:
            raise DataError("shadowcast optimizes images in batches of one size; resize them with --image-size")
        anchors = self._anchors(ctx)
        x0 = torch.stack(images)
        goal = torch.stack([ctx.load(pair_row(r, anchors, ctx.seed)) for r in rows])
        streams = [torch.Generator().manual_seed(_subseed(ctx.seed, "shadowcast", r)) for r in rows]
        x = feature_pgd(ctx.encode_image, x0, goal.to(x0), eps=self.eps, step_size=self.step_size,
                        steps=self.steps, streams=streams)
        return list(quantize_within(x.detach().cpu(), x0.cpu(), self.eps))
