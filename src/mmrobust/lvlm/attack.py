"""Pixel-space attacks on LVLMs (LLaVA-1.5 style) through the LM loss of an answer.

Paper: Schlarmann, Singh, Croce, Hein 2024, "Robust CLIP: Unsupervised Adversarial Fine-Tuning of Vision
Embeddings for Robust Large Vision-Language Models" (ICML; code: chs20/RobustVLM), following Schlarmann & Hein
2023, "On the Adversarial Robustness of Multi-Modal Foundation Models". The optimizer is APGD (Croce & Hein 2020,
:func:`mmrobust.attacks.apgd.apgd`) over a per-sample loss closure.

Threat model: white-box, l-inf (or l2) ball of radius eps around images in [0, 1] at the vision tower's
resolution (resize once before attacking; nothing is resized inside). The processor's normalization
(``image_mean`` / ``image_std``) is applied inside the loss closure.

- untargeted: maximize the LM loss (mean CE over the answer tokens) of the reference answer(s). Several
  references per image form an *ensemble*: :func:`attack_lvlm_untargeted` maximizes the mean over the
  references in one pass; :func:`attack_lvlm_ensemble` is RobustVLM's ensemble (one low-precision pass per
  reference, keep the worst case, then one full-precision pass from it; stop an image once it is broken).
- targeted: minimize the LM loss of a target string; success = the string appears in the greedy output.

Labels cover the answer tokens and its end of turn: the attack should also move where the answer stops. The
end is the end-of-turn token the chat template writes right after the answer (``</s>``, ChatML's
``<|im_end|>``) or, where it writes none (``llava-hf/llava-1.5-7b-hf``: the answer and a space), the
tokenizer's EOS inserted after the answer, as RobustVLM's LLaVA prompts end the answer with ``</s>``
(:func:`mmrobust.lvlm.labels.dialogue_labels`, shared with MLLM SFT). Tokens after it (a trailing newline)
and the prompt and image tokens are -100. Not done: LLaVA-NeXT any-res tiling (one
``pixel_values`` tile per image is assumed).
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from mmrobust.attacks.apgd import APGDLossFn, APGDOutput, apgd
from mmrobust.attacks.ops import check_eps, check_images, make_generator
from mmrobust.errors import ConfigError
from mmrobust.lvlm.labels import IGNORE_INDEX, dialogue_labels, pad_right

IsBroken = Callable[[int, str], bool]  # (image index in the batch, greedy output) -> the answer is broken


@dataclass(frozen=True)
class LVLMInputs:
    """Tokenized (prompt, answer) rows, right-padded; one row per (image, reference) pair."""

    input_ids: Tensor  # (N, T)
    attention_mask: Tensor  # (N, T)
    labels: Tensor  # (N, T), IGNORE_INDEX except the answer tokens (+ end-of-turn token)
    image_index: Tensor  # (N,) the image each row belongs to


@dataclass(frozen=True)
class LVLMAttackRecord:
    """What an attack did, per image: losses of the attacked answer at the clean and the adversarial image."""

    objective: str  # "untargeted" (reference answers) or "targeted"
    eps: float
    norm: str
    steps: int
    seed: int
    clean_loss: list[float]
    final_loss: list[float]
    stopped: list[bool]  # untargeted: broken (by is_broken); targeted: target in the greedy output
    target: str | None = None
    outputs: tuple[str, ...] = ()  # targeted: greedy replies at the returned images (``stopped`` read off them)


def _messages(prompt: str, answer: str | None = None) -> list[dict[str, Any]]:
    """The hf adapter's conversation: a user turn with the image first, then the text; optional answer turn."""
    msgs: list[dict[str, Any]] = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
    if answer is not None:
        msgs.append({"role": "assistant", "content": [{"type": "text", "text": answer}]})
    return msgs


def _dummy_images(n: int, size: int) -> list[np.ndarray]:
    """Placeholders so the processor expands ``<image>`` into the right number of image tokens."""
    return [np.zeros((size, size, 3), dtype=np.uint8)] * n


