"""Ablation of the backdoor defenses' knobs on the demo's poisoned CLIP (run by hand, CPU is fine).

Reuses a finished backdoor demo directory (its world, poison record and poisoned model), then runs
each finetune variant with the same library code as `mmrobust train` / `mmrobust eval backdoor` and
prints one Markdown row per variant: task, knob values, clean top-1 and ASR.

    python benchmarks/ablation_backdoor.py --demo runs/demo/backdoor --out runs/ablation \
        --variant par:lr=1e-3,steps=150,tau=2.15 --variant cleanclip:lr=5e-4,steps=150,l2=2
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from mmrobust.values import parse_value
from mmrobust.data.poison import PoisonRecord
from mmrobust.pipelines.evaluate import EvalData, eval_backdoor
from mmrobust.stories.stages import clean_subset
from mmrobust.pipelines.train import DataSpec, ModelSpec, TrainJob, run_train
from mmrobust.training.loop import TrainConfig

OPTIM_KEYS = {"lr": float, "steps": int, "batch": int, "pairs": int}


def parse_variant(text: str) -> tuple[str, dict, dict]:
    task, _, rest = text.partition(":")
    optim, opts = {}, {}
    for kv in filter(None, rest.split(",")):
        k, v = kv.split("=")
        if k in OPTIM_KEYS:
            optim[k] = OPTIM_KEYS[k](v)
        else:
            opts[k] = parse_value(v)  # as `mmrobust train --opt` reads task options
    return task, optim, opts


def run_variant(demo: Path, out: Path, task: str, optim: dict, opts: dict, seed: int) -> dict:
    world = demo.parent / "world"
    rec = PoisonRecord.load(demo / "poisoned" / "poison.json")
    pairs = optim.get("pairs", 5000)
    clean = clean_subset(world / "train.csv", out / f"clean_{pairs}.csv", exclude=rec.poisoned_ids, n=pairs)
    name = task + "-" + "-".join(f"{k}{v}" for k, v in {**optim, **opts}.items())
    cfg = TrainConfig(steps=optim.get("steps", 150), batch_size=optim.get("batch", 128), lr=optim.get("lr", 5e-4),
                      weight_decay=0.1, warmup_steps=max(1, optim.get("steps", 150) // 10), ckpt_every=0, seed=seed)
    job = TrainJob(task=task, model=ModelSpec(name=str(demo / "pretrain" / "model")),
                   data=DataSpec(manifest=str(clean), label_col="label", classes=str(world / "classes.json"),
                                 allow_outside=True),  # its own subset, pointing into the demo world
                   optim=cfg, out_dir=str(out / name), task_options=opts)
    start = time.time()
    model_dir, _ = run_train(job, progress=False)
    m = eval_backdoor(model=str(model_dir), data=EvalData(str(world / "test.csv"), str(world / "classes.json")),
                      trigger=rec.build_trigger(), target=rec.target, out_dir=out / name / "eval", seed=seed)
    return {"variant": name, "clean": m["clean_top1"], "asr": m["asr"], "seconds": round(time.time() - start)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--demo", required=True, help="a finished backdoor demo directory (runs/demo/backdoor)")
    p.add_argument("--out", required=True)
    p.add_argument("--variant", action="append", required=True, help="task:key=value,... (lr, steps, batch, pairs, task options)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    rows = []
    print("| variant | clean top-1 % | ASR % | seconds |\n|---|---|---|---|", flush=True)
    for v in args.variant:
        task, optim, opts = parse_variant(v)
        r = run_variant(Path(args.demo), Path(args.out), task, optim, opts, args.seed)
        rows.append(r)
        print(f"| {r['variant']} | {100 * r['clean']:.1f} | {100 * r['asr']:.1f} | {r['seconds']} |", flush=True)
    Path(args.out, "ablation.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
