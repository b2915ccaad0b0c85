"""The end of an answer is a label under the real chat templates of the LLaVA-family checkpoints users finetune.

Each template (tests/fixtures/chat_templates, see its README for provenance) renders through a real
``LlavaProcessor`` with a word-level tokenizer; both users of :func:`mmrobust.lvlm.labels.dialogue_labels` are
checked: mllm-sft's ``answer_labels`` (a two-turn dialogue) and the LVLM attacks' ``build_lvlm_inputs``.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from mmrobust.tasks.mllm_sft import answer_labels
from mmrobust.lvlm.attack import build_lvlm_inputs
from mmrobust.lvlm.labels import IGNORE_INDEX

TEMPLATES = Path(__file__).parent / "fixtures" / "chat_templates"
IMAGE_SIZE, PATCH = 16, 8  # 4 image tokens + CLS
# checkpoint -> (the tokenizer's eos_token, the end-of-turn token the answers must be labelled with)
CASES = {
    "llava-1.5-7b-hf": ("</s>", "</s>"),  # the template writes "answer " and no end: </s> is added
    "llava-v1.6-vicuna-7b-hf": ("</s>", "</s>"),
    "llava-v1.6-mistral-7b-hf": ("</s>", "</s>"),  # the template writes the text "<\s>", not the token
    "llava-v1.6-34b-hf": ("<|endoftext|>", "<|im_end|>"),  # ChatML: the template's <|im_end|>, not the EOS
    "llava-onevision-qwen2-0.5b-ov-hf": ("<|im_end|>", "<|im_end|>"),
    "llava-interleave-qwen-0.5b-hf": ("<|im_end|>", "<|im_end|>"),
}
SPECIAL = ["<pad>", "<unk>", "<s>", "</s>", "<image>", "<|im_start|>", "<|im_end|>", "<|endoftext|>"]
WORD_RE = r"\w+|[^\w\s]"
DIALOGUE = [
    {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is shown ?"}]},
    {"role": "assistant", "content": [{"type": "text", "text": "It is a red circle ."}]},
    {"role": "user", "content": [{"type": "text", "text": "And the other ?"}]},
    {"role": "assistant", "content": [{"type": "text", "text": "Blue ."}]},
]


def _processor(name: str):
    """A LlavaProcessor with the checkpoint's chat template and a word-level tokenizer knowing its words."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers
    from transformers import CLIPImageProcessor, LlavaProcessor, PreTrainedTokenizerFast

    template = (TEMPLATES / f"{name}.jinja").read_text()
    text = template.replace("\\n", " ") + " USER ASSISTANT user assistant"  # every word it can write, and more
    words = SPECIAL + sorted({w for t in [text] + [m["content"][-1]["text"] for m in DIALOGUE]
                              for w in re.findall(WORD_RE, t)} - set(SPECIAL))
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Split(Regex(WORD_RE), behavior="isolated")])
    eos = CASES[name][0]
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", bos_token="<s>", eos_token=eos,
        extra_special_tokens={"image_token": "<image>"})
    tokenizer.add_tokens(SPECIAL[5:], special_tokens=True)  # ChatML markers: whole tokens, as in Qwen2's / Yi's
    images = CLIPImageProcessor(size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE,
                                                                                "width": IMAGE_SIZE})
    return LlavaProcessor(image_processor=images, tokenizer=tokenizer, patch_size=PATCH,
                          vision_feature_select_strategy="default", num_additional_image_tokens=1,
                          chat_template=template)


@pytest.mark.parametrize("name", sorted(CASES))
def test_sft_labels_end_every_answer(name):
    proc = _processor(name)
    end = CASES[name][1]
    ids, labels = answer_labels(proc, DIALOGUE, image_size=IMAGE_SIZE)
    tokens = proc.tokenizer.convert_ids_to_tokens(ids.tolist())
    assert "<unk>" not in tokens
    kept = [t for t, lab in zip(tokens, labels.tolist()) if lab != IGNORE_INDEX]
    assert kept == ["It", "is", "a", "red", "circle", ".", end, "Blue", ".", end]
    assert torch.equal(labels[labels != IGNORE_INDEX], ids[labels != IGNORE_INDEX])
    # outside the labels, the sequence is the template's own rendering (an added EOS is the only extra token)
    plain = proc(text=[proc.apply_chat_template(DIALOGUE, tokenize=False)], images=[torch.zeros(3, 16, 16)],
                 return_tensors="pt", do_rescale=False)["input_ids"][0].tolist()
    added = 0 if end in proc.tokenizer.convert_ids_to_tokens(plain) else 2
    assert len(ids) == len(plain) + added
    assert [t for t in tokens if t != end] == [t for t in proc.tokenizer.convert_ids_to_tokens(plain) if t != end]


@pytest.mark.parametrize("name", sorted(CASES))
def test_attack_reference_labels_end_the_answer(name):
    proc = _processor(name)
    end = CASES[name][1]
    batch = build_lvlm_inputs(proc, ["What is shown ?", "And the other ?"], [["red circle ."], ["Blue ."]],
                              image_size=IMAGE_SIZE)
    tok = proc.tokenizer.convert_ids_to_tokens
    for r, answer in enumerate([["red", "circle", "."], ["Blue", "."]]):
        keep = batch.labels[r] != IGNORE_INDEX
        assert tok(batch.labels[r, keep].tolist()) == answer + [end]
        assert not (keep & ~batch.attention_mask[r].bool()).any()