def tower_size(model: Any) -> int:
    """Input resolution of the vision tower (LLaVA: ``config.vision_config.image_size``)."""
    return int(model.config.vision_config.image_size)


def _flatten_references(references: Sequence[str | Sequence[str]]) -> tuple[list[str], list[int]]:
    """[ref or [refs]] per image -> (all references, image index of each); empty ones are a ConfigError."""
    refs, index = [], []
    for i, r in enumerate(references):
        group = [r] if isinstance(r, str) else list(r)
        if not group or any(not isinstance(a, str) or not a.strip() for a in group):
            raise ConfigError(f"image {i} has no (or an empty) reference answer; give at least one non-empty string")
        refs += group
        index += [i] * len(group)
    return refs, index


def build_lvlm_inputs(
    processor: Any, prompts: Sequence[str], references: Sequence[str | Sequence[str]], *, image_size: int
) -> LVLMInputs:
    """Tokenize user turn (image + prompt) + assistant turn (answer) with the processor's chat template.

    Labels are -100 on the prompt, the image tokens and padding; the answer tokens and the end of turn (the
    template's end-of-turn token, or the tokenizer's EOS inserted after the answer when the template writes
    none) keep their ids (see the module docstring). One row per (image, reference), right-padded.

    Example::

        >>> batch = build_lvlm_inputs(processor, ["What is shown?"], [["a dog", "a puppy"]], image_size=336)
    """
    if len(prompts) != len(references):
        raise ConfigError(f"got {len(prompts)} prompts but {len(references)} reference lists; give one per image")
    refs, index = _flatten_references(references)
    rows = [dialogue_labels(processor, _messages(prompts[i], a), image_size=image_size) for i, a in zip(index, refs)]
    input_ids, mask, labels = pad_right(processor, rows)
    return LVLMInputs(input_ids, mask, labels, torch.tensor(index))


def answer_ce(logits: Tensor, labels: Tensor) -> Tensor:
    """Per-row mean next-token CE over the labelled tokens: (N, T, V), (N, T) -> (N,); shifted like HF."""
    logits, labels = logits[:, :-1].float(), labels[:, 1:]
    ce = F.cross_entropy(logits.transpose(1, 2), labels, ignore_index=IGNORE_INDEX, reduction="none")  # (N, T-1)
    count = (labels != IGNORE_INDEX).sum(1)
    return ce.sum(1) / count.clamp(min=1)


def normalizer(processor: Any, like: Tensor) -> Callable[[Tensor], Tensor]:
    """[0, 1] images -> the tower's input, with the processor's image_mean / image_std (no resize)."""
    ip = processor.image_processor
    if not getattr(ip, "do_normalize", True):
        return lambda x: x
    mean = torch.tensor(ip.image_mean, dtype=like.dtype, device=like.device).view(1, -1, 1, 1)
    std = torch.tensor(ip.image_std, dtype=like.dtype, device=like.device).view(1, -1, 1, 1)
    return lambda x: (x - mean) / std


def lm_loss_fn(model: Any, processor: Any, inputs: LVLMInputs, *, like: Tensor) -> Callable[[Tensor], Tensor]:
    """Differentiable closure ``x (B, 3, H, W) in [0, 1] -> (B,)`` LM loss of the answers (Schlarmann et al. 2024).

    Per row: mean CE over the answer tokens; per image: mean over its rows (the reference ensemble).
    ``like``: a tensor on the device / dtype of the images.
    """
    norm = normalizer(processor, like)
    dev = like.device
    ids, mask = inputs.input_ids.to(dev), inputs.attention_mask.to(dev)
    labels, index = inputs.labels.to(dev), inputs.image_index.to(dev)
    counts = torch.bincount(index).to(like.dtype)

    def loss_fn(x: Tensor) -> Tensor:
        pixels = norm(x).index_select(0, index)  # (N, 3, H, W): one copy per reference
        logits = model(pixel_values=pixels, input_ids=ids, attention_mask=mask, labels=None).logits
        per_row = answer_ce(logits, labels).to(x.dtype)  # (N,)
        return torch.zeros(x.shape[0], dtype=x.dtype, device=dev).index_add(0, index, per_row) / counts

    return loss_fn


