"""``hf-hub:ORG/NAME`` CLIP repos as local folders: the files mmrobust reads, fetched into (or found in) the
Hugging Face cache, whose snapshot folder then loads like any model folder.

Two layouts are recognised, by the config file the repo holds:

- open_clip hub layout: ``open_clip_config.json`` + ``open_clip_model.safetensors`` or
  ``open_clip_pytorch_model.bin`` (FARE / TeCoA, ``chs20/fare2-clip``; Delta-CLIP, ``zw123/delta_clip_h14_336``,
  whose text config names a Hugging Face tokenizer: the repo's tokenizer files come along);
- transformers ``CLIPModel``: ``config.json`` + ``model.safetensors`` (or an index + shards, or
  ``pytorch_model.bin``), ``preprocessor_config.json`` if present (LEAF, ``LEAF-CLIP/...``).

Only those files are downloaded (not a 4 GB ``.bin`` beside the safetensors). Offline use works as for
transformers: ``HF_HUB_OFFLINE=1`` with ``HF_HUB_CACHE`` (or ``HF_HOME``) pointing at a cache that holds them.
"""
from __future__ import annotations

import json
from pathlib import Path

from mmrobust.errors import ConfigError
from mmrobust.models.limits import one_line

OPEN_CLIP_CONFIG = "open_clip_config.json"
OPEN_CLIP_WEIGHTS = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")  # open_clip's order
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")
HF_CONFIG, HF_PREPROCESSOR = "config.json", "preprocessor_config.json"
HF_WEIGHTS, HF_INDEX, HF_BIN = "model.safetensors", "model.safetensors.index.json", "pytorch_model.bin"


def _where() -> str:
    from huggingface_hub import constants

    mode = "offline (HF_HUB_OFFLINE)" if constants.is_offline_mode() else "online"
    return f"{mode}, cache {constants.HF_HUB_CACHE}"


def _get(repo_id: str, filename: str) -> Path | None:
    """The cached path of one file of the repo (downloaded if needed), or None when the repo has no such file
    (or, offline, the cache does not hold it). A missing repo or a network failure is a one-line ConfigError."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, HFValidationError, RepositoryNotFoundError

    try:
        return Path(hf_hub_download(repo_id=repo_id, filename=filename))
    except EntryNotFoundError:  # remote: not in the repo; local: offline and not cached
        return None
    except RepositoryNotFoundError as e:
        raise ConfigError(f"hf-hub:{repo_id} not found on the Hugging Face hub (or gated: log in with `hf auth "
                          f"login`); check the id ({_where()})") from e
    except HFValidationError as e:
        raise ConfigError(f"hf-hub:{repo_id} is not a hub repo id ({one_line(e, 80)}); write hf-hub:ORG/NAME") from e
    except Exception as e:  # network errors come in many types
        if type(e).__name__ == "RemoteEntryNotFoundError":
            return None
        raise ConfigError(f"cannot fetch {filename} of hf-hub:{repo_id} ({type(e).__name__}: {one_line(e, 100)}; "
                          f"{_where()}); check the network, or download the repo and pass its folder") from e


def _first(repo_id: str, names: tuple[str, ...]) -> Path | None:
    return next(filter(None, (_get(repo_id, n) for n in names)), None)


def _open_clip_files(repo_id: str, config: Path) -> list[Path]:
    """Weights (+ the tokenizer files when the text config names a Hugging Face tokenizer)."""
    weights = _first(repo_id, OPEN_CLIP_WEIGHTS)
    if weights is None:
        raise ConfigError(f"hf-hub:{repo_id} has {OPEN_CLIP_CONFIG} but none of {', '.join(OPEN_CLIP_WEIGHTS)} "
                          f"({_where()}); download the weights or pass a local folder")
    try:
        text = json.loads(config.read_text(encoding="utf-8")).get("model_cfg", {}).get("text_cfg", {})
    except (OSError, ValueError, AttributeError):
        text = {}
    tokenizer = [_get(repo_id, n) for n in TOKENIZER_FILES] if isinstance(text, dict) and \
        "hf_tokenizer_name" in text else []
    return [weights, *filter(None, tokenizer)]


def _hf_clip_files(repo_id: str) -> list[Path]:
    """Weights of a transformers CLIPModel repo (single file, index + shards, or .bin) + its processor config."""
    weights = _get(repo_id, HF_WEIGHTS)
    files = [weights] if weights else []
    index = None if weights else _get(repo_id, HF_INDEX)
    if index is not None:
        try:
            shards = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            raise ConfigError(f"{HF_INDEX} of hf-hub:{repo_id} is not a safetensors index ({one_line(e, 80)})") from e
        files = [index] + [_get(repo_id, s) for s in shards]
        if None in files:
            raise ConfigError(f"hf-hub:{repo_id}: a shard its {HF_INDEX} names is missing ({_where()}); download all")
    elif not files:
        files = [p for p in [_get(repo_id, HF_BIN)] if p]
    if not files:
        raise ConfigError(f"hf-hub:{repo_id} has a CLIP {HF_CONFIG} but no {HF_WEIGHTS}, {HF_INDEX} or {HF_BIN} "
                          f"({_where()}); download the weights or pass a local folder")
    return files + [p for p in [_get(repo_id, HF_PREPROCESSOR)] if p]


def hub_model_folder(repo_id: str) -> Path:
    """The local snapshot folder holding what mmrobust needs of ``repo_id`` (open_clip hub layout, or a
    transformers CLIPModel); a one-line ConfigError if the repo has neither config."""
    config = _get(repo_id, OPEN_CLIP_CONFIG)
    if config is not None:
        files = [config, *_open_clip_files(repo_id, config)]
    else:
        config = _get(repo_id, HF_CONFIG)
        if config is None:
            raise ConfigError(f"hf-hub:{repo_id} has neither {OPEN_CLIP_CONFIG} (open_clip) nor {HF_CONFIG} "
                              f"(transformers CLIPModel) ({_where()}); check the id, or pass a local folder")
        files = [config, *_hf_clip_files(repo_id)]
    folders = {f.parent for f in files}
    if len(folders) != 1:  # the repo changed between two downloads
        raise ConfigError(f"hf-hub:{repo_id} changed while its files were fetched; run again")
    return folders.pop()
