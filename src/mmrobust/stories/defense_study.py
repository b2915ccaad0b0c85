"""A test-time defense on the demo's CLIPs over seeds (`mmrobust study ttc`): the paper's protocol beside the
adaptive attack, per seed and as mean ± sd (min-max).

``mmrobust demo --seeds 0,1,2`` trains one tiny CLIP per seed on its own world (``RUNS/seed-K/adversarial/clip/
model`` and ``RUNS/seed-K/world/test.csv``). For each seed the defended evaluation (:mod:`mmrobust.eval.defended`)
runs on that model and world into ``OUT/seed-K/`` (sample and attack seed K), resumable stage by stage; the
records are then aggregated into ``OUT/results_seeds.json`` and ``OUT/summary.md``. Nothing is written under
``RUNS``.

Example::

    run_defense_study(runs="runs/seeds", seeds=[0, 1, 2], out_dir="runs/study-ttc",
                      settings=DefendedSettings(defense="ttc", eps=(1/255, 4/255), n_samples=100))
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable, Sequence

from mmrobust.errors import DataError
from mmrobust.eval.defended import DefendedSettings
from mmrobust.pipelines.defended import eval_defended
from mmrobust.pipelines.evaluate import EvalData
from mmrobust.stories.seeds import aggregate_runs, check_aggregate_target
from mmrobust.stories.stages import run_stage, stamp

MODEL_PATH = "adversarial/clip/model"  # the adversarial story's plain CLIP inside RUNS/seed-K


def seed_inputs(runs: Path, seed: int, model_path: str = MODEL_PATH) -> tuple[Path, EvalData]:
    """The model directory and the world's test split of one seed of a ``mmrobust demo --seeds`` run."""
    root = runs / f"seed-{seed}"
    model, world = root / model_path, root / "world"
    missing = [p for p in (model, world / "test.csv", world / "classes.json") if not p.exists()]
    if missing:
        raise DataError(f"{missing[0]} is missing: --runs must be the --out of `mmrobust demo --seeds ...` with "
                        f"seed {seed} finished (run `mmrobust demo --seeds {seed} --out {runs}` first)")
    return model, EvalData(manifest=str(world / "test.csv"), classes=str(world / "classes.json"))


def run_defense_study(*, runs: str | Path, seeds: Sequence[int], out_dir: str | Path, settings: DefendedSettings,
                      model_path: str = MODEL_PATH, log: Callable[[str], Any] = print) -> dict[str, Any]:
    """The defended evaluation at every seed, then the aggregate; returns {"table", "record"}."""
    runs, out = Path(runs), Path(out_dir)
    check_aggregate_target(out)  # before minutes of attacks, not after
    inputs = {k: seed_inputs(runs, k, model_path) for k in seeds}  # all checked before the first run
    for k, (model, data) in inputs.items():
        s, dest = dataclasses.replace(settings, seed=k), out / f"seed-{k}"
        log(f"== seed {k}: {s.defense} on {model} -> {dest}")
        config = {"model": str(model), "stamp": stamp(model), "data": data.manifest,
                  "settings": dataclasses.asdict(s)}
        run_stage(dest, config, _stage(model, data, dest, s))
    return aggregate_runs(out, list(seeds))


def _stage(model: Path, data: EvalData, dest: Path, s: DefendedSettings) -> Callable[[], dict[str, Any]]:
    """The defended evaluation of one seed, as a resumable stage (its output: the per-eps metrics)."""
    return lambda: {"eps": eval_defended(model=str(model), data=data, out_dir=dest, settings=s)["eps"]}