@contextmanager
def frozen(model: Any) -> Iterator[Any]:
    """Eval mode and ``requires_grad=False`` on every parameter for the attack; both restored afterwards."""
    was_training, flags = model.training, [p.requires_grad for p in model.parameters()]
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        yield model
    finally:
        for p, f in zip(model.parameters(), flags):
            p.requires_grad_(f)
        model.train(was_training)


def greedy_outputs(model: Any, processor: Any, images: Tensor, prompts: Sequence[str], *,
                   max_new_tokens: int = 20) -> list[str]:
    """Greedy replies for [0, 1] images at the tower's size (prompt built as in the hf adapter)."""
    text = [processor.apply_chat_template(_messages(p), tokenize=False, add_generation_prompt=True) for p in prompts]
    enc = processor(text=text, images=_dummy_images(len(text), images.shape[-1]), padding=True,
                    padding_side="left", return_tensors="pt")
    with torch.no_grad():
        out = model.generate(pixel_values=normalizer(processor, images)(images.detach()),
                             input_ids=enc["input_ids"].to(images.device),
                             attention_mask=enc["attention_mask"].to(images.device),
                             max_new_tokens=max_new_tokens, do_sample=False)
    new = out[:, enc["input_ids"].shape[1]:]
    return [t.strip() for t in processor.batch_decode(new, skip_special_tokens=True)]


def targeted_success(model: Any, processor: Any, images: Tensor, prompts: Sequence[str], target: str,
                     max_new_tokens: int = 20) -> Tensor:
    """(B,) bool: ``target`` appears in the greedy output (the success criterion of Schlarmann et al. 2024)."""
    outs = greedy_outputs(model, processor, images, prompts, max_new_tokens=max_new_tokens)
    return torch.tensor([target in o for o in outs], dtype=torch.bool)


def _check(model: Any, images: Tensor, prompts: Sequence[str], eps: float, steps: int, check_every: int) -> float:
    """One-line ConfigErrors for the attacks' arguments; returns eps as a float."""
    eps = check_eps(eps)
    if steps < 1 or check_every < 1:
        raise ConfigError(f"LVLM attacks need steps >= 1 and check_every >= 1, got {steps} and {check_every}")
    check_images(images)
    size = tower_size(model)
    if images.dim() != 4 or images.shape[1] != 3 or tuple(images.shape[-2:]) != (size, size):
        raise ConfigError(f"images must be (B, 3, {size}, {size}) at the vision tower's size, got "
                          f"{tuple(images.shape)}; resize once before attacking")
    if len(prompts) != images.shape[0]:
        raise ConfigError(f"got {images.shape[0]} images but {len(prompts)} prompts; give one prompt per image")
    return eps


