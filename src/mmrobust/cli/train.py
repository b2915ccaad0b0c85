"""`mmrobust train`: pretrain / finetune / defend a CLIP with one registered Task."""
from __future__ import annotations

import argparse
import sys

from mmrobust.cli.common import (add_config_option, add_path_options, apply_config, delimiter, device, key_values,
                                 over_seeds, add_seeds_option, print_record_warnings, seed)
from mmrobust.cli.options import add_settings, settings_from
from mmrobust.tasks.build import task_option_values
from mmrobust.errors import ConfigError
from mmrobust.pipelines.train import RUN_FILES, DataSpec, ModelSpec, TrainJob, run_train
from mmrobust.registry import TASKS
from mmrobust.training.distributed import distributed_from_env
from mmrobust.training.loop import TrainConfig


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train or finetune a CLIP with a task (clip, cleanclip, par, supervised, ...)",
                       description="Train with one registered task in the generic loop. Writes RUN_DIR/config.yaml, "
                                   "checkpoints/last.pt, train_log.jsonl, model/ (open_clip hub layout), results.json. "
                                   "Under torchrun (torchrun --nproc_per_node N -m mmrobust.cli.main train ...) "
                                   "each rank takes batch-size / N rows of every batch; rank 0 writes the files.")
    add_config_option(p)
    p.add_argument("--task", help="(required) " + f"one of: {', '.join(TASKS.list())}")
    p.add_argument("--opt", action="append", metavar="KEY=VALUE",
                   help="task option, repeatable (cleanclip: l1, l2; par: tau, view=noise-erase|autoaugment; "
                        "fare/tecoa: eps, attack_steps, ...)")
    m = p.add_argument_group("model")
    m.add_argument("--model", default="mmrobust-tiny",
                   help="open_clip name (ViT-B-32), hf-hub:org/repo, a model directory, or mmrobust-tiny")
    m.add_argument("--pretrained", help="open_clip pretrained tag or weights file (e.g. openai)")
    m.add_argument("--checkpoint", help="extra state dict to load (open_clip/OpenAI/CleanCLIP format)")
    m.add_argument("--init-seed", type=seed, default=0, help="seed for random initialisation")
    m.add_argument("--image-size", type=int, metavar="PX",
                   help="train the image tower at this size (e.g. 336, LLaVA-1.5's): its position embeddings are "
                        "resized first (bicubic, class token kept), recorded in results.json and the model config")
    d = p.add_argument_group("data")
    d.add_argument("--data", help="(required) CSV manifest of image,caption[,label] rows, imagenet:PATH or "
                   "folder:PATH (class folders), or shards:PATTERN for webdataset shards (plain tars of KEY.jpg + "
                   "KEY.txt, e.g. shards:/data/cc3m/{00000..00331}.tar; KEY.cls labels are read with --classes); "
                   "for --task mllm-sft an instruction JSONL (mmrobust.data.instructions)")
    d.add_argument("--image-col", default="image")
    d.add_argument("--caption-col", default="caption")
    d.add_argument("--label-col", help="label column (supervised / tecoa)")
    d.add_argument("--classes", help="classes.json with classnames + templates (supervised / tecoa), or imagenet "
                   "(ImageNet-1k's 1000 names in index order, e.g. for ImageNet shards' .cls labels)")
    d.add_argument("--delimiter", type=delimiter, default=",", help="CSV delimiter (one character; \\t for a tab)")
    d.add_argument("--no-preload", action="store_true", help="read images lazily instead of decoding all at start")
    add_path_options(d)
    o = p.add_argument_group("optimisation")
    o.add_argument("--out", help="(required) run directory")
    add_settings(o, TrainConfig, skip=("betas", "adam_eps", "log_every"), owner=p,
                 types={"device": device}, choices={"precision": ["auto", "fp32", "bf16", "fp16"]})
    o.add_argument("--resume", action="store_true", help="continue from RUN_DIR/checkpoints/last.pt (same settings)")
    o.add_argument("--overwrite", action="store_true",
                   help="replace an earlier run in --out: deletes its " + ", ".join(RUN_FILES) + " (nothing else)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_seeds_option(p, "--seed and --init-seed both set to it")
    p.set_defaults(func=over_seeds(run, "seed", "init_seed"), _parser=p)


def job_from_args(args: argparse.Namespace) -> TrainJob:
    optim = settings_from(args, TrainConfig)
    return TrainJob(
        task=args.task,
        model=ModelSpec(name=args.model, pretrained=args.pretrained, checkpoint=args.checkpoint, seed=args.init_seed,
                        image_size=args.image_size),
        data=DataSpec(manifest=args.data, image_col=args.image_col, caption_col=args.caption_col,
                      data_root=args.data_root, allow_outside=args.allow_outside_paths,
                      label_col=args.label_col, delimiter=args.delimiter, classes=args.classes,
                      preload=not args.no_preload),
        optim=optim, out_dir=args.out,
        task_options=task_option_values(args.task, key_values(args.opt)),
    )


def run(args: argparse.Namespace) -> int:
    args = apply_config(args._parser, args)
    missing = [f"--{o}" for o in ("task", "data", "out", "steps") if getattr(args, o) is None]
    if missing:
        raise ConfigError(f"missing {', '.join(missing)}; give them on the command line or in --config")
    TASKS.get(args.task)  # unknown task -> one-line error before any work
    job = job_from_args(args)
    with distributed_from_env(args.device) as (rank, _):  # under torchrun: join its process group
        announce = (lambda names: print(f"mmrobust train: --overwrite: replacing {', '.join(names)} in {args.out}",
                                        file=sys.stderr)) if rank == 0 else None
        model_dir, result = run_train(job, resume=args.resume, overwrite=args.overwrite, progress=not args.quiet,
                                      on_replace=announce)
    if rank != 0:
        return 0
    last = result.history[-1] if result.history else {}
    print(f"trained {args.task} for {result.steps_done} steps (resumed from {result.resumed_from}); "
          f"final loss {last.get('loss', float('nan')):.4f}; model -> {model_dir}")
    if result.n_dropped:
        print(f"mmrobust train: warning: {result.n_dropped} sample draws had no readable image (unreadable, or "
              "outside the data root: see skipped_images in results.json; --data-root widens it)", file=sys.stderr)
    print_record_warnings(args.out)
    return 0
