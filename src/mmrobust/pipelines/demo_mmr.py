"""The MMR story offline (Liu et al. 2024, "Seeing Clearly, Answering Incorrectly"): synthetic
leading-question pairs -> a tiny random LLaVA built from a config, run through the real ``hf``
adapter -> RA / MR per category with bootstrap CIs -> table and chart.

A random-weight model scores at chance: the story shows the harness (processor, chat template,
batched generation, cache, parsers, pairing by id, scoring) end to end, not a finding.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from mmrobust.reports.contract import Record, Table, write_record
from mmrobust.reports.tables import format_table


def run_mmr_run(root: Path, *, seed: int, pairs_per_category: int, image_size: int = 32,
                n_boot: int = 1000) -> dict[str, Any]:
    """Write ``mmr-world/``, ``tiny-llava/`` and ``mmr-run/`` under ``root``; return the MMR record."""
    from mmrobust.eval.mmr import RunSettings, load_mmr, run_mmr
    from mmrobust.models.mllm import GenerationParams, build_adapter
    from mmrobust.world.llava import build_tiny_llava
    from mmrobust.world.mmr import generate_mmr_world

    data = load_mmr(generate_mmr_world(root / "mmr-world", pairs_per_category=pairs_per_category, seed=seed,
                                       image_size=image_size))
    model_dir = root / "tiny-llava"
    if not (model_dir / "config.json").exists():
        build_tiny_llava(model_dir, seed=seed, image_size=image_size, extra_words=[i.question for i in data.items])
    adapter = build_adapter("hf", model=str(model_dir), options={"device": "cpu", "dtype": "float32",
                                                                 "batch_size": 8})
    settings = RunSettings(n_boot=n_boot, seed=seed, params=GenerationParams(max_new_tokens=8))
    return run_mmr(data, adapter, out_dir=root / "mmr-run", settings=settings)


def run_mmr_demo(out_dir: str | Path, *, progress: bool = True, log: Any = print, seed: int = 0,
                 pairs_per_category: int = 4) -> dict[str, Any]:
    """Run the offline MMR story into ``out_dir``; returns {"table", "plot", "record"}."""
    out = Path(out_dir)
    record = run_mmr_run(out, seed=seed, pairs_per_category=pairs_per_category)
    m = record["metrics"]
    rows = [{"group": name, "pairs": g["n_pairs"], "RA": g["ra"], "MR": g["mr"], "unparseable": g["n_unparseable"]}
            for name, g in [*m["per_category"].items(), ("ALL (micro)", m["overall"])]]
    table = format_table(rows, [("group", "category"), ("pairs", "pairs"), ("RA", "RA %"), ("MR", "MR %"),
                                ("unparseable", "unparseable answers")], markdown=True)
    (out / "summary.md").write_text(f"# MMR story (tiny random LLaVA; chance-level by construction)\n\n{table}\n")
    chart = out / "mmr-run" / record["files"]["plots"][0]
    log(f"[mmr] {m['overall']['n_pairs']} pairs: RA {m['overall']['ra']:.1%}, MR "
        f"{(m['overall']['mr'] or 0):.1%} (random-weight model: chance level)")
    story = Table.of("MMR story: a tiny random-weight LLaVA on synthetic leading-question pairs",
                     [("group", "category"), ("pairs", "pairs", "count"), ("RA", "RA", "%"), ("MR", "MR", "%"),
                      ("unparseable", "unparseable answers", "count")], rows,
                     "RA: pairs with both questions right; MR: pairs misled by the leading question, over pairs "
                     "whose straightforward question is right. The model has random weights, so these numbers "
                     "are chance by construction: the story shows the harness, not a finding.")
    write_record(out, Record(kind="story.mmr", metrics={"overall": m["overall"]}, tables=[story],
                             plots=[str(chart.relative_to(out))], config={"seed": seed,
                                                                          "pairs_per_category": pairs_per_category},
                             seeds={"demo": seed}), name="story")
    return {"table": table, "plot": str(chart), "record": record}
