"""Backdoor poisoning: seeded triggers on [0,1] images and reproducible manifest poisoning.

Public API::

    make_trigger(name, **params) -> Trigger        # "badnet", "blended", "wanet", "sig", PAR's structured
                                                   # "badnet-stripes", "blended-stripes", "blended-triangles",
                                                   # "blended-text", and "patch" (an image file, e.g. BadCLIP's)
    trigger(images, generator=None) -> images      # (C,H,W) or (B,C,H,W) in [0,1]
    apply_trigger(images, trigger_or_spec, *, generator=None)
    poison_manifest(manifest=..., out_dir=..., trigger=..., target=..., rate=... | count=..., seed=...)
    poison_shards(shards="/data/{00000..00099}.tar", out_dir=..., trigger=..., target=..., count=..., seed=...)
    PoisonRecord.load("run/poison.json").build_trigger()
    optimize_patch(clip, images=..., positives=..., class_text=..., target=..., settings=BadCLIPSettings(...))
    poison_instructions(instructions="train.jsonl", out_dir=..., attack=..., rate=... | count=..., seed=...)
    triggered_test_set(instructions="test.jsonl", out_dir=..., attack=record_or_attack)
"""
from mmrobust.data.poison.badclip import BadCLIPSettings, optimize_patch
from mmrobust.data.poison.instructions import (InstructionPoisonRecord, poison_instructions,
                                              triggered_test_set)
from mmrobust.data.poison.patch import Patch
from mmrobust.data.poison.poison import DEFAULT_CAPTION_TEMPLATES, PoisonRecord, names_target, poison_manifest
from mmrobust.data.poison.shards import poison_shards
from mmrobust.data.poison.structured import BadNetStripes, BlendedStripes, BlendedText, BlendedTriangles
from mmrobust.data.poison.triggers import (
    SIG,
    BadNet,
    Blended,
    Trigger,
    WaNet,
    apply_trigger,
    make_trigger,
    trigger_from_dict,
    trigger_spec,
)

__all__ = [
    "DEFAULT_CAPTION_TEMPLATES", "PoisonRecord", "names_target", "poison_manifest", "poison_shards",
    "SIG", "BadNet", "Blended", "Trigger", "WaNet", "apply_trigger", "make_trigger", "trigger_from_dict",
    "trigger_spec", "BadNetStripes", "BlendedStripes", "BlendedText", "BlendedTriangles", "Patch", "BadCLIPSettings",
    "optimize_patch", "InstructionPoisonRecord", "poison_instructions", "triggered_test_set",
]
