"""The demo stories over several seeds: each seed is a whole run (its own world and its own training
seeds) in ``OUT/seed-K/``; the stories' records are then aggregated into ``OUT/<story>/``:
``results_seeds.json`` (every seed's metrics, each table as ``mean ± sd (min-max)`` with the statistics,
the headline claims checked at every seed), ``summary.md`` and a plot with one dot per seed.

Each seed resumes on its own: finished stages are reused, so an interrupted multi-seed run continues
where it stopped, and adding a seed reruns only that seed.

Example::

    run_seeds(["backdoor"], seeds=[0, 1, 2, 3, 4], out_dir="runs/seeds")
"""
from __future__ import annotations

import dataclasses
import importlib
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from mmrobust.errors import DataError
from mmrobust.reports.contract import Record, Table, write_record
from mmrobust.reports.plots import seed_bars
from mmrobust.jsonio import read_json
from mmrobust.reports.spread import aggregate_table, check_claims, claims_table
from mmrobust.reports.tables import format_table

STORIES = {  # name -> (module, function, settings class) of a library story taking (out_dir, settings, progress, log)
    "backdoor": ("mmrobust.stories.backdoor", "run_backdoor_demo", "BackdoorDemo"),
    "adversarial": ("mmrobust.stories.adversarial", "run_adversarial_demo", "AdversarialDemo"),
    "mmr": ("mmrobust.stories.mmr_trained", "run_mmr_trained_demo", "MMRTrainedDemo"),
    "lvlm": ("mmrobust.stories.lvlm", "run_lvlm_demo", "LVLMDemo"),
}


def check_aggregate_target(dest: str | Path, *, kind: str = "seeds") -> None:
    """Refuse (one line) to write an aggregate into ``dest`` when its ``summary.md`` is not ours: only a
    folder whose ``results_<kind>.json`` an aggregation of that kind wrote gets its summary replaced."""
    dest = Path(dest)
    if not (dest / "summary.md").exists() and not (dest / "summary.md").is_symlink():
        return
    try:
        ours = str(read_json(dest / f"results_{kind}.json").get("kind", "")).startswith(kind)
    except (OSError, ValueError, AttributeError):
        ours = False
    if not ours:
        raise DataError(f"{dest / 'summary.md'} exists and no {kind} aggregation wrote it; choose another --out "
                        "(mmrobust replaces only the summaries it wrote)")


def story_parts(name: str) -> tuple[Callable[..., dict[str, Any]], type, tuple[Any, ...]]:
    """The story's run function, its settings class and its headline claims (``CLAIMS`` of its module)."""
    mod, fn, cls = STORIES[name]
    module = importlib.import_module(mod)
    return getattr(module, fn), getattr(module, cls), tuple(getattr(module, "CLAIMS", ()))


def with_seed(settings: Any, seed: int) -> Any:
    """``settings`` with every seed field set to ``seed`` (the run seed and, where there is one, the
    world seed): another seed is another world and another training run, not only another init."""
    names = {f.name for f in dataclasses.fields(settings)}
    return dataclasses.replace(settings, **{k: seed for k in ("seed", "world_seed") if k in names})


def run_seeds(stories: Sequence[str], *, seeds: Sequence[int], out_dir: str | Path,
              settings: Mapping[str, Any] | None = None, progress: bool = True,
              log: Callable[[str], Any] = print) -> dict[str, dict[str, Any]]:
    """Run each story at each seed (seed by seed, so every finished seed is complete), then aggregate;
    returns story -> its aggregate (see :func:`aggregate_story`)."""
    out = Path(out_dir)
    settings = dict(settings or {})
    for name in stories:
        check_aggregate_target(out / name)  # before hours of runs, not after
    for seed in seeds:
        for name in stories:
            fn, cls, _ = story_parts(name)
            log(f"== {name} story, seed {seed} -> {out / f'seed-{seed}' / name}")
            fn(out / f"seed-{seed}" / name, with_seed(settings.get(name, cls()), seed), progress=progress, log=log)
    return {name: aggregate_story(name, out, seeds) for name in stories}


def aggregate_story(name: str, out_dir: str | Path, seeds: Sequence[int]) -> dict[str, Any]:
    """Read ``OUT/seed-K/<name>/results_story.json`` for each seed and write the aggregate record into
    ``OUT/<name>/`` (see the module docstring); returns {"table", "plot", "claims", "record"}."""
    out = Path(out_dir)
    records = {seed: read_json(out / f"seed-{seed}" / name / "results_story.json") for seed in seeds}
    _, _, claims = story_parts(name)
    checked = check_claims(claims, {s: r["metrics"] for s, r in records.items()})
    tables = [aggregate_table([r["tables"][i] for r in records.values()])
              for i in range(min(len(r["tables"]) for r in records.values()))]
    dest = out / name
    check_aggregate_target(dest)
    dest.mkdir(parents=True, exist_ok=True)
    plot = _plot(dest / f"{name}_seeds.png", tables[0], name, len(seeds))
    claim_t = claims_table(checked)
    warnings = [f"{c['description']}: fails at seed {c['worst_seed']} ({c['bar']}); the effect is seed-dependent"
                for c in checked if c["verdict"] == "seed-dependent"]
    config = {"seeds": list(seeds), "settings": {str(s): r["config"] for s, r in records.items()}}
    record = Record(kind=f"seeds.{name}", metrics={"per_seed": {str(s): r["metrics"] for s, r in records.items()},
                                                    "tables": tables, "claims": checked},
                    config=config, seeds={"seeds": list(seeds)}, plots=[plot.name], warnings=warnings,
                    tables=[_as_table(t) for t in (claim_t, *tables)])
    written = write_record(dest, record, name="seeds")
    text = _markdown(f"{name} story", seeds, tables, claim_t)
    (dest / "summary.md").write_text(text)
    return {"table": text, "plot": str(plot), "claims": checked, "record": written}


