"""The markdown body of a model card (:mod:`mmrobust.reports.model_card`): what was measured, the summary lines,
a table of every result, how to reproduce (commands, package versions, git sha) and the caveats. Every piece
of text that comes from a record goes through :func:`mmrobust.reports.card_data.public_text`."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

from mmrobust.reports.card_commands import reproduce
from mmrobust.reports.card_data import WORLD_TYPE, public_text
from mmrobust.reports.card_results import CardResult

Mapped = Sequence[tuple[Mapping[str, Any], Sequence[CardResult]]]

KIND_TEXT = {
    "zeroshot": "zero-shot classification accuracy", "robust": "zero-shot accuracy under white-box attacks",
    "backdoor": "clean accuracy and backdoor attack success rate", "retrieval": "image-text retrieval recall",
    "vqa-attack": "VQA accuracy, clean and under attack", "caption-attack": "captioning CIDEr, clean and under attack",
    "mmr-attack": "MMR's RA / MR, clean and under attack", "lvlm-targeted": "targeted-attack success",
    "mmr": "robustness to leading questions (MMR: RA / MR)", "vqa": "VQA accuracy", "caption": "captioning CIDEr",
    "instruction-asr": "instruction-data backdoor success", "challenge": "answer flips when the user pushes back",
    "audit": "poisoned-pair detection from the model's embeddings",
}
VERSION_PACKAGES = ("mmrobust", "torch", "open_clip_torch", "transformers")
NOT_PERCENT = frozenset({"cider"})  # CIDEr x 100 is not a share


def _d(x: Any) -> Mapping[str, Any]:
    return x if isinstance(x, Mapping) else {}


def _cell(text: Any) -> str:
    return public_text(text).replace("|", "\\|").replace("\n", " ")


def _dataset_text(d: Mapping[str, Any]) -> str:
    split = f", {d['split']} split" if d.get("split") else ""
    return f"{d.get('name')}{split}"


def _measured(mapped: Mapped) -> list[str]:
    lines = ["## What was measured", ""]
    for rec, results in mapped:
        kind = str(rec.get("kind"))
        where = _dataset_text(results[0].dataset) if results else "no number (see the caveats)"
        threats = list(dict.fromkeys(r.threat for r in results))
        lines.append(f"- {KIND_TEXT.get(kind, kind)} (`{_cell(kind)}`) on {_cell(where)}"
                     + (f": {_cell('; '.join(threats))}" if threats else ""))
    return list(dict.fromkeys(lines)) + [""]


def _table(results: Sequence[CardResult]) -> list[str]:
    lines = ["## Results", "", "| Metric | Value | Dataset | Task |", "|---|---:|---|---|"]
    for r in results:
        value = f"{r.value:.2f}" + ("" if r.metric_type in NOT_PERCENT else " %")
        lines.append(f"| {_cell(r.metric_name)} | {value} | {_cell(_dataset_text(r.dataset))} | {_cell(r.task_name)} |")
    note = ("Rates are percentages of the evaluated items (a record's fraction x 100, two decimals); the same "
            "numbers are in this card's `model-index` metadata, self-reported (`verified: false`).")
    return lines + ["", note, ""]


def _versions(rec: Mapping[str, Any]) -> str:
    packages = _d(_d(rec.get("protocol")).get("packages"))
    parts = [f"{p} {packages[p]}" for p in VERSION_PACKAGES if packages.get(p)]
    sha = rec.get("git_sha")
    parts.insert(min(1, len(parts)), f"git {str(sha)[:12]}" if sha else "git sha not recorded")
    return ", ".join(parts) + (f", Python {rec['python']}" if rec.get("python") else "")


def _reproduce(name: str, mapped: Mapped) -> list[str]:
    setups, commands, versions = [], [], []
    for rec, results in mapped:
        if results:
            setup, command = reproduce(rec, results[0].dataset, model=name)
            setups += setup
            commands += [command] if command else []
        versions.append(_versions(rec))
    lines = ["## How to reproduce", "", "```bash", *dict.fromkeys(setups), *dict.fromkeys(commands), "```", ""]
    lines += ["Versions the records were written with: " + "; ".join(f"`{_cell(v)}`" for v in dict.fromkeys(versions))
              + ". Each record's `protocol` (attack settings, template and prompt hashes, decoding, machine) lists "
              "what two runs must share to be compared (`mmrobust compare`).", ""]
    return lines


def _model_of(rec: Mapping[str, Any]) -> str | None:
    cfg = _d(rec.get("config"))
    model = cfg.get("model") if not isinstance(cfg.get("model"), Mapping) else _d(cfg["model"]).get("model")
    model = model or _d(cfg.get("settings")).get("model")
    if not isinstance(model, str) or not model:
        return None
    return "/".join(Path(model).parts[-2:]) if "/" in model and Path(model).is_absolute() else model


def _caveats(mapped: Mapped, skipped: Sequence[Mapping[str, Any]], notes: Sequence[str]) -> list[str]:
    lines = ["## Caveats", "", "- Numbers measured by mmrobust and self-reported (`verified: false`)."]
    if any(r.threat != "clean" and r.metric_type == "accuracy" for _, rs in mapped for r in rs):
        lines.append("- Accuracy under an attack is an upper bound on the robust accuracy: a stronger or adaptive "
                     "attack can only lower it.")
    if any(r.dataset.get("type") == WORLD_TYPE for _, rs in mapped for r in rs):
        lines.append("- The mmrobust synthetic world (small rendered shapes) is a test bed for the code paths: its "
                     "numbers are not comparable with real benchmarks.")
    models = sorted({m for rec, _ in mapped if (m := _model_of(rec))})
    if len(models) > 1:
        lines.append(f"- The records name {len(models)} different models ({_cell(', '.join(models))}): check that "
                     "every number is of this model.")
    for rec, results in mapped:
        warns = rec.get("warnings") if isinstance(rec.get("warnings"), list) else []
        lines += list(dict.fromkeys(f"- `{_cell(rec.get('kind'))}` warning: {_cell(w)}" for w in warns))
        if not results:
            lines.append(f"- A `{rec.get('kind')}` record holds no number a card carries (e.g. an audit without a "
                         "poison record); it is left out.")
    if skipped:
        kinds = ", ".join(f"`{public_text(k)}`" for k in sorted({str(r.get("kind")) for r in skipped}))
        lines.append(f"- Left out: {len(skipped)} record(s) of kinds mmrobust does not map to model-index results "
                     f"({kinds}: training logs, stories, seed aggregates or unknown kinds).")
    lines += [f"- {_cell(n)}" for n in notes]
    return list(dict.fromkeys(lines)) + [""]


def card_body(name: str, mapped: Mapped, skipped: Sequence[Mapping[str, Any]], *, summary_lines: Sequence[str],
              marker: str, notes: Sequence[str] = ()) -> str:
    """The card's markdown after the YAML block, starting with ``marker`` (what marks the file as ours); ``notes``
    are more caveats (repeated records, a base model left out)."""
    results = [r for _, rs in mapped for r in rs]
    intro = (f"Robustness numbers of `{_cell(name)}` measured with mmrobust from {len(mapped)} results record(s): "
             "clean quality beside the same quality under attack, backdoor triggers, leading questions or pushback, "
             "whichever was run.")
    lines = [marker, "", f"# {_cell(name)}: robustness card", "", intro, ""]
    lines += _measured(mapped)
    summary = [f"- {_cell(s)}" for s in summary_lines if str(s).strip()]
    lines += (["## Summary", "", *summary, ""] if summary else [])
    lines += _table(results) + _reproduce(name, mapped) + _caveats(mapped, skipped, notes)
    return "\n".join(lines)
