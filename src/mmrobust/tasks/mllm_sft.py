"""Supervised finetuning of a LLaVA-family MLLM on instruction data (DESIGN §3, MMR training set).

Loss: next-token cross-entropy on the answer tokens only — every assistant turn's tokens and its end of
turn: the end-of-turn token the chat template writes right after it (``</s>``, ``<|im_end|>``), or, where the
template writes none (``llava-hf/llava-1.5-7b-hf``), the tokenizer's EOS inserted after the answer, as the
LLaVA recipe trains on ``</s>`` (:func:`mmrobust.lvlm.labels.dialogue_labels`, shared with the LVLM attacks);
prompt, image and padding tokens are -100. Per row: mean over its answer tokens; batch: mean over rows.
Prompts come from the processor's chat template; images arrive in [0,1] at the tower's size and are
normalized here with the processor's mean/std. Full finetuning (``lora_r=0``) or LoRA (Hu et al. 2021,
"LoRA: Low-Rank Adaptation of Large Language Models", through ``peft``) on the language model's
attention and MLP projections. Defaults: vision tower frozen, projector and LM train. With the tower
frozen, ``cache_features=True`` keeps each row's tower features and token ids after their first use
(memory: rows x image tokens x tower width), so later epochs skip the tower and the tokenizer; the
loss is the same as without the cache.

Example::

    task = build_task("mllm-sft", load_hf_mllm("runs/tiny-llava"), lora_r=8)
    train(task, InstructionDataset("train.jsonl", image_size=task.image_size), TrainConfig(steps=100), "runs/sft")
    task.export("runs/sft/model")  # loads with build_adapter("hf", model="runs/sft/model")
"""
from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import Tensor, nn

from mmrobust.tasks.base import Task, check_option
from mmrobust.errors import ConfigError
from mmrobust.models.mllm.hf import load_hf_llava
from mmrobust.lvlm.attack import IGNORE_INDEX, answer_ce, normalizer, tower_size
from mmrobust.lvlm.convert import vision_feature
from mmrobust.lvlm.labels import dialogue_labels, pad_right
from mmrobust.registry import TASKS
from mmrobust.values import SEED_MAX

# LoRA targets: the Llama/Mistral/Qwen-style attention and MLP projections inside the language model only.
LORA_TARGETS = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"
PART_MARKERS = {"vision": "vision_tower", "projector": "multi_modal_projector"}  # anything else: "lm"


@dataclass
class HFMLLM:
    """A Hugging Face image-text-to-text model with its processor (what ``mllm-sft`` trains)."""

    model: nn.Module
    processor: Any


def load_hf_mllm(path: str, *, dtype: str = "float32") -> HFMLLM:
    """``AutoModelForImageTextToText`` + ``AutoProcessor`` from a folder or hub id (weights in ``dtype``)."""
    model, processor = load_hf_llava(path, dtype=getattr(torch, dtype), what="MLLM")
    if not any(PART_MARKERS["vision"] in n for n, _ in model.named_parameters()):
        raise ConfigError(f"{path!r} is not a LLaVA-family model (no vision_tower); mllm-sft trains LLaVA-style MLLMs")
    return HFMLLM(model=model, processor=processor)


def part_of(name: str) -> str:
    """Which part a parameter belongs to: vision | projector | lm."""
    return next((part for part, marker in PART_MARKERS.items() if marker in name), "lm")


def answer_labels(processor: Any, messages: Sequence[dict[str, Any]], *, image_size: int) -> tuple[Tensor, Tensor]:
    """(input_ids, labels), both (T,), for one dialogue: labels keep the ids of every assistant turn's tokens
    and its end of turn, -100 elsewhere (prompts, image tokens, template text). A template that writes no
    end-of-turn token after an answer (LLaVA-1.5's) gets the tokenizer's EOS inserted and labelled there, as
    the LLaVA recipe trains on ``</s>`` (:func:`mmrobust.lvlm.labels.dialogue_labels`)."""
    return dialogue_labels(processor, messages, image_size=image_size)


def sft_batch(processor: Any, dialogues: Sequence[Sequence[dict[str, Any]]], *,
              image_size: int) -> tuple[Tensor, Tensor, Tensor]:
    """Right-padded (input_ids, attention_mask, labels), each (B, T); padding is -100 in labels."""
    return pad_right(processor, [answer_labels(processor, d, image_size=image_size) for d in dialogues])


