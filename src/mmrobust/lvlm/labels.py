"""Answer-token labels of a chat-template dialogue, end of turn included (shared by MLLM SFT and LVLM attacks).

The loss of an answer (SFT's, or an attack's on reference answers) covers the assistant's tokens *and* the
token that ends the turn: a model trained or attacked without it never learns (or is never pushed off) where
an answer stops. Chat templates differ there, so the end is found, not assumed:

- the template writes an end-of-turn token right after the answer (this project's ``</s>``; ChatML's
  ``<|im_end|>``: LLaVA-NeXT-34B, LLaVA-OneVision, LLaVA-Interleave): it is labelled, with any whitespace
  tokens before it;
- the template writes none (``llava-hf/llava-1.5-7b-hf`` and ``llava-v1.6-vicuna``: the answer and a space;
  ``llava-v1.6-mistral``: the literal text ``<\\s>``, not the EOS token): the tokenizer's ``eos_token`` is
  inserted right after the answer tokens and labelled, as the LLaVA recipe trains on ``ASSISTANT: answer</s>``.
  The template's own trailing text stays in the sequence, unlabelled.

End-of-turn tokens: the tokenizer's EOS and those of :data:`END_OF_TURN` the tokenizer has. Everything else
(prompts, image tokens, template text, the tokens after the end) is :data:`IGNORE_INDEX`.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from mmrobust.errors import ConfigError

IGNORE_INDEX = -100
END_OF_TURN = ("</s>", "<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>", "<|endoftext|>")
_MARK = "\ue000"  # a private-use character: where the answer text ends in the rendered turn


def token_ids(processor: Any, text: str, image_size: int) -> Tensor:
    """Token ids (T,) of ``text`` with ``<image>`` expanded the processor's way (a placeholder image)."""
    dummy = [np.zeros((image_size, image_size, 3), dtype=np.uint8)]
    return processor(text=[text], images=dummy, return_tensors="pt")["input_ids"][0]


def end_of_turn_ids(tokenizer: Any) -> set[int]:
    """The tokenizer's EOS id and the ids of the :data:`END_OF_TURN` tokens it has as whole tokens."""
    found = {tokenizer.eos_token_id} - {None}
    for name in END_OF_TURN:
        i = tokenizer.convert_tokens_to_ids(name)
        if isinstance(i, int) and i != tokenizer.unk_token_id and tokenizer.convert_ids_to_tokens(i) == name:
            found.add(i)
    return found


def dialogue_labels(processor: Any, messages: Sequence[dict[str, Any]], *, image_size: int) -> tuple[Tensor, Tensor]:
    """(input_ids, labels), both (T,), of one dialogue rendered with the processor's chat template.

    Labels keep every assistant turn's tokens and its end of turn (see the module docstring: the template's
    end-of-turn token, or the tokenizer's EOS inserted after the answer when the template writes none);
    -100 elsewhere (everywhere for a dialogue with no assistant turn).

    Example::

        >>> ids, labels = dialogue_labels(processor, [user_turn, {"role": "assistant", "content": "A dog."}],
        ...                               image_size=336)
    """
    def render(msgs: Sequence[dict[str, Any]], **kw: Any) -> str:
        return processor.apply_chat_template(list(msgs), tokenize=False, **kw)

    ids = token_ids(processor, render(messages), image_size)
    eos = processor.tokenizer.eos_token_id
    spans = [_answer_span(processor, render, messages, k, ids, image_size)
             for k, msg in enumerate(messages) if msg["role"] == "assistant"]
    if eos is None and not all(has_end for _, _, has_end in spans):
        raise ConfigError("the chat template writes no end-of-turn token after the answer and the tokenizer has no "
                          "eos_token to add; set tokenizer.eos_token (LLaVA-1.5: '</s>')")
    out_ids, out_labels, pos = [], [], 0
    for start, stop, has_end in spans:  # [pos, start) template text, [start, stop) answer (+ end of turn)
        out_ids += [ids[pos:stop]] + ([] if has_end else [torch.tensor([eos], dtype=ids.dtype)])
        out_labels += [torch.full((start - pos,), IGNORE_INDEX, dtype=ids.dtype), ids[start:stop]]
        out_labels += [] if has_end else [torch.tensor([eos], dtype=ids.dtype)]
        pos = stop
    out_ids.append(ids[pos:])
    out_labels.append(torch.full((len(ids) - pos,), IGNORE_INDEX, dtype=ids.dtype))
    return torch.cat(out_ids), torch.cat(out_labels)


