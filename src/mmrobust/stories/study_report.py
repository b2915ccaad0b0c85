"""The backdoor matrix's aggregate (``OUT/matrix/``): ASR and clean accuracy of every (attack, defense)
cell as ``mean ± sd (min-max)`` over seeds, the detector's AUROC / AP / precision per attack, a heatmap,
``results_study.json`` (every seed's value of every cell) and ``summary.md``."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Mapping, Sequence

from mmrobust.reports.contract import Record, Table, write_record
from mmrobust.reports.plots import heatmap
from mmrobust.reports.sanity import backdoor_not_taken
from mmrobust.reports.spread import aggregate_table, spread
from mmrobust.reports.tables import format_table
from mmrobust.stories.seeds import check_aggregate_target

KIND = "study"


def check_target(dest: Path) -> None:
    """Refuse to replace a ``summary.md`` in ``dest`` that no study wrote."""
    check_aggregate_target(dest, kind=KIND)


def _matrix_table(title: str, key: str, attacks: Sequence[str], defenses: Sequence[str],
                  cells: Mapping[tuple[str, str], Mapping[str, Any]], caption: str) -> dict[str, Any]:
    """One seed's attack x defense table of ``key`` (a fraction), as a declared table dict."""
    rows = [{"attack": a, **{d: cells[a, d][key] for d in defenses}} for a in attacks]
    cols = [{"key": "attack", "heading": "attack", "unit": ""}] + [
        {"key": d, "heading": d, "unit": "%"} for d in defenses]
    return {"title": title, "columns": cols, "rows": rows, "caption": caption}


def share(x: float) -> str:
    """A rate as a percentage with the digits it needs: 0.05 -> "5%", 0.005 -> "0.5%" (not "0%")."""
    return f"{100 * x:.3g}%"


def _detection_table(detector: str, attacks: Sequence[str], poisoned: Mapping[str, Mapping[str, Any]], k: int,
                     drop_rate: float, reference: str = "all") -> dict[str, Any]:
    """Per attack: every detector's AUROC, the filter detector's AP and precision at n, and what it dropped."""
    names = list(poisoned[attacks[0]]["audit"]["detectors"])
    rows = []
    for a in attacks:
        audit = poisoned[a]["audit"]
        rows.append({"attack": a, **{f"auroc_{d}": audit["detectors"][d]["auroc"] for d in names},
                     "ap": audit["detectors"][detector]["ap"],
                     "precision": audit["detectors"][detector]["precision_at_n"],
                     "n": poisoned[a]["n_poisoned"], "dropped_poisoned": audit["dropped_poisoned"]})
    cols = [{"key": "attack", "heading": "attack", "unit": ""}]
    cols += [{"key": f"auroc_{d}", "heading": f"AUROC {d}", "unit": ""} for d in names]
    cols += [{"key": "ap", "heading": f"AP {detector}", "unit": ""},
             {"key": "precision", "heading": f"precision at n {detector}", "unit": "%"},
             {"key": "n", "heading": "poisoned pairs (n)", "unit": ""},
             {"key": "dropped_poisoned", "heading": f"poisoned among the {share(drop_rate)} dropped", "unit": ""}]
    where = ("all pairs as one reference set" if reference == "all" else
             "each pair's neighbours searched in a held-out clean world (a dedicated reference set the defender holds)")
    against = "" if reference == "all" else ", clean reference"
    return {"title": f"Poisoned-pair detection on the poisoned CLIP's image embeddings (k={k}{against})",
            "columns": cols, "rows": rows,
            "caption": "Every training pair of the poisoned set scored against its poison record (Huang et al., "
                       f"ICLR 2025), {where}; higher = more suspicious, so an AUROC below 0.5 "
                       "means the poisons score as less suspicious than clean pairs (denser, not sparser). Precision "
                       f"at n = share of poisoned pairs among the n highest {detector} scores."}


def _per_seed(study: Any, base: Any, seed: int, poisoned: Mapping, cells: Mapping) -> list[dict[str, Any]]:
    """The three declared tables of one seed."""
    at = {(a, d): cells[seed, a, d] for a in study.attacks for d in study.defenses}
    budget = (f"{share(base.poison_rate)} of {base.n_train} pairs poisoned (target '{base.target}'); pretraining "
              f"{base.pretrain_steps} steps, each finetune {base.finetune_steps} steps on {base.finetune_pairs} clean "
              f"pairs; filter defenses drop the top {share(study.drop_rate)} by {study.detector} and pretrain again.")
    return [
        _matrix_table("Attack success rate by attack (rows) and defense (columns)", "asr", study.attacks,
                      study.defenses, at, "ASR = share of triggered test images (true class not the target) "
                      f"predicted as the target. {budget}"),
        _matrix_table("Clean zero-shot top-1 by attack and defense", "clean_top1", study.attacks, study.defenses,
                      at, budget),
        _detection_table(study.detector, study.attacks, {a: poisoned[seed, a] for a in study.attacks}, study.k,
                         study.drop_rate, study.reference),
    ]


