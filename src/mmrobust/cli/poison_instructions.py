"""`mmrobust poison --instructions FILE`: poison an MLLM instruction JSONL with a registered instruction attack, or
(``--asr-test RECORD``) write the triggered test inputs of a poison record's attack from a clean test file."""
from __future__ import annotations

import argparse

from mmrobust.cli.common import key_values
from mmrobust.data.poison.instructions import (InstructionAttack, InstructionPoisonRecord, build_attack,
                                              triggered_test_set)
from mmrobust.errors import ConfigError
from mmrobust.pipelines.instruction_poison import EncoderSpec, run_instruction_poison
from mmrobust.registry import INSTRUCTION_ATTACKS

MANIFEST_ONLY = (("image_col", "image", "--image-col"), ("caption_col", "caption", "--caption-col"),
                 ("delimiter", ",", "--delimiter"), ("data_root", None, "--data-root"),
                 ("template", None, "--template"), ("label_consistent", False, "--label-consistent"),
                 ("target_synonyms", "", "--target-synonyms"))
FROM_RECORD = (("attack", None, "--attack"), ("attack_opt", None, "--attack-opt"), ("encoder", None, "--encoder"),
               ("encoder_pretrained", None, "--encoder-pretrained"), ("rate", None, "--rate"),
               ("count", None, "--count"), ("trigger", "badnet", "--trigger"),
               ("trigger_param", None, "--trigger-param"))


def _given(args: argparse.Namespace, options: tuple) -> list[str]:
    return [flag for dest, default, flag in options if getattr(args, dest) != default]


def _attack(args: argparse.Namespace) -> tuple[str, InstructionAttack]:
    """The attack the options name: --attack (default image-trigger), --attack-opt, --target, and for attacks
    that paste a trigger --trigger / --trigger-param."""
    name = args.attack or "image-trigger"
    INSTRUCTION_ATTACKS.get(name)  # an unknown name: one line with the choices
    if not args.target:
        raise ConfigError(f"--target is required: the string the {name} attack's poisoned answers carry")
    fixed: dict[str, object] = {"target": args.target}
    if "trigger" in INSTRUCTION_ATTACKS.slots(name):
        fixed["trigger"] = {"name": args.trigger, "config": key_values(args.trigger_param)}
    elif args.trigger != "badnet" or args.trigger_param:
        raise ConfigError(f"--trigger / --trigger-param paste an image trigger; the {name} attack has none: drop them")
    options = key_values(args.attack_opt)
    clash = sorted(set(options) & set(fixed))
    if clash:
        raise ConfigError(f"set {clash[0]} with --{clash[0]}, not --attack-opt")
    return name, build_attack(name, options, **fixed)


def _asr_test(args: argparse.Namespace) -> int:
    given = _given(args, FROM_RECORD)
    if given:
        raise ConfigError(f"{', '.join(given)}: the test inputs take the attack of the --asr-test record; drop them")
    rec = InstructionPoisonRecord.load(args.asr_test)
    if args.target and args.target != rec.target:
        raise ConfigError(f"--target {args.target!r} differs from the record's target {rec.target!r}; drop --target")
    test = triggered_test_set(instructions=args.instructions, out_dir=args.out, attack=rec, seed=args.seed,
                              image_size=args.image_size, overwrite=args.overwrite,
                              allow_outside=args.allow_outside_paths)
    print(f"wrote {len(test.poisoned_ids)} triggered test inputs of {test.n_rows} rows ({rec.attack['name']}, target "
          f"{test.target!r}) -> {test.instructions} (record: {test.record_path})")
    print(f"ASR: mmrobust bench run instruction-asr --data {test.instructions} --adapter hf --model MODEL --out RUN")
    return 0


def run_instructions(args: argparse.Namespace) -> int:
    """`mmrobust poison --instructions` (the options were parsed by `mmrobust poison`)."""
    given = _given(args, MANIFEST_ONLY)
    if given:
        raise ConfigError(f"{', '.join(given)} only apply to a CSV manifest; drop them with --instructions (images "
                          "are relative to the JSONL file; --allow-outside-paths allows others)")
    if args.asr_test is not None:
        return _asr_test(args)
    if args.device != "cpu" and args.encoder is None:
        raise ConfigError("--device is where --encoder runs (shadowcast); drop it or pass --encoder")
    name, attack = _attack(args)
    encoder = EncoderSpec(args.encoder, args.encoder_pretrained, args.device) if args.encoder else None
    if encoder is None and args.encoder_pretrained:
        raise ConfigError("--encoder-pretrained needs --encoder")
    rec = run_instruction_poison(instructions=args.instructions, out_dir=args.out, attack=attack,
                                 rate=args.rate, count=args.count, seed=args.seed, image_size=args.image_size,
                                 encoder=encoder, overwrite=args.overwrite, allow_outside=args.allow_outside_paths)
    print(f"poisoned {len(rec.poisoned_ids)} of {rec.n_rows} rows ({name}, target {rec.target!r}) -> "
          f"{rec.instructions} (record: {rec.record_path})")
    return 0
