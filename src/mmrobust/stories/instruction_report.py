"""The aggregate of `mmrobust study instructions`: one row per attack over seeds (mean ± sd, min-max), the
headline effects checked at every seed, a chart, ``summary.md`` and ``results_instructions.json``."""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any, Mapping

from mmrobust.reports.contract import Record, Table, write_record
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
        return format_spread(stats, unit)
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


def summarise(out: Path, study: Any, base: Any, per_seed: Mapping[int, Mapping[str, Any]]) -> dict[str, Any]:
    """Write the aggregate into ``out``; returns ``{"table", "plot", "claims", "record"}``."""
    from mmrobust.reports.plots import grouped_bars

    out.mkdir(parents=True, exist_ok=True)
    seeds = list(per_seed)
    by_attack = {n: [next(r for r in per_seed[s]["rows"] if r["attack"] == n) for s in seeds] for n in study.attacks}
    spec = columns(tuple(study.filters))
    shown = _table(by_attack, spec)
    cols = [("attack", "attack")] + [(k, h) for k, h, _ in spec]
    table = format_table(shown, cols, markdown=True)
    checked = check_claims(claims(tuple(study.attacks)), per_seed)
    claims_md = format_table(claims_table(checked)["rows"], [(c["key"], c["heading"]) for c in
                                                             claims_table(checked)["columns"]], markdown=True)
    mean = lambda n, k: spread([r[k] for r in by_attack[n]])["mean"]  # noqa: E731
    grouped_bars(out / PLOT, groups=list(study.attacks),
                 series={"ASR, clean model": [mean(n, "asr_clean_model") for n in study.attacks],
                         "ASR, poisoned": [mean(n, "asr") for n in study.attacks],
                         "ASR, filtered + retrained": [mean(n, "asr_filtered") for n in study.attacks],
                         "clean acc, poisoned": [mean(n, "acc") for n in study.attacks]},
                 title=f"instruction-data backdoors on the tiny LLaVA (mean of seeds {', '.join(map(str, seeds))})",
                 colors=["#9e9e9e", "#d8453b", "#4caf50", "#3b7dd8"])
    seconds = {str(s): per_seed[s]["seconds"] for s in seeds}
    caption = (f"Seeds {', '.join(map(str, seeds))}: mean ± sd (min-max). Each seed finetunes the MMR story's "
               f"baseline LLaVA for {study.steps} steps on {3 * study.finetune_images} VQA rows, clean or with "
               f"poisoned rows (target {study.target!r}; text trigger {study.phrase!r}; Shadowcast {study.concept} -> "
               f"{study.destination} at l-inf {study.shadowcast_eps * 255:.0f}/255). Clean acc on "
               f"{study.test_images} held-out multiple-choice rows. Filter: the top {study.drop_rate:.0%} of each view "
               f"dropped ({', '.join(study.filters)}; image / text: {study.detector} on the world CLIP's embeddings; "
               "answer-loss: under the base LLaVA), then the finetune again on the rest. AUROC union: a row's "
               "largest rank percentile over the views.")
    (out / "summary.md").write_text(f"# Instruction-data backdoors, {len(seeds)} seeds\n\n{table}\n\n{caption}\n\n"
                                    f"## Headline effects at every seed\n\n{claims_md}\n\nSeconds this run spent "
                                    f"per seed (a stage reused from an earlier run counts ~0): {seconds}\n")
    metrics = {"per_seed": {str(s): dict(per_seed[s]) for s in seeds}, "claims": checked, "seconds": seconds}
    tables = [Table.of("Instruction-data backdoors over seeds", [("attack", "attack")] +
                       [(k, h) for k, h, _ in spec], shown, caption)]
    record = write_record(out, Record(kind=f"{KIND}.study", metrics=metrics, tables=tables, plots=[PLOT],
                                      config={"study": asdict(study), "base": asdict(base)},
                                      seeds={"seeds": seeds}, extra={"claims_table": claims_table(checked)}),
                          name=KIND)
    return {"table": table, "claims": claims_md, "plot": str(out / PLOT), "record": record}