def aggregate_runs(out_dir: str | Path, seeds: Sequence[int]) -> dict[str, Any]:
    """Aggregate the records of one command run at several seeds (``OUT/seed-K/results*.json``, as
    ``mmrobust train|eval ... --seeds`` writes them) into ``OUT/results_seeds.json`` and ``OUT/summary.md``:
    each declared table (or, for a record without tables, its scalar metrics) as ``mean ± sd (min-max)``."""
    out = Path(out_dir)
    check_aggregate_target(out)
    names = sorted(p.name for p in (out / f"seed-{seeds[0]}").glob("results*.json"))
    names = [n for n in names if all((out / f"seed-{k}" / n).is_file() for k in seeds)]
    tables: list[dict[str, Any]] = []
    per_seed: dict[str, dict[str, Any]] = {}
    warnings: set[str] = set()
    for name in names:
        records = [read_json(out / f"seed-{k}" / name) for k in seeds]
        per_seed[name] = {str(k): r.get("metrics") for k, r in zip(seeds, records)}
        warnings |= {f"seed {k}: {w}" for k, r in zip(seeds, records) for w in r.get("warnings") or []}
        declared = [r.get("tables") or [_scalar_table(r)] for r in records]
        tables += [aggregate_table([d[i] for d in declared]) for i in range(min(map(len, declared)))
                   if all(d[i]["rows"] for d in declared)]
    written = write_record(out, Record(kind="seeds", metrics={"per_seed": per_seed, "tables": tables},
                                       config={"seeds": list(seeds), "records": names}, seeds={"seeds": list(seeds)},
                                       tables=[_as_table(t) for t in tables], warnings=sorted(warnings)), name="seeds")
    text = _markdown(out.name, seeds, tables, None)
    (out / "summary.md").write_text(text)
    return {"table": text, "record": written}


def _scalar_table(record: Mapping[str, Any]) -> dict[str, Any]:
    """A record without declared tables: one row of its numeric metrics (one level of nesting flattened)."""
    flat: dict[str, Any] = {"run": record.get("kind", "run")}
    for k, v in (record.get("metrics") or {}).items():
        for key, val in (v.items() if isinstance(v, dict) else [(None, v)]):
            if isinstance(val, (int, float)) and not isinstance(val, bool):
                flat[f"{k}.{key}" if key else k] = val
    cols = [{"key": k, "heading": k, "unit": ""} for k in flat]
    return {"title": str(record.get("kind", "results")), "columns": cols, "rows": [flat] if len(flat) > 1 else [],
            "caption": "The record's numeric metrics."}


def _as_table(table: Mapping[str, Any]) -> Table:
    """A declared table (dict) as the contract's :class:`Table`; per-cell statistics (``_spread``) stay in
    the record's metrics, not in the shown rows."""
    return Table.of(table["title"], [(c["key"], c["heading"], c.get("unit", "")) for c in table["columns"]],
                    [{k: v for k, v in r.items() if k != "_spread"} for r in table["rows"]], table["caption"])


def _markdown(name: str, seeds: Sequence[int], tables: Sequence[Mapping[str, Any]],
              claims: Mapping[str, Any] | None) -> str:
    parts = [f"# {name} over seeds {', '.join(map(str, seeds))}\n"]
    for t in [claims, *tables] if claims else tables:
        cols = [(c["key"], c["heading"]) for c in t["columns"]]
        parts.append(f"## {t['title']}\n\n{format_table(t['rows'], cols, markdown=True)}\n\n{t['caption']}\n")
    return "\n".join(parts)


def _plot(path: Path, table: Mapping[str, Any], name: str, n_seeds: int) -> Path:
    """The first table's percentage columns: mean bars, min-max error bars, one dot per seed."""
    label = table["columns"][0]["key"]
    keys = [c["key"] for c in table["columns"][1:] if c["heading"].endswith("(%)")][:4]
    groups = [str(r[label]) for r in table["rows"]]
    series = {next(c["heading"][:-4] for c in table["columns"] if c["key"] == k):
              [r["_spread"][k]["values"] if k in r["_spread"] else [0.0] for r in table["rows"]] for k in keys}
    return seed_bars(path, groups=groups, series=series, title=f"{name} story over {n_seeds} seeds (dots: seeds)")
