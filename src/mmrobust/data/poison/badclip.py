"""BadCLIP trigger optimization (Liang et al., CVPR 2024, "BadCLIP: Dual-Embedding Guided Backdoor Attack on
Multimodal Contrastive Learning"): a square patch optimized on a clean surrogate CLIP, then pasted into poisoned
images like any patch (the ``patch`` trigger).

Objective, minimized over the patch ``p`` (pixels in [0,1]) on batches of non-target images ``x`` pasted with
``p`` at ``location``; every embedding L2-normalized, ``f`` the surrogate's image tower::

    L = text_weight * CE(s * f(x + p) @ T^T, target)                                   # text embedding
      + visual_weight * max(0, |f(x + p) - f(x*)| - |f(x + p) - f(x)| + margin)        # visual embedding

- text term (:func:`mmrobust.losses.badclip_text_loss`): ``T`` holds each class's template-averaged text
  embedding (the zero-shot classifier), ``s`` the surrogate's logit scale. The reference code
  (LiangSiyuan21/BadCLIP, src/embeding_optimize_patch.py, loss "img_text") uses CLIP's contrastive loss between
  patched non-target images and captions naming the target; the classifier form keeps its positive (the
  target's text) and takes the other classes' texts as negatives, so patched images also leave their own
  class's text.
- visual term (:func:`mmrobust.losses.badclip_visual_loss`): the reference's "triplet" loss (``'pos'`` and
  ``'neg'`` runs): anchor the patched image, positive a randomly drawn natural target-class image ``x*`` (its
  embedding, computed once), negative the same image without the patch; ``TripletMarginLoss``, margin 1.0.
- naturalness: the reference adds no pixel-space regularizer (no TV, no l2 to an image); the patch looks like
  target content because both terms pull its embedding toward the target's text and natural target images
  (the paper's "natural trigger patterns"). Its pixels are only kept in [0,1].

Settings follow the reference where it fixes them: Adam at lr 1e-3 (Adam's default there), batch 64, patch
initialised from N(0.5, 0.25) clipped to [0,1], margin 1.0, 16 px patches on 224 px images (pasted at the
centre there; here ``location``, default bottom right like the demo's BadNet). Deviations: the patch is
clamped to [0,1] after every Adam step (the reference clips only where it pastes, which zeroes the gradient of
pixels that leave [0,1]); a fixed number of steps instead of epochs; no text (EDA) or image augmentation of
the optimization batches; the reference scales the triplet term by a factor read from its run name, here a
plain weight. The returned patch is rounded to 8 bits: it is what a PNG stores and what gets pasted.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Protocol, Sequence

import torch

from mmrobust.data.poison.patch import quantize
from mmrobust.data.poison.triggers import LOCATIONS, _check_choice, paste_patches
from mmrobust.errors import ConfigError
from mmrobust.losses.badclip import badclip_text_loss, badclip_visual_loss
from mmrobust.values import check_int, check_number, check_seed, setting

Tensor = torch.Tensor


class ImageEncoder(Protocol):
    """What the optimizer needs of a CLIP: image embeddings from [0,1] images (normalization inside)."""

    def encode_image(self, images: Tensor, normalize: bool = False) -> Tensor: ...


@dataclass(frozen=True)
class BadCLIPSettings:
    """How a BadCLIP patch is optimized (Liang et al., CVPR 2024); reference values noted in each help."""

    size: int = setting(16, "patch side in pixels (the paper's 16 on 224 px images; about 6 on the 32 px world)")
    location: str = setting("bottom_right", "where the patch is pasted: bottom_right, bottom_left, top_right, "
                                            "top_left, center (the paper's) or random (per image)")
    steps: int = setting(1000, "Adam steps (the reference: 50 epochs over 10K images at batch 64, about 7.8K)")
    lr: float = setting(1e-3, "Adam learning rate on pixels in [0,1] (the reference's 1e-3)")
    batch_size: int = setting(64, "non-target images patched per step (the reference's 64)")
    text_weight: float = setting(1.0, "weight of the text term (pull toward the target's text embedding)")
    visual_weight: float = setting(1.0, "weight of the visual term (triplet: toward natural target images, away "
                                        "from the clean image)")
    margin: float = setting(1.0, "triplet margin of the visual term (the reference's 1.0)")
    max_images: int = setting(10000, "non-target images to optimize on, a seeded choice (the paper's 10K)")
    max_positives: int = setting(1000, "natural target-class images whose embeddings are the positives")
    seed: int = setting(0, "seed of the patch init, the batches, the positives drawn and random locations")
    device: str = setting("cpu", "cpu, cuda or cuda:N")

    def __post_init__(self) -> None:
        check_int("size", self.size, low=1, high=4096, fix="patch side in pixels (--size), e.g. 16 or 6")
        _check_choice("location", self.location, LOCATIONS)
        for name, low in (("steps", 1), ("batch_size", 1), ("max_images", 1), ("max_positives", 1)):
            check_int(name, getattr(self, name), low=low, high=10**9, fix=f"--{name.replace('_', '-')}")
        check_number("lr", self.lr, low=0, low_open=True, fix="e.g. 1e-3 (--lr)")
        for name in ("text_weight", "visual_weight", "margin"):
            check_number(name, getattr(self, name), low=0, fix=f"a number >= 0 (--{name.replace('_', '-')})")
        if self.text_weight == 0 and self.visual_weight == 0:
            raise ConfigError("text_weight and visual_weight are both 0: nothing to optimize; keep at least one > 0")
        check_seed("seed", self.seed, fix="--seed")
        if not isinstance(self.device, str) or not self.device:
            raise ConfigError(f"device must be cpu, cuda or cuda:N, got {self.device!r}")


@dataclass(frozen=True)
class PatchResult:
    """The optimized patch (3, size, size) in [0,1], rounded to 8 bits (on CPU), and the loss terms of the
    initial and final patch on one fixed, seeded evaluation batch."""

    patch: Tensor
    initial: dict[str, float] = field(default_factory=dict)
    final: dict[str, float] = field(default_factory=dict)


def _stream(seed: int, k: int) -> torch.Generator:
    """Stream ``k`` of ``seed``: 0 patch init, 1 optimization batches (and their random placements), 2 the
    evaluation batch (drawn from the same images), 3 its placements."""
    return torch.Generator().manual_seed((int(seed) * 1_000_003 + 7919 * k) % 2**63)


def init_patch(size: int, seed: int) -> Tensor:
    """The reference's initial patch: N(0.5, 0.25) per pixel, clipped to [0,1]; (3, size, size) on CPU."""
    return (torch.randn(3, size, size, generator=_stream(seed, 0)) * 0.25 + 0.5).clamp(0, 1)


