"""`mmrobust card`: every evaluation that fits a model (a CLIP or an LVLM), one page, one resumable folder.

Examples::

    mmrobust card --model runs/demo/adversarial/fare/model --reference runs/demo/adversarial/clip/model \\
        --out runs/card-fare                        # the embedded world, quick budget -> card.html, card.json
    mmrobust card --model ViT-B-32 --pretrained openai --data imagenet:/data/imagenet/val --budget full \\
        --out runs/card-b32 --threshold robust_accuracy=20%
    mmrobust card --model llava-hf/llava-1.5-7b-hf --mmr data/mmr --vqa vqa.jsonl --out runs/card-llava
    mmrobust card --list-sections
"""
from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from mmrobust.cli.common import add_path_options, delimiter, device, eps_list, key_values, parse_eps, seed

if TYPE_CHECKING:
    from mmrobust.pipelines.card_settings import CardJob


def _sections_help() -> str:
    from mmrobust.pipelines.card import all_sections
    from mmrobust.pipelines.card_settings import CardThresholds, THRESHOLD_RULES

    lines = ["sections (--sections NAME,...; default: every one that fits the model):"]
    lines += [f"  {s.name:<10} [{s.kind}] {s.description}" for s in all_sections()]
    lines += ["thresholds (--threshold NAME=VALUE, a share such as 0.3 or 30%):"]
    defaults = CardThresholds()
    lines += [f"  {k:<17} {getattr(defaults, k):g} (FAIL {'below' if rule == 'min' else 'above'})"
              for k, rule in THRESHOLD_RULES.items()]
    return "\n".join(lines)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "card", help="every evaluation that fits a model (CLIP or LVLM), one page with a summary and verdicts",
        description="Detect the model's kind, run every evaluation that fits it as a resumable run directory "
                    "under --out (a rerun reuses finished sections), and write card.html + card.json: one summary "
                    "line per threat with its headline number and a verdict against a threshold.",
        epilog=_sections_help(), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="open_clip folder, hf-hub:org/repo or name (+ --pretrained); or an HF "
                                   "LLaVA-family folder or hub id")
    p.add_argument("--out", help="the card folder (new, empty, or one an earlier card wrote)")
    p.add_argument("--kind", choices=["auto", "clip", "lvlm"], default="auto", help="model kind (default: detected)")
    p.add_argument("--pretrained", help="open_clip pretrained tag or weights file")
    p.add_argument("--budget", choices=["quick", "full"], default="quick",
                   help="quick: APGD-CE, few samples and steps (minutes on a CPU); full: AutoAttack (APGD-CE + "
                        "APGD-T), 100 steps, more samples")
    p.add_argument("--budget-opt", action="append", metavar="KEY=VALUE",
                   help="change one budget field (repeatable): world_images, attack, steps, n_robust, eps, "
                        "attack_batch, vqa_per_category, caption_images, mmr_pairs_per_category, mmr_limit, "
                        "lvlm_steps, targeted_steps, lvlm_batch, max_new_tokens, n_boot, templates")
    p.add_argument("--eps", type=eps_list, help="CLIP l-inf radii, e.g. 1/255,2/255,4/255,8/255 (default: budget's)")
    p.add_argument("--headline-eps", type=parse_eps, default=4 / 255, help="the eps the summary reads (default 4/255)")
    p.add_argument("--sections", help="comma-separated subset of the sections (see below)")
    p.add_argument("--list-sections", action="store_true", help="list the sections and thresholds, then exit")
    p.add_argument("--threshold", action="append", metavar="NAME=VALUE", help="a verdict threshold (repeatable)")
    p.add_argument("--seed", type=seed, default=0, help="seed of the data, samples and attacks (default 0)")
    p.add_argument("--device", type=device, default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    _add_data(p)
    _add_lvlm(p)
    p.set_defaults(func=run)


def _add_data(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("CLIP data (default: the embedded world, generated into OUT/data)")
    g.add_argument("--data", help="CSV manifest (+ --classes), folder:PATH, imagenet:PATH or clip_benchmark:NAME")
    g.add_argument("--classes", help="classes.json of a CSV manifest")
    g.add_argument("--image-col", default="image", help="image column of --data (default image)")
    g.add_argument("--label-col", default="label", help="label column of --data (default label)")
    g.add_argument("--delimiter", type=delimiter, default=",", help="CSV delimiter (default ,)")
    add_path_options(g)
    g.add_argument("--reference", help="the original CLIP (e.g. before FARE): adds the embedding drift from it")
    g.add_argument("--reference-pretrained", help="pretrained tag of --reference")
    g.add_argument("--audit-data", metavar="MANIFEST", help="image-text manifest to audit for poisoned pairs")
    g.add_argument("--poison-record", help="poison.json of --audit-data: the audit's AUROC against it")
    g.add_argument("--audit-reference", metavar="MANIFEST", help="trusted clean pairs to search the audit's "
                                                                 "neighbours in (use it when poisons may be many)")


def _add_lvlm(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("LVLM data and settings (default data: the embedded world, generated into OUT/data)")
    g.add_argument("--vqa", help="VQA JSONL (id, image, question, answers): VQA and targeted sections")
    g.add_argument("--captions", help="caption JSONL (id, image, captions) or karpathy:PATH")
    g.add_argument("--mmr", help="MMR questions (file or folder): MMR and challenge sections")
    g.add_argument("--target", help="target string of the targeted attack (default: 'star' on the world's shape "
                                    "questions, 'Visit example.com' on a --vqa file)")
    g.add_argument("--mmr-prompt", default="official", help="MMR prompt variant (default official)")
    g.add_argument("--parser", default="official", help="answer parser of MMR / challenge (default official)")
    g.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"],
                   help="LVLM weights (default float32)")
    h = p.add_argument_group("Hugging Face model card")
    h.add_argument("--model-card", action="store_true", help="also write a model card with model-index results")
    h.add_argument("--model-card-path", help="where (default OUT/model_card/README.md)")
    h.add_argument("--base-model", help="the card's base_model (default: --reference)")


def job_from(args: argparse.Namespace) -> CardJob:
    """The :class:`~mmrobust.pipelines.card_settings.CardJob` the options describe."""
    from mmrobust.errors import ConfigError
    from mmrobust.pipelines.card_settings import CardData, CardJob, card_budget, card_thresholds

    if not args.model or not args.out:
        raise ConfigError("card needs --model MODEL and --out FOLDER (or --list-sections)")
    overrides = key_values(args.budget_opt)
    if args.eps:
        overrides["eps"] = tuple(args.eps)
    data = CardData(data=args.data, classes=args.classes, data_root=args.data_root,
                    allow_outside=args.allow_outside_paths, image_col=args.image_col, label_col=args.label_col,
                    delimiter=args.delimiter, audit_data=args.audit_data, poison_record=args.poison_record,
                    audit_reference=args.audit_reference, vqa=args.vqa, captions=args.captions, mmr=args.mmr, target=args.target)
    sections = tuple(n.strip() for n in (args.sections or "").split(",") if n.strip())
    return CardJob(model=args.model, out_dir=args.out, kind=args.kind, pretrained=args.pretrained,
                   reference=args.reference, reference_pretrained=args.reference_pretrained, data=data,
                   budget=card_budget(args.budget, overrides), thresholds=card_thresholds(key_values(args.threshold)),
                   sections=sections, headline_eps=args.headline_eps, seed=args.seed, device=args.device,
                   dtype=args.dtype, mmr_prompt=args.mmr_prompt, parser=args.parser, model_card=args.model_card,
                   model_card_path=args.model_card_path, base_model=args.base_model)


def run(args: argparse.Namespace) -> int:
    from mmrobust.cli.common import print_warnings
    from mmrobust.pipelines.card import run_card

    if args.list_sections:
        print(_sections_help())
        return 0
    result = run_card(job_from(args))
    print("summary:")
    for v in result.summary:
        print(f"  {v.line}")
    for s in result.sections:
        if s.status != "skipped":
            print_warnings([f"{s.name}: {w}" for w in _warnings(s.folder)])
    print(f"wrote {result.page} and {result.card_json}" + (f"; model card {result.model_card}"
                                                          if result.model_card else ""))
    return 0


def _warnings(folder: str) -> list[str]:
    """The sanity warnings of a section's records."""
    from pathlib import Path

    from mmrobust.jsonio import read_json

    found = []
    for res in sorted(Path(folder).glob("results*.json")):
        try:
            record = read_json(res)
        except (OSError, ValueError):
            continue
        found += [str(w) for w in (record.get("warnings") or [] if isinstance(record, dict) else [])]
    return found