def _common(a: Tensor, b: Tensor) -> int:
    """Length of the common prefix of two 1-d id tensors."""
    n = min(len(a), len(b))
    diff = (a[:n] != b[:n]).nonzero()
    return int(diff[0]) if len(diff) else n


def _answer_span(processor: Any, render: Callable[..., str], messages: Sequence[dict[str, Any]], k: int,
                 ids: Tensor, image_size: int) -> tuple[int, int, bool]:
    """(start, stop, has_end) of assistant turn ``k`` in ``ids``: [start, stop) holds the answer tokens and, when
    ``has_end``, the template's end-of-turn token (with any whitespace tokens before it) as the last one."""
    turn_text = render(messages[:k + 1])
    turn = ids if k == len(messages) - 1 else token_ids(processor, turn_text, image_size)
    pre = token_ids(processor, render(messages[:k], add_generation_prompt=True), image_size)
    start = _common(pre, turn)  # a generation prompt may differ in its last token ("assistant\n" vs " \n")
    if not torch.equal(ids[:len(turn)], turn) or start < len(pre) - 1 or start == len(turn):
        raise ConfigError(f"the chat template does not render turn {k} of the dialogue as a prefix of the whole "
                          "dialogue; use a template whose generation prompt is a prefix of the answered turn")
    cut = token_ids(processor, turn_text[:_answer_end_char(render, messages, k, turn_text)], image_size)
    n = _common(cut, turn)
    stop = max(start, n if n == len(cut) else n + 1)  # a token straddling the answer's end belongs to it
    tok, ends = processor.tokenizer, end_of_turn_ids(processor.tokenizer)
    for j in range(stop, len(turn)):
        if int(turn[j]) in ends:
            return start, j + 1, True
        if tok.decode([int(turn[j])]).strip():  # text other than whitespace: the template ends the turn without
            break
    return start, stop, False


def _answer_end_char(render: Callable[..., str], messages: Sequence[dict[str, Any]], k: int, turn_text: str) -> int:
    """Character offset in ``turn_text`` just after the text of assistant turn ``k``, found by rendering the turn
    with a marker after its last text part."""
    msg = dict(messages[k])
    content = msg["content"]
    if isinstance(content, str):
        msg["content"], last = content + _MARK, content
    else:
        parts = [dict(p) for p in content]
        texts = [i for i, p in enumerate(parts) if p.get("type") == "text"]
        if not texts:
            raise ConfigError(f"assistant turn {k} has no text part; give the answer as text")
        last = parts[texts[-1]]["text"]
        parts[texts[-1]]["text"] = last + _MARK
        msg["content"] = parts
    marked = render([*messages[:k], msg])
    at = marked.find(_MARK)
    if at >= 0 and marked.replace(_MARK, "", 1) == turn_text:
        return at
    at = turn_text.rfind(last.strip())  # a template that strips or reformats the answer
    if at < 0 or not last.strip():
        raise ConfigError(f"the chat template does not write the text of assistant turn {k} verbatim; cannot find "
                          "where the answer ends")
    return at + len(last.strip())


def pad_right(processor: Any, rows: Sequence[tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor, Tensor]:
    """(input_ids, labels) rows right-padded into (B, T) input_ids, attention_mask and labels (padding: the
    tokenizer's pad token, else its EOS; -100 in labels)."""
    width = max(len(ids) for ids, _ in rows)
    pad = processor.tokenizer.pad_token_id
    pad = processor.tokenizer.eos_token_id if pad is None else pad
    input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    for r, (ids, lab) in enumerate(rows):
        input_ids[r, :len(ids)], mask[r, :len(ids)], labels[r, :len(ids)] = ids, 1, lab
    return input_ids, mask, labels