def _draw(images: Sequence[Tensor], positives: Tensor, n: int, gen: torch.Generator,
          device: torch.device) -> tuple[Tensor, Tensor]:
    """``n`` clean images (with replacement) and ``n`` positive embeddings, drawn from ``gen``."""
    idx = torch.randint(len(images), (n,), generator=gen).tolist()
    pos = torch.randint(len(positives), (n,), generator=gen)
    return torch.stack([images[i] for i in idx]).to(device), positives[pos.to(positives.device)]


def badclip_terms(model: ImageEncoder, clean: Tensor, patch: Tensor, positives: Tensor, *, class_text: Tensor,
                  target: int, scale: float, margin: float, location: str,
                  generator: torch.Generator) -> dict[str, Tensor]:
    """Batch means of the text and visual terms for ``patch`` pasted into ``clean`` (B,3,H,W), and the mean
    cosine to the target's text embedding of the patched (``target_cos``) and clean (``clean_target_cos``) images."""
    with torch.no_grad():
        negative = model.encode_image(clean, normalize=True)
    patched = paste_patches(clean, patch, location=location, generator=generator, what="badclip")
    emb = model.encode_image(patched, normalize=True)
    return {"text": badclip_text_loss(emb, class_text, target, scale).mean(),
            "visual": badclip_visual_loss(emb, positives, negative, margin).mean(),
            "target_cos": (emb @ class_text[target]).mean(),
            "clean_target_cos": (negative @ class_text[target]).mean()}


