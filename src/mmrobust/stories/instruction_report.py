"""The aggregate of `mmrobust study instructions`: one row per attack over seeds (mean ± sd, min-max), the
headline effects checked at every seed, a chart, ``summary.md`` and ``results_instructions.json``."""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any, Mapping

from mmrobust.reports.contract import Record, Table, write_record
from mmrobust.reports.sanity import backdoor_not_taken
from mmrobust.reports.spread import Claim, check_claims, claims_table, format_spread, spread
from mmrobust.reports.tables import format_table
from mmrobust.stories.seeds import check_aggregate_target

KIND = "instructions"
PLOT = "instructions.png"
HEAD = (("share", "poisoned rows", "%"), ("asr_clean_model", "ASR, clean model", "%"), ("asr", "ASR", "%"),
        ("acc_delta", "clean acc - clean model's", "%"))
TAIL = (("dropped", "rows dropped", ""), ("remaining_poisoned", "poisoned rows left", ""),
        ("asr_filtered", "ASR after filter + retrain", "%"), ("acc_filtered", "clean acc after", "%"))


def columns(filters: tuple[str, ...]) -> tuple[tuple[str, str, str], ...]:
    """(key, heading, unit) of the per-attack columns, each shown as mean ± sd (min-max) over seeds."""
    return HEAD + tuple((f"auroc_{v}", f"AUROC {v}", "") for v in (*filters, "union")) + TAIL


def check_target(dest: Path) -> None:
    """Refuse to replace a ``summary.md`` in ``dest`` that no instruction study wrote."""
    check_aggregate_target(dest, kind=KIND)


def _attack_row(name: str) -> Any:
    return lambda m: next(r for r in m["rows"] if r["attack"] == name)


def claims(attacks: tuple[str, ...]) -> tuple[Claim, ...]:
    """The trigger backdoors take (ASR >= 80% at <= 5% of the rows), cost under 3 points of clean accuracy, and
    are gone (ASR <= 10%) after the filter and the finetune again. Shadowcast is reported, not claimed."""
    out = []
    for name in (a for a in ("image-trigger", "text-trigger") if a in attacks):
        row = _attack_row(name)
        out += [Claim(f"{name}-takes", f"{name}: the poisoned model's ASR", lambda m, row=row: row(m)["asr"],
                      at_least=0.8),
                Claim(f"{name}-stealthy", f"{name}: clean accuracy minus the clean model's",
                      lambda m, row=row: row(m)["acc_delta"], at_least=-0.03),
                Claim(f"{name}-filtered", f"{name}: ASR after the filter and the finetune again",
                      lambda m, row=row: row(m)["asr_filtered"], at_most=0.10)]
    return tuple(out)


def _cell(stats: Mapping[str, Any], key: str, unit: str) -> str:
    """``mean ± sd (min-max)``: percent with one decimal, AUROC with three, counts with none."""
    if unit:
        tiny = abs(stats["mean"]) < 5e-4  # no "-0.0"
        return format_spread({**stats, "mean": 0.0} if tiny else stats, unit)
    digits = 3 if key.startswith("auroc") else 0
    vals = [stats[k] for k in ("mean", "sd", "min", "max")]
    text = [f"{v:.{digits}f}" for v in vals]
    return text[0] if stats["n"] == 1 else f"{text[0]} ± {text[1]} ({text[2]}-{text[3]})"


def _table(rows_by_attack: Mapping[str, list[dict[str, Any]]], cols: tuple[tuple[str, str, str], ...]
           ) -> list[dict[str, Any]]:
    table = []
    for name, rows in rows_by_attack.items():
        cells = {"attack": name}
        for key, _, unit in cols:
            vals = [r[key] for r in rows if r[key] is not None]
            cells[key] = _cell(spread(vals), key, unit) if vals else "n/a"
        table.append(cells)
    return table


def _warnings(by_attack: Mapping[str, list[dict[str, Any]]], seeds: list[int]) -> list[str]:
    """One warning per attack whose poisoned model did not learn the backdoor at some seed."""
    out = []
    for name, rows in by_attack.items():
        low = [(s, r["asr"]) for s, r in zip(seeds, rows) if backdoor_not_taken(r["asr"])]
        if low:
            worst = max(a for _, a in low)
            out += [f"{name}, seed{'s' if len(low) > 1 else ''} {', '.join(str(s) for s, _ in low)}: " + w
                    for w in backdoor_not_taken(worst, stage=f"{name} poisoned")]
    return out


