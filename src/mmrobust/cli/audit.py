"""`mmrobust audit`: score every pair of a manifest, of shards or of an MLLM instruction file (``--instructions``) for
poisoning (Huang et al., ICLR 2025), report AUROC / AP / precision at n against a poison record, and optionally
write a copy without the top-scored pairs."""
from __future__ import annotations

import argparse

from mmrobust.cli.common import (add_config_option, add_path_options, apply_config, delimiter, device, key_values,
                                 print_record_warnings)
from mmrobust.cli.options import add_settings, settings_from
from mmrobust.errors import ConfigError
from mmrobust.pipelines.audit import AuditResult, AuditSettings, run_audit
from mmrobust.pipelines.audit_data import InstructionData
from mmrobust.pipelines.train import DataSpec
from mmrobust.registry import DETECTORS
from mmrobust.training.distributed import distributed_from_env


MANIFEST_ONLY = (("classes", None, "--classes"), ("image_col", "image", "--image-col"),
                 ("caption_col", "caption", "--caption-col"), ("delimiter", ",", "--delimiter"),
                 ("data_root", None, "--data-root"))


def detector_list(text: str) -> tuple[str, ...]:
    """``dao,kdist`` (or ``all``) as detector names, each checked against the registry."""
    names = tuple(DETECTORS.list()) if text.strip() == "all" else tuple(t.strip() for t in text.split(",") if t.strip())
    for name in names:
        try:
            DETECTORS.get(name)
        except ConfigError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    if not names:
        raise argparse.ArgumentTypeError(f"name at least one detector: {', '.join(DETECTORS.list())}")
    return names


def drop_amount(text: str) -> float | int:
    """``0.05`` (a share) or ``300`` (a count): an integer is a count, anything else a share."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is neither a share such as 0.05 nor a count such as 300") from None


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("audit", help="score pairs for poisoning (DAO, k-distance, LID, SLOF, isolation forest), AUROC "
                                     "against a poison record, drop the top-scored",
                       description="Embed every pair with the CLIP, score it by the density / dimensionality of its k "
                                   "nearest neighbours (Huang et al., ICLR 2025; higher = more suspicious), and write "
                                   "OUT/results_audit.json, OUT/samples_audit.jsonl and OUT/audit_scores.png. With "
                                   "--drop-top also a cleaned copy (OUT/manifest.csv, OUT/instructions.jsonl or "
                                   "OUT/shards/) and "
                                   "OUT/dropped.json. The input is only read. Under torchrun each rank embeds a slice.")
    add_config_option(p)
    p.add_argument("--model", required=True, help="open_clip name, hf-hub:org/repo, or a model directory (RUN/model)")
    p.add_argument("--pretrained", help="open_clip pretrained tag or weights file (e.g. openai)")
    p.add_argument("--checkpoint", help="extra state dict to load (open_clip/OpenAI/CleanCLIP format)")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", help="CSV manifest of image,caption rows, or shards:PATTERN (webdataset tars of "
                                       "KEY.jpg + KEY.txt)")
    source.add_argument("--instructions", help="MLLM instruction JSONL: each row scored by its image and/or its "
                                               "text (assistant turns, then user turns) under --embedding")
    p.add_argument("--classes", help="classes.json (or imagenet) for shards whose samples carry .cls labels")
    p.add_argument("--image-col", default="image")
    p.add_argument("--caption-col", default="caption")
    p.add_argument("--delimiter", type=delimiter, default=",", help="CSV delimiter (one character; \\t for a tab)")
    add_path_options(p)
    p.add_argument("--poison-record", help="poison.json of mmrobust poison: rows (manifest), keys (shards) or row ids "
                                           "(instructions) to measure AUROC / AP / precision at n against")
    p.add_argument("--reference-data", help="trusted clean pairs (CSV manifest or shards:PATTERN, same columns as "
                                            "--data) to search each pair's neighbours among, instead of the audited "
                                            "pairs themselves (a dedicated reference set; use it when poisons may "
                                            "outnumber k)")
    p.add_argument("--out", required=True, help="output folder (not the data's folder, holding none of the input)")
    add_settings(p, AuditSettings, types={"detectors": detector_list, "drop_top": drop_amount, "device": device},
                 choices={"embedding": ["image", "text", "pair"]})
    p.set_defaults(func=run, _parser=p)


def _show(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def print_summary(result: AuditResult, settings: AuditSettings) -> None:
    """The detector table (AUROC, AP, P@n) when there is a record, and the files written."""
    m = result.metrics
    if m.get("n_poisoned") is not None:
        print(f"{'detector':10s} {'AUROC':>7s} {'AP':>7s} {'P@n':>7s}   ({m['n_poisoned']} of {m['n_scored']} "
              f"scored pairs poisoned, n = {m['n_poisoned']})")
        for name in m["auroc"]:  # the detectors run, answer-loss included
            print(f"{name:10s} {_show(m['auroc'].get(name)):>7s} {_show(m['ap'].get(name)):>7s} "
                  f"{_show(m['precision_at_n'].get(name)):>7s}")
    else:
        print(f"scored {m['n_scored']} of {m['n_pairs']} pairs with {', '.join(settings.detectors)} (no poison record)")
    if m.get("n_dropped"):
        poisoned = f" ({m['n_poisoned_dropped']} poisoned)" if m.get("n_poisoned_dropped") is not None else ""
        print(f"dropped {m['n_dropped']} pairs{poisoned}; train on the cleaned copy with --data {result.cleaned}")
    for path in result.files:
        print(f"wrote {path}")


def run(args: argparse.Namespace) -> int:
    args = apply_config(args._parser, args)
    settings = settings_from(args, AuditSettings, detector_options=key_values(args.detector_options))
    data: DataSpec | InstructionData
    if args.instructions is not None:
        given = [f for d, default, f in MANIFEST_ONLY if getattr(args, d) != default]
        if given:
            raise ConfigError(f"{', '.join(given)} only apply to --data; drop them with --instructions (images are "
                              "relative to the JSONL file; --allow-outside-paths allows others)")
        data = InstructionData(args.instructions, allow_outside=args.allow_outside_paths)
    else:
        data = DataSpec(manifest=args.data, image_col=args.image_col, caption_col=args.caption_col,
                        delimiter=args.delimiter, classes=args.classes, preload=False, data_root=args.data_root,
                        allow_outside=args.allow_outside_paths)
    reference = None
    if args.reference_data is not None:
        reference = DataSpec(manifest=args.reference_data, image_col=args.image_col, caption_col=args.caption_col,
                             delimiter=args.delimiter, preload=False, allow_outside=args.allow_outside_paths)
    with distributed_from_env(settings.device):  # under torchrun: each rank embeds a slice, rank 0 scores
        result = run_audit(model=args.model, data=data, out_dir=args.out, settings=settings,
                           weights={"pretrained": args.pretrained, "checkpoint": args.checkpoint},
                           poison_record=args.poison_record, reference=reference)
    if result.files:  # rank 0
        print_summary(result, settings)
        print_record_warnings(args.out, "audit")
    return 0