def _run_apgd(model: Any, processor: Any, images: Tensor, prompts: Sequence[str],
              references: Sequence[str | Sequence[str]], *, sign: float, eps: float, norm: str, steps: int,
              seed: int, stop: Callable[[Tensor], Tensor] | None, check_every: int,
              ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """APGD on ``sign * LM loss`` of ``references``; ``stop(x)`` flags broken images every k steps.

    Returns (x_adv, clean loss, final loss, stopped), the losses unsigned. APGD keeps a stopped iterate per image.
    """
    inputs = build_lvlm_inputs(processor, prompts, references, image_size=images.shape[-1])
    loss_fn = lm_loss_fn(model, processor, inputs, like=images)
    calls = [0]

    def closure(x: Tensor) -> Tensor | tuple[Tensor, Tensor]:
        loss = sign * loss_fn(x)
        calls[0] += 1  # call 1 is APGD's start, call k + 1 follows step k
        if stop is None or (calls[0] - 1) % check_every != 0 or calls[0] == 1:
            return loss
        return loss, stop(x.detach()).to(x.device)

    with frozen(model):
        with torch.no_grad():
            clean = loss_fn(images)
        out = apgd(closure, images, eps=eps, norm=norm, steps=steps, generator=make_generator(seed, images.device))
        with torch.no_grad():
            final = loss_fn(out.x_adv)
    return out.x_adv, clean, final, out.success


def attack_lvlm_untargeted(
    model: Any, processor: Any, images: Tensor, prompts: Sequence[str], references: Sequence[str | Sequence[str]],
    *, eps: float, steps: int = 100, seed: int = 0, norm: str = "linf", is_broken: IsBroken | None = None,
    check_every: int = 10, max_new_tokens: int = 20,
) -> tuple[Tensor, LVLMAttackRecord]:
    """Untargeted APGD on the LM loss of the reference answers (Schlarmann et al. 2024, RobustVLM).

    Maximizes the per-image ensemble loss (mean over the image's references). With ``is_broken(i, text)``,
    images whose clean greedy output is already broken are not attacked (AutoAttack style), and every
    ``check_every`` steps the greedy outputs are checked: a broken iterate is kept as that image's result.
    APGD still runs the whole batch to ``steps`` (no compute is saved after an image breaks).

    Example::

        >>> x_adv, rec = attack_lvlm_untargeted(model, processor, x, ["Describe the image."], [["a dog", "a puppy"]],
        ...                                     eps=4/255, steps=100, seed=0)
    """
    eps = _check(model, images, prompts, eps, steps, check_every)
    _flatten_references(references)  # fail on empty references before any model call
    images = images.detach()
    broken = torch.zeros(images.shape[0], dtype=torch.bool)
    if is_broken is not None:
        with frozen(model):
            outs = greedy_outputs(model, processor, images, prompts, max_new_tokens=max_new_tokens)
        broken = torch.tensor([bool(is_broken(i, o)) for i, o in enumerate(outs)])
    todo = (~broken).nonzero().squeeze(1).tolist()
    x_adv = images.clone()
    clean, final = torch.full((len(prompts),), float("nan")), torch.full((len(prompts),), float("nan"))
    if todo:
        sub_prompts, sub_refs = [prompts[i] for i in todo], [references[i] for i in todo]

        def stop(x_sub: Tensor) -> Tensor:
            outs = greedy_outputs(model, processor, x_sub, sub_prompts, max_new_tokens=max_new_tokens)
            return torch.tensor([bool(is_broken(i, o)) for i, o in zip(todo, outs)])  # type: ignore[misc]

        adv, c, f, hit = _run_apgd(model, processor, images[todo], sub_prompts, sub_refs, sign=1.0, eps=eps,
                                   norm=norm, steps=steps, seed=seed, check_every=check_every,
                                   stop=stop if is_broken is not None else None)
        x_adv[todo], clean[todo], final[todo], broken[todo] = adv, c.cpu(), f.cpu(), hit.cpu()
    return x_adv, LVLMAttackRecord("untargeted", eps, norm, steps, seed, clean.tolist(), final.tolist(),
                                   broken.tolist())


def attack_lvlm_targeted(
    model: Any, processor: Any, images: Tensor, prompts: Sequence[str], target_text: str, *, eps: float,
    steps: int = 100, seed: int = 0, norm: str = "linf", stop_on_success: bool = False, check_every: int = 10,
    max_new_tokens: int = 20,
) -> tuple[Tensor, LVLMAttackRecord]:
    """Targeted APGD: minimize the LM loss of ``target_text`` as the answer (Schlarmann et al. 2024).

    With ``stop_on_success``, every ``check_every`` steps an iterate whose greedy output contains the target
    is kept as that image's result. ``record.stopped`` is :func:`targeted_success` at the returned images.

    Example::

        >>> x_adv, rec = attack_lvlm_targeted(model, processor, x, ["Describe the image."], "Visit example.com",
        ...                                   eps=4/255, steps=500, seed=0)
    """
    eps = _check(model, images, prompts, eps, steps, check_every)
    if not isinstance(target_text, str) or not target_text.strip():
        raise ConfigError("target_text must be a non-empty string")
    images = images.detach()

    def stop(x_sub: Tensor) -> Tensor:
        return targeted_success(model, processor, x_sub, prompts, target_text, max_new_tokens)

    x_adv, clean, final, _ = _run_apgd(model, processor, images, prompts, [target_text] * len(prompts), sign=-1.0,
                                       eps=eps, norm=norm, steps=steps, seed=seed, check_every=check_every,
                                       stop=stop if stop_on_success else None)
    with frozen(model):
        outs = greedy_outputs(model, processor, x_adv, prompts, max_new_tokens=max_new_tokens)
    return x_adv, LVLMAttackRecord("targeted", eps, norm, steps, seed, clean.cpu().tolist(), final.cpu().tolist(),
                                   [target_text in o for o in outs], target=target_text, outputs=tuple(outs))


# --- RobustVLM's ensemble: one reference at a time, low precision first, full precision from the worst case ---

LOW_PRECISIONS = (torch.bfloat16, torch.float16)


@dataclass(frozen=True)
class EnsemblePass:
    """One APGD pass of :func:`attack_lvlm_ensemble` on one image (one reference)."""

    reference: int  # index into the image's references
    precision: str  # "bfloat16" / "float16" (autocast) or "full" (the model's own dtype)
    start: str  # "random" (APGD's random start around the clean image) or "kept" (the worst case so far)
    pass_loss: float  # APGD's best loss of the reference, in the pass's precision
    loss: float  # full-precision loss of the reference at the pass's result (what the keep rule compares)
    kept: bool  # the result replaced the image's worst case (its loss is higher)
    broken: bool  # ``is_broken`` held at the image's worst case after this pass


@dataclass(frozen=True)
class LVLMEnsembleRecord(LVLMAttackRecord):
    """:class:`LVLMAttackRecord` plus, per image, the reference and passes behind the kept image.

    ``clean_loss`` / ``final_loss``: the kept reference's loss at the clean / returned image (NaN where the
    image was broken on the clean input and not attacked); ``stopped``: broken (``is_broken``).
    ``broken_after``: the number of passes run on the image when it was found broken (0 = on the clean image),
    None if never.
    """

    low_precision: str | None = None
    reference_clean_loss: list[list[float]] = field(default_factory=list)  # per image, per reference
    kept_reference: list[int | None] = field(default_factory=list)
    passes: list[list[EnsemblePass]] = field(default_factory=list)
    broken_after: list[int | None] = field(default_factory=list)


def _apgd_from(loss_fn: APGDLossFn, x: Tensor, x0: Tensor, *, eps: float, norm: str, steps: int) -> APGDOutput:
    """APGD around ``x`` started at ``x0`` (RobustVLM's ``pert_init``) instead of a random point; no restarts."""
    return apgd(loss_fn, x, eps=eps, norm=norm, steps=steps, x_init=x0)


def _single_reference_loss(model: Any, processor: Any, x: Tensor, prompts: Sequence[str],
                           refs: Sequence[str]) -> Callable[[Tensor], Tensor]:
    """(B,) full-precision LM loss closure of one reference per image."""
    inputs = build_lvlm_inputs(processor, prompts, [[r] for r in refs], image_size=x.shape[-1])
    return lm_loss_fn(model, processor, inputs, like=x)


def _autocast(loss_fn: Callable[[Tensor], Tensor], dtype: torch.dtype) -> Callable[[Tensor], Tensor]:
    """The closure with its forward under autocast to ``dtype`` (no weight is cast, so nothing to restore)."""

    def closure(x: Tensor) -> Tensor:
        with torch.autocast(device_type=x.device.type, dtype=dtype):
            return loss_fn(x).float()

    return closure


def _ensemble_pass(model: Any, processor: Any, x: Tensor, prompts: Sequence[str], refs: Sequence[str], *,
                   start: Tensor | None, low_precision: torch.dtype | None, eps: float, norm: str, steps: int,
                   generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
    """One APGD pass on one reference per image -> (best iterate, its loss in the pass's precision, full loss).

    Low precision is autocast around the forward (weights untouched); the best iterate by the pass's own loss
    is re-scored in full precision, which is what the ensemble compares and records.
    """
    loss_fn = _single_reference_loss(model, processor, x, prompts, refs)
    closure = loss_fn if low_precision is None else _autocast(loss_fn, low_precision)
    if start is None:
        out = apgd(closure, x, eps=eps, norm=norm, steps=steps, generator=generator)
    else:
        out = _apgd_from(closure, x, start, eps=eps, norm=norm, steps=steps)
    if low_precision is None:
        return out.x_best, out.loss_best, out.loss_best
    with torch.no_grad():
        return out.x_best, out.loss_best, loss_fn(out.x_best)


@dataclass
class _EnsembleState:
    """Per-image bookkeeping of :func:`attack_lvlm_ensemble` (private, mutated by its stages)."""

    x_adv: Tensor
    loss: list[float]
    reference: list[int | None]
    broken: list[bool]
    broken_after: list[int | None]
    passes: list[list[EnsemblePass]]


def _ensemble_stage(model: Any, processor: Any, images: Tensor, prompts: Sequence[str], groups: list[list[str]],
                    st: _EnsembleState, todo: list[int], ref_of: list[int], *, from_kept: bool,
                    low_precision: torch.dtype | None, is_broken: IsBroken | None, max_new_tokens: int,
                    **apgd_kw: Any) -> None:
    """Attack images ``todo`` on their reference ``ref_of``; keep higher-loss results; check those for breaking."""
    sub_prompts = [prompts[i] for i in todo]
    x, pass_loss, loss = _ensemble_pass(
        model, processor, images[todo], sub_prompts, [groups[i][r] for i, r in zip(todo, ref_of)],
        start=st.x_adv[todo] if from_kept else None, low_precision=low_precision, **apgd_kw)
    kept = [float(loss[k]) > st.loss[i] for k, i in enumerate(todo)]
    for k, i in enumerate(todo):
        if kept[k]:
            st.x_adv[i], st.loss[i], st.reference[i] = x[k].to(st.x_adv.dtype), float(loss[k]), ref_of[k]
    changed = [i for i, c in zip(todo, kept) if c]
    if is_broken is not None and changed:
        outs = greedy_outputs(model, processor, st.x_adv[changed], [prompts[i] for i in changed],
                              max_new_tokens=max_new_tokens)
        for i, o in zip(changed, outs):
            st.broken[i] = bool(is_broken(i, o))
    precision = "full" if low_precision is None else str(low_precision).removeprefix("torch.")
    for k, i in enumerate(todo):
        st.passes[i].append(EnsemblePass(ref_of[k], precision, "kept" if from_kept else "random",
                                         float(pass_loss[k]), float(loss[k]), kept[k], st.broken[i]))
        if st.broken[i] and st.broken_after[i] is None:
            st.broken_after[i] = len(st.passes[i])


def _reference_clean_losses(model: Any, processor: Any, images: Tensor, prompts: Sequence[str],
                            groups: list[list[str]]) -> list[list[float]]:
    """Full-precision loss of every reference at the clean images: per image, per reference."""
    out: list[list[float]] = [[] for _ in groups]
    for j in range(max(len(g) for g in groups)):
        todo = [i for i, g in enumerate(groups) if j < len(g)]
        loss_fn = _single_reference_loss(model, processor, images, [prompts[i] for i in todo],
                                         [groups[i][j] for i in todo])
        with torch.no_grad():
            loss = loss_fn(images[todo])
        for k, i in enumerate(todo):
            out[i].append(float(loss[k]))
    return out


def attack_lvlm_ensemble(
    model: Any, processor: Any, images: Tensor, prompts: Sequence[str], references: Sequence[str | Sequence[str]],
    *, eps: float, steps: int = 100, seed: int = 0, low_precision: torch.dtype | None = torch.float16,
    norm: str = "linf", is_broken: IsBroken | None = None, max_new_tokens: int = 20,
) -> tuple[Tensor, LVLMEnsembleRecord]:
    """RobustVLM's untargeted ensemble attack on the LM loss of reference answers (Schlarmann et al. 2024).

    Per image (batched across images), as in chs20/RobustVLM ``attack="ensemble"``:
      1. images already broken on the clean input (``is_broken(i, greedy_text)``) are not attacked;
      2. for each reference in turn: APGD (``steps``, random start around the clean image) on that reference's
         loss alone, the model run in ``low_precision`` (autocast; weights and dtype untouched); the result is
         re-scored in full precision and kept if its loss beats the image's worst case so far (RobustVLM keeps
         the lowest CIDEr; here the highest loss of the attacked reference). An image whose kept image breaks
         skips its remaining references;
      3. one full-precision APGD pass (``steps``) on the kept reference, started from the kept image.
    With ``low_precision=None`` step 2 runs in full precision and step 3 is skipped. Full precision = the
    model's own dtype. Returns the kept images (clean where not attacked) and an :class:`LVLMEnsembleRecord`.

    Example::

        >>> x_adv, rec = attack_lvlm_ensemble(model, processor, x, ["Describe the image."],
        ...                                   [["a dog on grass", "a puppy", "a brown dog"]], eps=4/255, steps=100,
        ...                                   is_broken=lambda i, text: cider(text, refs[i]) < 0.1)
    """
    eps = _check(model, images, prompts, eps, steps, 1)
    if low_precision is not None and low_precision not in LOW_PRECISIONS:
        raise ConfigError(f"low_precision must be torch.bfloat16, torch.float16 or None, got {low_precision!r}")
    _flatten_references(references)  # fail on empty references before any model call
    groups = [[r] if isinstance(r, str) else list(r) for r in references]
    images, n = images.detach(), len(prompts)
    st = _EnsembleState(images.clone(), [float("-inf")] * n, [None] * n, [False] * n, [None] * n,
                        [[] for _ in range(n)])
    apgd_kw = dict(eps=eps, norm=norm, steps=steps, generator=make_generator(seed, images.device))
    stage_kw = dict(is_broken=is_broken, max_new_tokens=max_new_tokens, **apgd_kw)
    with frozen(model):
        ref_clean = _reference_clean_losses(model, processor, images, prompts, groups)
        if is_broken is not None:
            outs = greedy_outputs(model, processor, images, prompts, max_new_tokens=max_new_tokens)
            st.broken = [bool(is_broken(i, o)) for i, o in enumerate(outs)]
            st.broken_after = [0 if b else None for b in st.broken]
        for j in range(max(len(g) for g in groups)):
            todo = [i for i in range(n) if not st.broken[i] and j < len(groups[i])]
            if todo:
                _ensemble_stage(model, processor, images, prompts, groups, st, todo, [j] * len(todo),
                                from_kept=False, low_precision=low_precision, **stage_kw)
        todo = [i for i in range(n) if not st.broken[i]]
        if low_precision is not None and todo:
            _ensemble_stage(model, processor, images, prompts, groups, st, todo, [st.reference[i] for i in todo],
                            from_kept=True, low_precision=None, **stage_kw)
    nan = float("nan")
    clean = [nan if r is None else ref_clean[i][r] for i, r in enumerate(st.reference)]
    final = [nan if r is None else st.loss[i] for i, r in enumerate(st.reference)]
    precision = None if low_precision is None else str(low_precision).removeprefix("torch.")
    return st.x_adv, LVLMEnsembleRecord(
        "untargeted", eps, norm, steps, seed, clean, final, list(st.broken), low_precision=precision,
        reference_clean_loss=ref_clean, kept_reference=list(st.reference), passes=st.passes,
        broken_after=list(st.broken_after))