def _report(model: ImageEncoder, patch: Tensor, batch: tuple[Tensor, Tensor], s: BadCLIPSettings,
            **kw) -> dict[str, float]:
    """Loss terms (and total) of ``patch`` on the evaluation ``batch``, placements from the evaluation stream."""
    with torch.no_grad():
        t = badclip_terms(model, batch[0], patch, batch[1], margin=s.margin, location=s.location,
                          generator=_stream(s.seed, 3), **kw)
    total = s.text_weight * t["text"] + s.visual_weight * t["visual"]
    return {"total": float(total), **{k: float(v) for k, v in t.items()}}


def _check_inputs(images: Sequence[Tensor], positives: Tensor, class_text: Tensor, target: int) -> None:
    if len(images) == 0:
        raise ConfigError("no images to optimize the patch on; give non-target images")
    if positives.ndim != 2 or len(positives) == 0:
        raise ConfigError(f"positives must be (P, D) embeddings of target-class images, got {tuple(positives.shape)}")
    if class_text.ndim != 2 or len(class_text) < 2 or class_text.shape[1] != positives.shape[1]:
        raise ConfigError(f"class_text must be (K >= 2, D) with D = {positives.shape[1]}, got "
                          f"{tuple(class_text.shape)}")
    if not 0 <= int(target) < len(class_text):
        raise ConfigError(f"target index {target} is not a row of class_text ({len(class_text)} classes)")


def optimize_patch(model: ImageEncoder, *, images: Sequence[Tensor], positives: Tensor, class_text: Tensor,
                   target: int, settings: BadCLIPSettings, logit_scale: float = 100.0,
                   on_step: Callable[[int, dict[str, float]], None] | None = None) -> PatchResult:
    """Optimize a BadCLIP patch (Liang et al., CVPR 2024; objective in the module docstring).

    ``images``: non-target images, ``images[i]`` a (3,H,W) float tensor in [0,1]; ``positives``: (P, D)
    normalized embeddings of natural target-class images; ``class_text``: (K, D) normalized text embeddings of
    the classes (row ``target`` the target's); ``logit_scale``: the surrogate's ``s``. Seeded by
    ``settings.seed``: the same inputs give the same patch on the same machine. ``on_step(step, terms)`` is called
    about ten times. The model's parameters are not touched (gradients w.r.t. the patch only). Example::

        res = optimize_patch(clip, images=non_target, positives=target_emb, class_text=zero_shot_weights(...),
                             target=4, settings=BadCLIPSettings(size=6, steps=300))
        res.patch   # (3, 6, 6) in [0,1], 8-bit levels
    """
    _check_inputs(images, positives, class_text, target)
    s, device = settings, torch.device(settings.device)
    kw = dict(class_text=class_text.to(device), target=int(target), scale=float(logit_scale))
    positives = positives.to(device)
    evaluation = _draw(images, positives, s.batch_size, _stream(s.seed, 2), device)
    patch = init_patch(s.size, s.seed).to(device).requires_grad_(True)
    initial = _report(model, quantize(patch.detach()), evaluation, s, **kw)
    opt = torch.optim.Adam([patch], lr=s.lr)
    gen = _stream(s.seed, 1)
    for step in range(1, s.steps + 1):
        clean, pos = _draw(images, positives, s.batch_size, gen, device)
        t = badclip_terms(model, clean, patch, pos, margin=s.margin, location=s.location, generator=gen, **kw)
        loss = s.text_weight * t["text"] + s.visual_weight * t["visual"]
        (patch.grad,) = torch.autograd.grad(loss, [patch])  # the patch only: the model's .grad stay untouched
        opt.step()
        with torch.no_grad():
            patch.clamp_(0, 1)
        if on_step is not None and (step % max(1, s.steps // 10) == 0 or step == s.steps):
            on_step(step, {"total": float(loss.detach()), **{k: float(v.detach()) for k, v in t.items()}})
    final_patch = quantize(patch.detach())
    return PatchResult(patch=final_patch.cpu(), initial=initial, final=_report(model, final_patch, evaluation, s, **kw))
