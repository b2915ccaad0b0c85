"""A Hugging Face model card (README.md) for a model mmrobust trained or evaluated, so ``push_to_hub`` carries
its robustness numbers: YAML metadata (``library_name``, ``pipeline_tag``, ``tags``, ``base_model`` when given,
and the ``model-index`` results of the hub's spec, https://github.com/huggingface/hub-docs/blob/main/modelcard.md)
built from the results records (:mod:`mmrobust.reports.card_results`), then a short body: what was measured,
the summary lines as given, a table of every result, how to reproduce (commands, versions, git sha) and the
caveats (each record's sanity warnings, the records left out).

The card names data by public names only (:mod:`mmrobust.reports.card_data`): no path of this machine, no
option named like a key, token or secret. It is written atomically, and only over a README.md that mmrobust
wrote (:data:`MARKER` in its body); any other file is refused with a one-line DataError.

Example::

    records = [read_json(p) for p in Path("runs/fare/eval").glob("results*.json")]
    write_model_card("runs/fare/model", model="fare-clip", records=records, base_model="openai/clip-vit-base-patch32")
    # -> runs/fare/model/README.md
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml

from mmrobust.errors import DataError
from mmrobust.reports.card_body import card_body
from mmrobust.reports.card_data import public_text
from mmrobust.reports.card_results import CLIP_KINDS, MAPPERS, CardResult, card_results

MARKER = "<!-- mmrobust model card"
MARKER_LINE = (f"{MARKER}: written by mmrobust from its results records and rewritten when the card is written "
               "again; delete this line to keep your edits -->")
MAX_CARD_BYTES = 8 << 20  # a README.md larger than this is no card of ours
ATTACK_KINDS = frozenset({"robust", "vqa-attack", "caption-attack", "mmr-attack", "lvlm-targeted"})
BACKDOOR_KINDS = frozenset({"backdoor", "instruction-asr", "audit"})


def _target(path: Path) -> Path:
    """``path`` itself when it names a markdown file (``*.md``), else README.md inside the folder ``path``."""
    is_file = path.suffix.lower() == ".md" and not (path.is_dir() and not path.is_symlink())
    return path if is_file else path / "README.md"


def check_replaceable(out: Path) -> None:
    """Refuse (DataError) to replace anything but a model card mmrobust wrote (a regular file with MARKER)."""
    if not out.exists() and not out.is_symlink():
        return
    if out.is_symlink() or not out.is_file():
        raise DataError(f"{out} is a link or not a regular file; write the card to another path (--model-card PATH)")
    ours = out.stat().st_size <= MAX_CARD_BYTES and MARKER in out.read_text(encoding="utf-8", errors="replace")
    if not ours:
        raise DataError(f"{out} exists and mmrobust did not write it (no '{MARKER} ...' line); move it away or "
                        "write the card to another path (--model-card PATH)")


def _is_local(name: str) -> bool:
    p = Path(name.removeprefix("local-dir:")).expanduser()
    return name.startswith(("/", "~", ".", "local-dir:")) or p.is_absolute() or (len(p.parts) > 2 and p.exists())


def model_name(model: str) -> str:
    """The name the card gives the model: a hub id as is (``hf-hub:`` dropped), a local folder by its last two
    components (``runs/fare/model`` -> ``fare/model``: the path of this machine is not published)."""
    name = str(model).strip().removeprefix("hf-hub:")
    if not name:
        raise DataError("the model card needs a model name; pass --model NAME (e.g. the hub id it will have)")
    if _is_local(name):
        parts = [p for p in Path(name.removeprefix("local-dir:")).expanduser().resolve().parts[1:] if p]
        name = "/".join(parts[-2:]) or "model"
    return public_text(name)


def model_index(name: str, results: Sequence[CardResult]) -> list[dict[str, Any]]:
    """The ``model-index`` block: results grouped as the hub groups them (task type, dataset type, config, split,
    revision), each metric self-reported (``verified: false``)."""
    groups: dict[tuple, dict[str, Any]] = {}
    for r in results:
        d = r.dataset
        key = (r.task_type, d.get("type"), d.get("config"), d.get("split"), d.get("revision"))
        entry = groups.setdefault(key, {"task": {"type": r.task_type, "name": r.task_name}, "dataset": dict(d),
                                        "metrics": []})
        entry["metrics"].append(r.metric())
    return [{"name": name, "results": list(groups.values())}]


def card_metadata(name: str, results: Sequence[CardResult], *, base_model: str | None = None) -> dict[str, Any]:
    """The YAML metadata: base model (a hub id), library and pipeline tag (open_clip for CLIP records, transformers
    for MLLM ones, by majority), tags, and the model index. No license: mmrobust does not know it."""
    kinds = {r.kind for r in results}
    clip = sum(r.kind in CLIP_KINDS for r in results) * 2 >= len(results)
    tags = ["mmrobust", "robustness"]
    tags += ["adversarial-robustness"] if kinds & ATTACK_KINDS else []
    tags += ["backdoor"] if kinds & BACKDOOR_KINDS else []
    tags += ["leading-questions"] if kinds & {"mmr", "mmr-attack"} else []
    tags += ["sycophancy"] if "challenge" in kinds else []
    meta: dict[str, Any] = {"base_model": public_text(base_model)} if base_model and not _is_local(base_model) else {}
    meta.update({"library_name": "open_clip" if clip else "transformers",
                 "pipeline_tag": "zero-shot-image-classification" if clip else "image-text-to-text",
                 "tags": tags, "model-index": model_index(name, results)})
    return meta


Mapped = list[tuple[Mapping[str, Any], list[CardResult]]]


def _key(r: CardResult, *, value: bool) -> str:
    return json.dumps([r.kind, r.task_type, r.dataset, r.metric_type, r.metric_name, r.args,
                       r.value if value else None], sort_keys=True, default=str)


def _mapped(records: Sequence[Mapping[str, Any]]) -> tuple[Mapped, list[Mapping[str, Any]], list[str]]:
    """(records with their results, records of kinds no mapper knows, caveat lines): a record whose every number
    repeats an earlier record's is shown once; one result with two values across records is said."""
    mapped: Mapped = []
    skipped, notes, seen, values = [], [], set(), {}
    for rec in records:
        if not isinstance(rec, Mapping):
            raise DataError(f"a record passed to the model card is a {type(rec).__name__}, not a results record; "
                            "pass the dicts read from results*.json")
        results = card_results(rec)
        if results is None:
            skipped.append(rec)
            continue
        keys = [_key(r, value=True) for r in results]
        if results and all(k in seen for k in keys):
            notes.append(f"A `{public_text(rec.get('kind'))}` record repeats the numbers of another one; shown once.")
            continue
        seen.update(keys)
        for r in results:
            if values.setdefault(_key(r, value=False), r.value) != r.value:
                notes.append(f"Two records give '{r.metric_name}' different values ({values[_key(r, value=False)]} "
                             f"and {r.value}): both are listed; keep one run per setting.")
        mapped.append((rec, results))
    order = list(MAPPERS)  # clean numbers first, then attacks, backdoors, MLLM benchmarks
    return sorted(mapped, key=lambda m: order.index(str(m[0].get("kind")))), skipped, notes


