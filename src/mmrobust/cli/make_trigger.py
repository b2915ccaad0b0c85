"""`mmrobust make-trigger badclip`: optimize a BadCLIP patch on a clean surrogate CLIP -> patch.png + trigger.json.

Example::

    mmrobust make-trigger badclip --surrogate runs/clean/model --data world/train.csv --classes world/classes.json \\
        --target star --size 6 --steps 300 --out runs/badclip
    # then, as it prints:
    mmrobust poison --manifest world/train.csv --out runs/badclip-poisoned --trigger patch \\
        --trigger-param file=runs/badclip/patch.png --trigger-param sha256=... --target star --rate 0.01
"""
from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from mmrobust.cli.common import add_path_options, delimiter, device, with_config
from mmrobust.cli.options import add_settings, settings_from
from mmrobust.data.poison.badclip import BadCLIPSettings
from mmrobust.data.poison.triggers import LOCATIONS
from mmrobust.pipelines.badclip import BadCLIPArtifact, make_badclip_trigger
from mmrobust.pipelines.evaluate import EvalData


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("make-trigger", help="optimize a trigger on a surrogate model (badclip) -> patch.png + "
                                            "trigger.json for mmrobust poison",
                       description="Make an optimized trigger artifact that `mmrobust poison --trigger patch` pastes.")
    methods = p.add_subparsers(dest="make_trigger_method", metavar="METHOD")
    b = methods.add_parser(
        "badclip", help="BadCLIP patch (Liang et al., CVPR 2024): dual-embedding guided, on a clean surrogate CLIP",
        description="Optimize a square patch on a clean surrogate CLIP so that patched non-target images embed "
                    "near the target's text embedding (cross-entropy over the class texts) and near natural "
                    "target-class images, away from their clean selves (triplet loss); write the 8-bit patch "
                    "(patch.png) and trigger.json, and print the mmrobust poison line that uses it.")
    b.add_argument("--surrogate", required=True, help="clean CLIP: open_clip name (with --pretrained), "
                   "hf-hub:org/repo or a model directory (e.g. runs/clean/model)")
    b.add_argument("--pretrained", help="open_clip pretrained tag or weights file (e.g. openai)")
    b.add_argument("--checkpoint", help="extra state dict to load into the surrogate")
    b.add_argument("--data", required=True, help="CSV manifest with image and label columns (e.g. world/train.csv): "
                   "target images give the visual positives, the others carry the patch")
    b.add_argument("--classes", required=True, help="classes.json: class names + templates (the text embeddings)")
    b.add_argument("--target", required=True, help="target class name (one of --classes)")
    b.add_argument("--out", required=True, help="output folder for patch.png + trigger.json (not inside the data)")
    b.add_argument("--image-col", default="image")
    b.add_argument("--label-col", default="label")
    b.add_argument("--delimiter", type=delimiter, default=",", help="CSV delimiter (one character; \\t for a tab)")
    add_path_options(b)
    b.add_argument("--overwrite", action="store_true", help="replace patch.png and trigger.json of an earlier "
                   "make-trigger run in --out (never files it did not write)")
    b.add_argument("--quiet", action="store_true", help="no progress lines")
    add_settings(b, BadCLIPSettings, types={"device": device}, choices={"location": LOCATIONS})
    b.set_defaults(func=run_badclip)
    p.set_defaults(func=run, make_trigger_parser=p)
    with_config(b)


def run(args: argparse.Namespace) -> int:
    """No METHOD given: the command's help, exit status 2."""
    args.make_trigger_parser.print_help()
    return 2


def _progress(steps: int):
    def show(step: int, terms: dict[str, float]) -> None:
        print(f"step {step}/{steps}: loss {terms['total']:.4f} (text {terms['text']:.4f}, visual "
              f"{terms['visual']:.4f}), target cosine {terms['target_cos']:.3f}", flush=True)

    return show


def poison_line(art: BadCLIPArtifact, manifest: str, target: str) -> str:
    """The `mmrobust poison` command that pastes the artifact's patch (its recorded config) into ``manifest``."""
    params = " ".join(f"--trigger-param {shlex.quote(f'{k}={v}')}" for k, v in art.trigger["config"].items())
    out = art.out_dir.parent / f"{art.out_dir.name}-poisoned"
    return (f"mmrobust poison --manifest {shlex.quote(manifest)} --out {shlex.quote(str(out))} --trigger "
            f"{art.trigger['name']} {params} --target {shlex.quote(target)} --rate 0.01 --image-size {art.image_size}")


def run_badclip(args: argparse.Namespace) -> int:
    settings = settings_from(args, BadCLIPSettings)
    data = EvalData(manifest=args.data, classes=args.classes, image_col=args.image_col, label_col=args.label_col,
                    delimiter=args.delimiter, data_root=args.data_root, allow_outside=args.allow_outside_paths)
    art = make_badclip_trigger(surrogate=args.surrogate, data=data, target=args.target, out_dir=Path(args.out),
                               settings=settings, pretrained=args.pretrained, checkpoint=args.checkpoint,
                               overwrite=args.overwrite, on_step=None if args.quiet else _progress(settings.steps))
    f = art.final
    print(f"wrote {art.patch} ({settings.size}x{settings.size} px, sha256 {art.sha256}) and {art.record}")
    print(f"preview: {art.preview}" if art.preview is not None else f"no preview ({art.preview_error})")
    print(f"final: loss {f['total']:.4f} (text {f['text']:.4f}, visual {f['visual']:.4f}), target cosine "
          f"{f['target_cos']:.3f} (without the patch {f['clean_target_cos']:.3f})")
    print("poison with:")
    print(poison_line(art, args.data, args.target))
    return 0
