"""`mmrobust` entry point: dispatches to one module per subcommand.

Each subcommand module exposes ``register(subparsers)`` which adds its parser and sets
``func=run`` where ``run(args) -> int``. User errors (MMRobustError) print one line.
"""
from __future__ import annotations

import argparse
import importlib
import pickle
import sys

from mmrobust.errors import MMRobustError

SUBCOMMANDS = ("demo", "generate", "poison", "make-trigger", "train", "eval", "audit", "mmr", "bench", "lvlm",
               "report", "compare", "study", "card")


HELP = {
    "demo": "run the embedded stories (backdoor, adversarial, MMR) on synthetic data",
    "generate": "write the synthetic image-caption world (train.csv, test.csv, classes.json)",
    "poison": "poison a manifest -> new manifest + triggered images + poison.json",
    "make-trigger": "optimize a trigger on a surrogate CLIP (badclip) -> patch.png + trigger.json for poison",
    "train": "train or finetune a CLIP with a task (clip, cleanclip, par, supervised, fare, tecoa)",
    "eval": "evaluate a CLIP: zeroshot, backdoor (ASR), retrieval, robust",
    "audit": "score pairs for poisoning (DAO, k-distance, LID, SLOF), AUROC against a record, drop the top-scored",
    "mmr": "MMR leading-question benchmark for multimodal LLMs",
    "bench": "run any registered MLLM benchmark (mmr, vqa, caption, ...) against any adapter",
    "lvlm": "LVLM tools: swap a robust CLIP tower into LLaVA",
    "report": "HTML report (tables + plots) across run directories",
    "compare": "list the metrics and protocol fields that differ between two runs",
    "study": "the backdoor attack x defense matrix over seeds (clean accuracy, ASR, detection AUROC)",
    "card": "every evaluation that fits a model (CLIP or LVLM), one page with a summary and verdicts",
}


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The full parser; only the chosen subcommand's module is imported (fast start-up), the others
    get a placeholder entry so the top-level --help still lists them."""
    parser = argparse.ArgumentParser(
        prog="mmrobust",
        description="Attack, defend and measure vision-language models (CleanCLIP, PAR, FARE, TeCoA, MMR).",
    )
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    chosen = next((a for a in (argv if argv is not None else sys.argv[1:]) if a in SUBCOMMANDS), None)
    for name in SUBCOMMANDS:
        if chosen is not None and name != chosen:
            sub.add_parser(name, help=HELP.get(name))
            continue
        module = f"mmrobust.cli.{name.replace('-', '_')}"  # make-trigger -> make_trigger
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as e:  # subcommand not built yet
            if e.name == module:
                continue
            raise
        mod.register(sub)
    return parser


def _version() -> str:
    from mmrobust import __version__

    return f"mmrobust {__version__}"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except MMRobustError as e:
        print(f"mmrobust {args.command}: error: {e}", file=sys.stderr)
        return 2
    except pickle.UnpicklingError as e:  # a checkpoint read by a library with weights_only=True: never run
        from mmrobust.models.checkpoint import refused_pickle

        print(f"mmrobust {args.command}: error: {refused_pickle(e, 'given', 'a checkpoint')}", file=sys.stderr)
        return 2
    except OSError as e:  # unwritable output, full disk, ...
        print(f"mmrobust {args.command}: error: {e.strerror or e}: {e.filename or ''}; check the path, permissions "
              "and free space", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"mmrobust {args.command}: interrupted; partial results and checkpoints are kept", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
