"""What a model card may say about the data a record names: a dataset's public identity in the Hugging Face
model-index form (``name``, ``type``, optional ``config`` / ``split`` / ``revision`` / ``args``), never a local
path; and any text scrubbed of absolute paths and secrets before it is written.

The embedded world is recognised by the ``world.json`` its generator writes first into its folder (the same marker
that lets ``mmrobust generate --overwrite`` replace it): type ``mmrobust-synthetic-world``, config ``shapes`` (the
CLIP world) or ``mmr`` (the MMR pairs), with the seed. A clip-benchmark split is its dataset name; the MMR hub
copy is its repository at the resolved commit; any other file is its file name only.

Example::

    record_dataset(read_json("runs/eval/results_robust.json"))
    # {'name': 'mmrobust synthetic world (shapes, seed 0)', 'type': 'mmrobust-synthetic-world', 'config': 'shapes',
    #  'split': 'test', 'args': {'seed': 0, 'image_size': 32, 'n_test': 1000}}
"""
from __future__ import annotations

import re
from pathlib import Path, PureWindowsPath
from typing import Any, Mapping

from mmrobust.jsonio import read_json
from mmrobust.safety import is_own_record, redact

WORLD_TYPE = "mmrobust-synthetic-world"
# world.json generators of the embedded worlds (mmrobust.world.shapes.GENERATOR, mmrobust.world.mmr.MMR_GENERATOR)
WORLD_GENERATORS = {"mmrobust.synthetic": "shapes", "mmrobust.world.mmr": "mmr"}
WORLD_ARGS = ("seed", "image_size", "n_train", "n_test", "pairs_per_category")
UNKNOWN = {"name": "data not named in the record", "type": "unknown"}

# an absolute POSIX path (not "4/255" or "attribute/shape": a word character before the slash), a home path or a
# Windows drive path, up to the next space, quote, bracket or separator
_ABS_PATH = re.compile(r"(?<![\w/.~:-])(?:~(?=/)|[A-Za-z]:(?=\\))?[/\\][^\s'\"`()<>\[\]{},;|*]+")


def public_text(text: Any) -> str:
    """``text`` as a card may show it: credentials redacted (:func:`mmrobust.safety.redact`) and every absolute
    path cut to its last component (``/home/me/runs/test.csv`` -> ``.../test.csv``)."""
    return _ABS_PATH.sub(lambda m: ".../" + _basename(m.group(0)), redact(str(text)))


def _basename(path: str) -> str:
    return (PureWindowsPath(path).name if "\\" in path else Path(path).name) or "..."


def _spec(value: str) -> tuple[str | None, str]:
    """``("karpathy", PATH)`` of a ``prefix:PATH`` data spec; ``(None, value)`` for a plain path (a drive letter is
    no prefix)."""
    m = re.match(r"^([A-Za-z][\w-]+):(?!\\)(.*)$", value)
    return (m.group(1), m.group(2)) if m else (None, value)


def _world(path: Path) -> tuple[str, dict[str, Any]] | None:
    """``(config, world.json)`` when ``path`` (a folder or a file in one) is a world the embedded generators wrote."""
    for folder in (path, path.parent):
        for generator, config in WORLD_GENERATORS.items():
            marker = folder / "world.json"
            if is_own_record(marker, generator):
                try:
                    meta = read_json(marker)
                except (OSError, ValueError):
                    return None
                return config, meta if isinstance(meta, dict) else {}
    return None


def file_dataset(spec: str, *, split: str | None = None) -> dict[str, Any]:
    """The dataset of a data file or folder named in a record: the embedded world, or the file's name only."""
    prefix, path = _spec(spec)
    p = Path(path)
    world = _world(p)
    if world is not None:
        config, meta = world
        args = {k: meta[k] for k in WORLD_ARGS if isinstance(meta.get(k), int) and not isinstance(meta.get(k), bool)}
        split = split or (p.stem if config == "shapes" and p.suffix == ".csv" else None)
        seed = f", seed {args['seed']}" if "seed" in args else ""
        return _clean({"name": f"mmrobust synthetic world ({config}{seed})", "type": WORLD_TYPE, "config": config,
                       "split": split, "args": args or None})
    name = _basename(path) if path else ""
    if not name:
        return dict(UNKNOWN)
    shown = f"{name} ({prefix})" if prefix else name
    return _clean({"name": public_text(shown), "type": public_text(name), "split": split})


def _clean(d: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None}


def _mmr_source(source: Mapping[str, Any], known: Any) -> dict[str, Any]:
    """An MMR run's question source: the hub repository at its revision, or a local file (a known published file
    says so in its name)."""
    if source.get("kind") == "hub" and isinstance(source.get("repo_id"), str):
        revision = source.get("resolved_commit") or source.get("revision")
        return _clean({"name": f"MMR {source.get('version', '')}".strip(), "type": public_text(source["repo_id"]),
                       "config": source.get("version"), "revision": str(revision) if revision else None})
    found = file_dataset(str(source.get("questions_file") or ""))
    known_as = known.get("known_as") if isinstance(known, Mapping) else None
    if known_as and found.get("type") != WORLD_TYPE:
        found["name"] = f"MMR {known_as} (a local copy of the published file)"
    return found


def record_dataset(record: Mapping[str, Any]) -> dict[str, Any]:
    """The dataset a results record was measured on, in model-index form (see the module docstring)."""
    config = record.get("config") if isinstance(record.get("config"), Mapping) else {}
    if isinstance(record.get("dataset"), Mapping):  # an MMR harness run: its question source
        return _mmr_source(record["dataset"], record.get("questions_file"))
    data = config.get("data")
    if isinstance(data, Mapping):  # CLIP evaluations (EvalData), audits (DataSpec / InstructionData)
        split = data.get("split") if isinstance(data.get("split"), str) else None
        if isinstance(data.get("benchmark"), str) and data["benchmark"]:
            name = data["benchmark"]
            return _clean({"name": f"{name} (clip_benchmark)", "type": public_text(name), "split": split})
        spec = data.get("manifest") or data.get("instructions")
        return file_dataset(str(spec), split=None if split == "test" else split) if spec else dict(UNKNOWN)
    spec = data if isinstance(data, str) else config.get("manifest") or config.get("rescored_from")
    if isinstance(spec, str) and spec:  # LVLM evaluations, benchmarks, retrieval; a split only of karpathy:PATH
        split = config.get("split") if _spec(spec)[0] == "karpathy" and isinstance(config.get("split"), str) else None
        return file_dataset(spec, split=split)
    return dict(UNKNOWN)
