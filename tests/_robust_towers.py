"""Tiny local stand-ins of the published robust CLIPs, in the exact file layout and config keys of their hub
repos (sizes scaled down), and a Hugging Face hub cache folder filled with them the way ``hf_hub_download``
leaves it (blobs + snapshot symlinks + refs/main), so ``hf-hub:ORG/NAME`` loads offline.

- ``chs20/fare2-clip`` (FARE, Schlarmann et al. 2024): ``open_clip_config.json`` (model_cfg with quick_gelu and
  the vision/text keys of ViT-L-14, preprocess_cfg with OpenAI mean/std) + ``open_clip_pytorch_model.bin``
  (a pickled OrderedDict of the whole CLIP).
- ``LEAF-CLIP/CLIP-ViT-L-rho50-k1-constrained-FARE2`` (Rocamora et al. 2025): transformers ``CLIPModel``,
  ``config.json`` with the keys of the published file (no hidden_act: the default quick_gelu) + the sizes that make
  it tiny, ``model.safetensors``; the ViT-g/bigG repos shard it (``model-0000i-of-00002.safetensors`` + index).
- ``zw123/delta_clip_h14_336`` (Delta-CLIP, Wang et al. 2025): ``open_clip_config.json`` whose keys follow
  open_clip's ViT-H-14-CLIPA-336 config (no ln_pre, average pooling, a BERT WordPiece tokenizer) with ImageNet
  statistics + ``open_clip_pytorch_model.bin`` + the repo's tokenizer files (tokenizer.json, tokenizer_config.json,
  special_tokens_map.json, vocab.txt). Its real config could not be read here (no network); the keys are those
  of the architecture family its files point to.
"""
from __future__ import annotations

import collections
import hashlib
import json
import os
from pathlib import Path

import torch

OPENAI = {"mean": [0.48145466, 0.4578275, 0.40821073], "std": [0.26862954, 0.26130258, 0.27577711]}
IMAGENET = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
WORDS = ["a", "photo", "of", "the", "star", "circle", "square", "triangle", "red", "blue", "green", "shape", "."]


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n")


def _open_clip_state(model_cfg: dict, seed: int) -> dict[str, torch.Tensor]:
    import open_clip

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = open_clip.model.CLIP(**model_cfg)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.02 * torch.randn_like(p))
    return collections.OrderedDict(model.state_dict())


def fare_repo(out: Path, *, seed: int = 0, image_size: int = 32) -> Path:
    """chs20/fare2-clip's layout: open_clip hub config + a pickled state dict (.bin)."""
    out.mkdir(parents=True, exist_ok=True)
    cfg = {"embed_dim": 32, "quick_gelu": True,
           "vision_cfg": {"image_size": image_size, "layers": 3, "width": 96, "patch_size": 8, "head_width": 32},
           "text_cfg": {"context_length": 20, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2}}
    _write_json(out / "open_clip_config.json", {"model_cfg": cfg, "preprocess_cfg": OPENAI})
    torch.save(_open_clip_state(cfg, seed), out / "open_clip_pytorch_model.bin")
    return out


def leaf_config(*, image_size: int = 32) -> dict:
    """LEAF's config.json keys (transformers 4.49 wrote them), plus the sizes that make it tiny."""
    return {
        "_name_or_path": "results/constrain_text_only_k1_n_charmer50_seed1/hf_model/",
        "architectures": ["CLIPModel"], "initializer_factor": 1.0, "logit_scale_init_value": 2.6592,
        "model_type": "clip", "projection_dim": 32,
        "text_config": {"hidden_size": 32, "intermediate_size": 128, "model_type": "clip_text_model",
                        "num_attention_heads": 2, "torch_dtype": "float32",
                        "num_hidden_layers": 2, "max_position_embeddings": 20},
        "torch_dtype": "float32", "transformers_version": "4.49.0",
        "vision_config": {"hidden_size": 96, "intermediate_size": 384, "model_type": "clip_vision_model",
                          "num_attention_heads": 3, "num_hidden_layers": 3, "patch_size": 8, "torch_dtype": "float32",
                          "image_size": image_size},
    }