@TASKS.register("mllm-sft")
class MLLMSFTTask(Task):
    """Answer-token SFT of a LLaVA-family MLLM, full or LoRA (see the module docstring)."""

    name = "mllm-sft"
    model_kind = "hf-mllm"  # the pipeline builds an HFMLLM + InstructionDataset for it

    def __init__(self, model: HFMLLM, *, lora_r: int = 0, lora_alpha: float = 16.0, lora_seed: int = 0,
                 lora_merge: bool = True, train_vision: bool = False, train_projector: bool = True,
                 train_lm: bool = True, cache_features: bool = False) -> None:
        opts = dict(lora_r=lora_r, lora_alpha=lora_alpha, lora_seed=lora_seed, lora_merge=lora_merge,
                    train_vision=train_vision, train_projector=train_projector, train_lm=train_lm,
                    cache_features=cache_features)
        self.check_options(opts)
        net = model.model
        if lora_r:
            net = _with_lora(net, r=lora_r, alpha=lora_alpha, seed=lora_seed)
        super().__init__(net)
        self.processor = model.processor
        self.image_size = tower_size(model.model)
        self.options = opts
        self._rows: dict[int, tuple[Tensor, Tensor, Tensor]] = {}  # index -> (features, ids, labels)
        train_part = {"vision": train_vision, "projector": train_projector, "lm": train_lm and not lora_r}
        for pname, p in self.model.named_parameters():
            is_lora = "lora_" in pname
            p.requires_grad_(is_lora or train_part[part_of(pname)])

    @classmethod
    def check_options(cls, options: dict[str, Any]) -> None:
        if "lora_r" in options:
            check_option(cls.name, "lora_r", options["lora_r"], low=0, high=4096, integer=True,
                         hint=" (0 = full finetuning, e.g. 8 for LoRA)")
        if "lora_alpha" in options:
            check_option(cls.name, "lora_alpha", options["lora_alpha"], low=0, low_open=True, hint=", e.g. 16")
        if "lora_seed" in options:
            check_option(cls.name, "lora_seed", options["lora_seed"], low=0, high=SEED_MAX, integer=True)
        flags = ("lora_merge", "train_vision", "train_projector", "train_lm", "cache_features")
        for flag in (f for f in flags if f in options):
            if not isinstance(options[flag], bool):
                raise ConfigError(f"{cls.name} option {flag}={options[flag]!r} must be true or false")
        if options.get("lora_r", 0) and options.get("train_lm") is False:
            raise ConfigError(f"{cls.name}: lora_r={options['lora_r']} adapts the language model but train_lm=false; "
                              "drop train_lm=false or use lora_r=0")
        if options.get("cache_features") and options.get("train_vision"):
            raise ConfigError(f"{cls.name}: cache_features=true keeps tower features, but train_vision=true changes the "
                              "tower; drop one of them")
        if not any(options.get(f, default) for f, default in
                   (("train_vision", False), ("train_projector", True), ("train_lm", True))):
            raise ConfigError(f"{cls.name}: train_vision, train_projector and train_lm are all false, nothing would "
                              "train; enable at least one")

    def forward(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        x = batch["image"]  # (B, 3, H, W) in [0, 1]
        if self.options["cache_features"] and "index" in batch:
            return self._cached_forward(batch)
        ids, mask, labels = (t.to(x.device) for t in sft_batch(self.processor, batch["messages"],
                                                               image_size=self.image_size))
        pixels = normalizer(self.processor, x)(x)
        logits = self.model(pixel_values=pixels, input_ids=ids, attention_mask=mask).logits  # (B, T, V)
        return self._loss(logits, labels)

    def _loss(self, logits: Tensor, labels: Tensor) -> dict[str, Tensor]:
        per_row = answer_ce(logits, labels)  # (B,) mean CE over each row's answer tokens
        return {"loss": per_row.mean(), "n_answer_tokens": (labels != IGNORE_INDEX).sum().float()}

    def _cached_forward(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        """The same loss, from cached tower features and token ids (computed on a row's first use)."""
        x, keys = batch["image"], [int(i) for i in batch["index"]]
        new = [k for k, key in enumerate(keys) if key not in self._rows]
        if new:
            net = _llava(self.model)
            with torch.no_grad():
                feats = vision_feature(net.model.vision_tower, normalizer(self.processor, x)(x[new]),
                                       layer=net.config.vision_feature_layer,
                                       select=net.config.vision_feature_select_strategy)
            for j, k in enumerate(new):
                ids, labels = answer_labels(self.processor, batch["messages"][k], image_size=self.image_size)
                self._rows[keys[k]] = (feats[j].cpu(), ids, labels)
        rows = [self._rows[key] for key in keys]
        ids, mask, labels = pad_right(self.processor, [(row_ids, row_labels) for _, row_ids, row_labels in rows])
        feats = torch.stack([r[0] for r in rows]).to(x.device)
        logits = _logits_from_features(_llava(self.model), feats, ids.to(x.device), mask.to(x.device))
        return self._loss(logits, labels.to(x.device))

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Hugging Face activation (gradient) checkpointing of the whole model (same loss, less memory).
        Non-reentrant, so a frozen embedding layer (LoRA) needs no input gradients."""
        net = _llava(self.model)
        new_api = hasattr(net, "activation_checkpointing_enable")  # transformers >= 5.x; the old names warn
        if enable and new_api:
            net.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        elif enable:
            net.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        else:
            (net.activation_checkpointing_disable if new_api else net.gradient_checkpointing_disable)()

    def after_step(self) -> None:
        """No logit scale to clamp."""

    def checkpoint_state(self) -> dict[str, Tensor]:
        """Only the trainable tensors (a frozen 7B tower need not be in every checkpoint)."""
        return {n: p.detach().clone() for n, p in self.trainable_named_parameters()}

    def load_checkpoint_state(self, state: dict[str, Tensor]) -> None:
        params = dict(self.trainable_named_parameters())
        if set(state) != set(params):
            missing, unexpected = sorted(set(params) - set(state)), sorted(set(state) - set(params))
            raise ConfigError(f"checkpoint does not match task {self.name} (missing {missing[:3]}, unexpected "
                              f"{unexpected[:3]}); resume with the same --model and --opt, or a fresh --out")
        with torch.no_grad():
            for n, p in params.items():
                p.copy_(state[n])

    def export(self, out_dir: str | Path, *, extra: dict[str, Any] | None = None) -> Path:
        """``save_pretrained`` model + processor; LoRA is merged unless ``lora_merge=False`` (adapters only,
        loadable with peft on top of the base model, not by the ``hf`` adapter alone)."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        model = self.model
        if self.options["lora_r"] and self.options["lora_merge"]:
            model = copy.deepcopy(self.model).merge_and_unload()  # a copy: the task keeps its adapters
        model.save_pretrained(out)
        self.processor.save_pretrained(out)
        record = {"task": self.name, "options": self.options, **(extra or {})}
        (out / "mmrobust_task.json").write_text(json.dumps(record, indent=2, default=str) + "\n")
        return out


def _llava(model: nn.Module) -> nn.Module:
    """The LlavaForConditionalGeneration inside ``model`` (a peft wrapper keeps its adapters in place)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def _logits_from_features(net: nn.Module, feats: Tensor, ids: Tensor, mask: Tensor) -> Tensor:
    """LLaVA's forward from tower features: projector, image tokens replaced by its output, LM, head."""
    inner = net.model
    embeds = inner.get_input_embeddings()(ids)
    image = inner.multi_modal_projector(feats).to(embeds.dtype)  # (B, image tokens, hidden)
    where = (ids == net.config.image_token_id).unsqueeze(-1)
    if int(where.sum()) != image.shape[0] * image.shape[1]:
        raise ConfigError(f"the prompt has {int(where.sum()) // max(1, image.shape[0])} image tokens per row but the "
                          f"tower gives {image.shape[1]}; rebuild the processor with the tower's patch size")
    embeds = embeds.masked_scatter(where, image.reshape(-1, image.shape[-1]))
    hidden = inner.language_model(inputs_embeds=embeds, attention_mask=mask).last_hidden_state
    return net.lm_head(hidden)


def _with_lora(model: nn.Module, *, r: int, alpha: float, seed: int) -> nn.Module:
    """``model`` with LoRA adapters on the LM projections; adapter init drawn under ``seed`` (global RNG restored)."""
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError:
        raise ConfigError("lora_r > 0 needs peft: pip install 'mmrobust[mllm]' (or pip install peft), "
                          "or use lora_r=0 for full finetuning") from None
    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=0.0, target_modules=LORA_TARGETS)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return get_peft_model(model, config)