def _as_table(t: Mapping[str, Any]) -> Table:
    return Table.of(t["title"], [(c["key"], c["heading"], c.get("unit", "")) for c in t["columns"]],
                    [{k: v for k, v in r.items() if k != "_spread"} for r in t["rows"]], t["caption"])


def _plot(dest: Path, study: Any, seeds: Sequence[int], cells: Mapping, poisoned: Mapping) -> Path:
    def vals(a: str, d: str, key: str) -> dict[str, Any]:
        return spread([cells[s, a, d][key] for s in seeds])

    asr = [[vals(a, d, "asr")["mean"] for d in study.defenses] for a in study.attacks]
    notes = [[f"{100 * vals(a, d, 'asr')['mean']:.0f}"
              + (f"±{100 * vals(a, d, 'asr')['sd']:.0f}" if len(seeds) > 1 else "")
              + f"\nclean {100 * vals(a, d, 'clean_top1')['mean']:.0f}" for d in study.defenses] for a in study.attacks]
    auroc = [spread([poisoned[s, a]["audit"]["detectors"][study.detector]["auroc"] for s in seeds])["mean"]
             for a in study.attacks]
    label = f"{study.detector} AUROC" + ("" if study.reference == "all" else f"\n({study.reference} reference)")
    return heatmap(dest / "matrix.png", rows=study.attacks, cols=study.defenses, values=asr, notes=notes,
                   side=(label, auroc), colorbar="ASR %",
                   title=f"Backdoor ASR % (mean{'±sd' if len(seeds) > 1 else ''} over {len(seeds)} seeds) "
                         "and clean top-1 %")


def summarise(out: Path, study: Any, base: Any, seeds: list[int], poisoned: Mapping, cells: Mapping) -> dict[str, Any]:
    """Write ``out/matrix/`` (see the module docstring) from the finished cells; returns
    {"table": markdown, "plot": path, "record": the JSON record}."""
    dest = out / "matrix"
    check_target(dest)
    dest.mkdir(parents=True, exist_ok=True)
    per_seed = [_per_seed(study, base, s, poisoned, cells) for s in seeds]
    tables = [aggregate_table([p[i] for p in per_seed]) for i in range(len(per_seed[0]))]
    plot = _plot(dest, study, seeds, cells, poisoned)
    flat = [{"seed": s, "attack": a, "defense": d, "clean_top1": cells[s, a, d]["clean_top1"],
             "asr": cells[s, a, d]["asr"]} for s in seeds for a in study.attacks for d in study.defenses]
    detection = [{"seed": s, "attack": a, **poisoned[s, a]["audit"]["detectors"][study.detector]}
                 for s in seeds for a in study.attacks]
    warnings = [f"seed {s}, {a}: {w}" for s in seeds for a in study.attacks
                for w in backdoor_not_taken(poisoned[s, a]["asr"], stage="poisoned CLIP")]
    record = Record(kind=f"{KIND}.backdoor", metrics={"cells": flat, "detection": detection, "tables": tables},
                    config={"study": dataclasses.asdict(study), "base": dataclasses.asdict(base), "seeds": seeds},
                    seeds={"seeds": seeds}, tables=[_as_table(t) for t in tables], plots=[plot.name],
                    warnings=warnings)
    written = write_record(dest, record, name=KIND)
    text = _markdown(study, seeds, tables, warnings)
    (dest / "summary.md").write_text(text)
    return {"table": text, "plot": str(plot), "record": written}


def _markdown(study: Any, seeds: Sequence[int], tables: Sequence[Mapping[str, Any]], warnings: Sequence[str]) -> str:
    parts = [f"# Backdoor matrix: {len(study.attacks)} attacks x {len(study.defenses)} defenses over seeds "
             f"{', '.join(map(str, seeds))}\n"]
    parts += [f"> warning: {w}\n" for w in warnings]
    for t in tables:
        cols = [(c["key"], c["heading"]) for c in t["columns"]]
        parts.append(f"## {t['title']}\n\n{format_table(t['rows'], cols, markdown=True)}\n\n{t['caption']}\n")
    return "\n".join(parts)