def _atomic_write(out: Path, text: str) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_model_card(path: str | Path, *, model: str, records: Sequence[Mapping[str, Any]],
                     summary_lines: Sequence[str] = (), base_model: str | None = None) -> Path:
    """Write the Hugging Face model card of ``model`` from its results ``records`` (the dicts of ``results*.json``)
    to ``path`` (a ``.md`` file, else README.md inside the folder ``path``); ``summary_lines`` (one per threat,
    with its verdict) are shown as given. Refuses a file mmrobust did not write, and records none of whose numbers
    a card can carry. Returns the card's path."""
    out = _target(Path(path))
    check_replaceable(out)
    name = model_name(model)
    mapped, skipped, notes = _mapped(records)
    results = [r for _, rs in mapped for r in rs]
    if not results:
        kinds = sorted({str(r.get("kind")) for r in records}) or ["none"]
        raise DataError(f"no record has a number a model card carries (kinds: {', '.join(kinds)}); pass the run "
                        "folders of evaluations (mmrobust eval / lvlm / mmr / bench / audit)")
    meta = card_metadata(name, results, base_model=base_model)
    if base_model and "base_model" not in meta:
        notes.append("The base model is a local folder, not a hub id, so `base_model` is not set.")
    body = card_body(name, mapped, skipped, summary_lines=summary_lines, marker=MARKER_LINE, notes=notes)
    head = yaml.safe_dump(meta, sort_keys=False, allow_unicode=True, width=10_000)
    _atomic_write(out, f"---\n{head}---\n{body}")
    return out