def leaf_repo(out: Path, *, seed: int = 0, sharded: bool = False) -> Path:
    """A LEAF-style transformers CLIPModel folder (one safetensors, or two shards + index like ViT-g's)."""
    from safetensors.torch import save_file
    from transformers import CLIPConfig, CLIPModel

    out.mkdir(parents=True, exist_ok=True)
    config = leaf_config()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CLIPModel(CLIPConfig.from_dict(config)).eval()
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.02 * torch.randn_like(p))
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    _write_json(out / "config.json", config)
    if not sharded:
        save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
        return out
    names = sorted(state)
    halves = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
    for file, keys in halves.items():
        save_file({k: state[k] for k in keys}, str(out / file), metadata={"format": "pt"})
    _write_json(out / "model.safetensors.index.json",
                {"metadata": {"total_size": sum(v.numel() * v.element_size() for v in state.values())},
                 "weight_map": {k: f for f, keys in halves.items() for k in keys}})
    return out


def _bert_tokenizer_files(out: Path) -> int:
    """A tiny uncased WordPiece tokenizer saved as the Delta-CLIP repo's four files; returns the vocab size."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
    (out / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tok = Tokenizer(models.WordPiece({w: i for i, w in enumerate(vocab)}, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2),
                                                                                                ("[SEP]", 3)])
    tok.save(str(out / "tokenizer.json"))
    specials = {"cls_token": "[CLS]", "mask_token": "[MASK]", "pad_token": "[PAD]", "sep_token": "[SEP]",
                "unk_token": "[UNK]"}
    _write_json(out / "special_tokens_map.json", specials)
    _write_json(out / "tokenizer_config.json", {"do_lower_case": True, "model_max_length": 512,
                                                "tokenizer_class": "BertTokenizer", **specials})
    return len(vocab)


def delta_repo(out: Path, *, seed: int = 0) -> Path:
    """zw123/delta_clip_h14_336's layout: open_clip config (CLIPA-style keys), .bin weights, tokenizer files."""
    out.mkdir(parents=True, exist_ok=True)
    vocab = _bert_tokenizer_files(out)
    cfg = {"embed_dim": 32,
           "vision_cfg": {"image_size": 48, "layers": 2, "width": 64, "head_width": 32, "patch_size": 8,
                          "no_ln_pre": True, "pool_type": "avg", "final_ln_after_pool": True},
           "text_cfg": {"context_length": 16, "vocab_size": vocab, "hf_tokenizer_name": "bert-base-uncased",
                        "tokenizer_kwargs": {"strip_sep_token": True}, "width": 32, "heads": 2, "layers": 2,
                        "pool_type": "last", "no_causal_mask": True}}
    pre = {**IMAGENET, "interpolation": "bilinear", "resize_mode": "squash"}
    _write_json(out / "open_clip_config.json", {"model_cfg": cfg, "preprocess_cfg": pre})
    torch.save(_open_clip_state(cfg, seed), out / "open_clip_pytorch_model.bin")
    return out


def put_in_hub_cache(cache: Path, repo_id: str, folder: Path, *, commit: str = "a" * 40) -> Path:
    """Copy ``folder``'s files into a hub cache as ``hf_hub_download`` stores them: content-addressed blobs,
    ``snapshots/<commit>/<file>`` symlinks to them, ``refs/main`` naming the commit. Returns the snapshot."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / commit
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    snapshot.mkdir(parents=True, exist_ok=True)
    for file in sorted(folder.iterdir()):
        data = file.read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        os.symlink(os.path.relpath(blob, snapshot), snapshot / file.name)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    return snapshot


def offline_hub(monkeypatch, cache: Path) -> None:
    """Point huggingface_hub at ``cache`` with no network (as HF_HUB_OFFLINE=1 HF_HUB_CACHE=cache would)."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
