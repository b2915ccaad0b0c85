"""A tiny random-init LLaVA built from a config, saved like a hub checkpoint (DESIGN §4).

It has the real LLaVA structure (CLIP vision tower -> MLP projector -> Llama decoder), a word-level
tokenizer and a ``LlavaProcessor`` with a chat template, so ``AutoProcessor`` +
``AutoModelForImageTextToText.from_pretrained(path)`` load it like any hub model and the ``hf``
adapter runs it unchanged. Its weights are random: it answers near chance, which is the point of an
offline smoke test, not a model to measure.

Example::

    path = build_tiny_llava("runs/tiny-llava", seed=0)
    # mmrobust mmr run --adapter hf --model runs/tiny-llava ...
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Iterable

WORD_RE = r"\w+|[^\w\s]"  # words and single punctuation marks
SPECIAL_TOKENS = ("<pad>", "<unk>", "<s>", "</s>", "<image>")
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}USER: "
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<image>{{ '\\n' }}{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}{{ '\\n' }}"
    "{% else %}ASSISTANT: "
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}{% if part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}</s>{{ '\\n' }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)
# Words the synthetic MMR questions and the reference prompt use, plus option letters: the random
# model then emits plausible-looking tokens (letters, words, '.') that exercise every parser path.
BASE_WORDS = (
    "A B C D . , ? : ' ( ) USER ASSISTANT Answer with the option's letter from given choices directly "
    "option letter answer is it a an this there picture image in on of no not yes what which how many "
    "shape colour color count position object objects top bottom left right center one two three four"
)


def _vocabulary(extra_words: Iterable[str]) -> list[str]:
    words = list(SPECIAL_TOKENS)
    seen = set(words)
    for w in (t for text in (BASE_WORDS, *extra_words) for t in re.findall(WORD_RE, text)):
        if w not in seen:
            seen.add(w)
            words.append(w)
    return words


def _tokenizer(vocab: list[str]):
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(vocab)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Split(Regex(WORD_RE), behavior="isolated")]
    )
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=True)  # joins word tokens with spaces
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", bos_token="<s>", eos_token="</s>",
        extra_special_tokens={"image_token": "<image>"}, padding_side="left", model_max_length=4096,
    )


def build_tiny_llava(
    out_dir: str | Path,
    *,
    seed: int = 0,
    image_size: int = 32,
    patch_size: int = 8,
    hidden_size: int = 64,
    num_layers: int = 2,
    extra_words: Iterable[str] = (),
    letter_bias: float = 0.3,
    vision_hidden_size: int | None = None,
    vision_layers: int | None = None,
    vision_heads: int = 4,
    vision_intermediate_size: int | None = None,
    vision_act: str = "quick_gelu",
    vision_feature_layer: int = -2,
    vision_feature_select: str = "default",
) -> Path:
    """Build and save a tiny random LLaVA (model + processor) to ``out_dir``; returns the path.

    ``extra_words``: texts whose words join the vocabulary (e.g. the questions to be asked), so
    prompts tokenize without ``<unk>``. Weights are drawn from a ``torch.Generator`` seeded by ``seed``.
    ``letter_bias`` > 0 gives the random model a prior for the option letters (see
    ``_add_letter_prior``), so its replies parse and score near chance instead of being mostly
    unparseable; which letter it picks still depends on the random weights, image and prompt.
    ``vision_*``: the CLIP tower's width (default ``hidden_size``), layers (``num_layers``), heads, MLP width
    (2 x width) and activation, e.g. to match an open_clip tower that is later swapped in
    (:func:`mmrobust.lvlm.swap_vision_tower`); the projector maps the tower's width to ``hidden_size``.
    ``vision_feature_layer``: the tower hidden state the projector reads (LLaVA-1.5: -2, the penultimate);
    ``vision_feature_select``: ``"default"`` drops the class token (LLaVA-1.5), ``"full"`` keeps it.
    """
    import torch
    from transformers import (
        CLIPImageProcessor, CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = _tokenizer(_vocabulary(extra_words))
    image_token_id = tokenizer.convert_tokens_to_ids("<image>")
    vision_width = vision_hidden_size or hidden_size
    vision = CLIPVisionConfig(
        hidden_size=vision_width, intermediate_size=vision_intermediate_size or 2 * vision_width,
        num_hidden_layers=vision_layers or num_layers, num_attention_heads=vision_heads, image_size=image_size,
        patch_size=patch_size, projection_dim=hidden_size, hidden_act=vision_act,
    )
    text = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers, num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
    )
    n_patches = (image_size // patch_size) ** 2 + (vision_feature_select == "full")
    config = LlavaConfig(
        vision_config=vision, text_config=text, image_token_index=image_token_id, image_seq_length=n_patches,
        vision_feature_select_strategy=vision_feature_select, vision_feature_layer=vision_feature_layer,
    )
    model = _seeded_init(config, seed, LlavaForConditionalGeneration, torch)
    if letter_bias:
        _add_letter_prior(model, [tokenizer.convert_tokens_to_ids(x) for x in "ABCD"], letter_bias, torch)
    model.save_pretrained(out)
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size},
    )
    processor = LlavaProcessor(
        image_processor=image_processor, tokenizer=tokenizer, patch_size=patch_size,
        vision_feature_select_strategy=vision_feature_select, num_additional_image_tokens=1,  # CLIP's CLS token
        chat_template=CHAT_TEMPLATE,
    )
    processor.save_pretrained(out)
    return out


def _add_letter_prior(model, letter_ids: list[int], strength: float, torch) -> None:
    """Give the random model a prior for the option letters without fixing which one it picks.

    Channel 0 of every token embedding is set to 1 and no decoder layer writes into it (row 0 of
    each ``o_proj``/``down_proj`` is zeroed), so after the final RMSNorm it is a constant positive
    signal; the LM head reads it only into the A-D logits (``strength``). The remaining random
    channels, which do depend on the image and prompt, still choose among the letters.
    """
    with torch.no_grad():
        model.get_input_embeddings().weight[:, 0] = 1.0
        for name, p in model.named_parameters():
            if "language_model" in name and name.endswith(("o_proj.weight", "down_proj.weight")):
                p[0, :] = 0.0
        head = model.get_output_embeddings().weight  # (vocab, hidden)
        head[:, 0] = 0.0
        head[letter_ids, 0] = strength


def _seeded_init(config, seed: int, model_cls, torch):
    """Instantiate ``model_cls(config)`` and redraw every parameter from a seeded generator."""
    model = model_cls(config)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            if p.ndim == 1:  # norms, biases: keep the library defaults (ones / zeros)
                continue
            p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
    model.generation_config.pad_token_id = config.text_config.pad_token_id
    model.generation_config.eos_token_id = config.text_config.eos_token_id
    return model.eval()