def _caption(study: Any, seeds: list[int]) -> str:
    return (f"Seeds {', '.join(map(str, seeds))}: mean ± sd (min-max). Each seed finetunes the MMR story's baseline "
            f"LLaVA for {study.steps} steps (lr {study.lr:g}) on {3 * study.finetune_images} VQA rows, clean or with "
            f"poisoned rows (target {study.target!r}; text trigger {study.phrase!r}; Shadowcast {study.concept} -> "
            f"{study.destination} at l-inf {study.shadowcast_eps * 255:.0f}/255). Clean acc on {study.test_images} "
            f"held-out multiple-choice rows. Filter: the top {study.drop_rate:.0%} of each view dropped "
            f"({', '.join(study.filters)}; image / text: {study.detector} on the world CLIP's embeddings; "
            "answer-loss: under the base LLaVA), then the finetune again on the rest. AUROC union: a row's largest "
            "rank percentile over the views.")


def _plot(path: Path, study: Any, by_attack: Mapping[str, list[dict[str, Any]]], seeds: list[int]) -> None:
    from mmrobust.reports.plots import grouped_bars

    mean = lambda n, k: spread([r[k] for r in by_attack[n]])["mean"]  # noqa: E731
    grouped_bars(path, groups=list(study.attacks),
                 series={"ASR, clean model": [mean(n, "asr_clean_model") for n in study.attacks],
                         "ASR, poisoned": [mean(n, "asr") for n in study.attacks],
                         "ASR, filtered + retrained": [mean(n, "asr_filtered") for n in study.attacks],
                         "clean acc, poisoned": [mean(n, "acc") for n in study.attacks]},
                 title=f"instruction-data backdoors on the tiny LLaVA (mean of seeds {', '.join(map(str, seeds))})",
                 colors=["#9e9e9e", "#d8453b", "#4caf50", "#3b7dd8"])


def summarise(out: Path, study: Any, base: Any, per_seed: Mapping[int, Mapping[str, Any]]) -> dict[str, Any]:
    """Write the aggregate into ``out``; returns ``{"table", "plot", "claims", "record"}``."""
    out.mkdir(parents=True, exist_ok=True)
    seeds = list(per_seed)
    by_attack = {n: [next(r for r in per_seed[s]["rows"] if r["attack"] == n) for s in seeds] for n in study.attacks}
    spec = columns(tuple(study.filters))
    shown, caption = _table(by_attack, spec), _caption(study, seeds)
    table = format_table(shown, [("attack", "attack")] + [(k, h) for k, h, _ in spec], markdown=True)
    checked = check_claims(claims(tuple(study.attacks)), per_seed)
    claims_tab = claims_table(checked)
    claims_md = format_table(claims_tab["rows"], [(c["key"], c["heading"]) for c in claims_tab["columns"]],
                             markdown=True)
    _plot(out / PLOT, study, by_attack, seeds)
    warnings = _warnings(by_attack, seeds)
    seconds = {str(s): per_seed[s]["seconds"] for s in seeds}
    warned = "".join(f"> warning: {w}\n\n" for w in warnings)
    (out / "summary.md").write_text(f"# Instruction-data backdoors, {len(seeds)} seeds\n\n{warned}{table}\n\n"
                                    f"{caption}\n\n## Headline effects at every seed\n\n{claims_md}\n\nSeconds "
                                    f"this run spent per seed (a stage reused from an earlier run counts ~0): "
                                    f"{seconds}\n")
    tables = [Table.of("Instruction-data backdoors over seeds", [("attack", "attack")] +
                       [(k, h) for k, h, _ in spec], shown, caption),
              Table.of(claims_tab["title"], [(c["key"], c["heading"]) for c in claims_tab["columns"]],
                       claims_tab["rows"], claims_tab["caption"])]
    metrics = {"per_seed": {str(s): dict(per_seed[s]) for s in seeds}, "claims": checked, "seconds": seconds}
    record = write_record(out, Record(kind=f"{KIND}.study", metrics=metrics, tables=tables, plots=[PLOT],
                                      config={"study": asdict(study), "base": asdict(base)},
                                      seeds={"seeds": seeds}, warnings=warnings), name=KIND)
    return {"table": table, "claims": claims_md, "plot": str(out / PLOT), "record": record}
