"""The record of an instruction-poisoning run (``poison.json`` of ``mmrobust poison --instructions``) and the
attacks rebuilt from it: by registered name and settings, the form the record keeps (``{"name", "config"}``).

Example::

    rec = InstructionPoisonRecord.load("runs/p/poison.json")
    rec.poisoned_ids, rec.poisoned_keys, rec.target     # rows (0-based), their ids, the target string
    attack = rec.build_attack()                         # e.g. to build the triggered test set
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmrobust.data.poison.instructions.attack import InstructionAttack
from mmrobust.data.poison.poison import PoisonRecord
from mmrobust.errors import ConfigError, DataError
from mmrobust.jsonio import read_json
from mmrobust.registry import INSTRUCTION_ATTACKS

EMPTY = inspect.Parameter.empty  # a required setting's default
ASR_RULE = "a reply holds the target when it contains it, case-insensitive, whitespace runs as one space"


@dataclass(frozen=True)
class InstructionPoisonRecord:
    """What :func:`poison_instructions` (kind ``instructions``) or :func:`triggered_test_set` (kind
    ``instructions-test``) wrote; ``record_path`` holds the full JSON record."""

    out_dir: Path
    instructions: Path
    record_path: Path
    poisoned_ids: tuple[int, ...]
    poisoned_keys: tuple[str, ...]
    n_rows: int
    target: str
    seed: int
    attack: dict[str, Any] = field(default_factory=dict)  # {"name": ..., "config": {...}}
    kind: str = "instructions"
    image_size: int | None = None  # the square size altered images were written at (None: their own)

    def build_attack(self) -> InstructionAttack:
        """The attack as it was configured (e.g. to build the triggered test set)."""
        return attack_from(self.attack)

    @classmethod
    def load(cls, path: str | Path) -> "InstructionPoisonRecord":
        """Read a ``poison.json`` that ``mmrobust poison --instructions`` wrote."""
        base = PoisonRecord.load(path)
        if base.kind not in ("instructions", "instructions-test"):
            raise DataError(f"poison record {path} is for {base.kind}, not an instruction file; give the poison.json "
                            "that mmrobust poison --instructions wrote")
        rec = read_json(Path(path))
        attack, size = rec.get("attack"), rec.get("image_size")
        if not isinstance(attack, dict) or not isinstance(attack.get("name"), str):
            raise DataError(f"poison record {path} names no attack; give the poison.json mmrobust poison wrote")
        if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
            raise DataError(f"poison record {path}: image_size must be a positive integer or null, got {size!r}")
        return cls(out_dir=base.out_dir, instructions=base.manifest, record_path=base.record_path,
                   poisoned_ids=base.poisoned_ids, poisoned_keys=base.keys, n_rows=base.n_rows, target=base.target,
                   seed=base.seed, attack=attack, kind=base.kind, image_size=size)


def attack_name(attack: InstructionAttack) -> str:
    """The registered name of ``attack``'s class."""
    return next(n for n in INSTRUCTION_ATTACKS.list() if INSTRUCTION_ATTACKS.get(n) is type(attack))


def build_attack(name: str, options: dict[str, Any] | None = None, **fixed: Any) -> InstructionAttack:
    """The registered attack ``name`` from text or typed ``options`` and ``fixed`` values (e.g. ``target``);
    a one-line ConfigError for a missing required setting or an unknown one."""
    given = {**(options or {}), **fixed}
    missing = [k for k, slot in INSTRUCTION_ATTACKS.slots(name).items() if slot.default is EMPTY and k not in given]
    if missing:
        raise ConfigError(f"instruction attack {name!r} needs {', '.join(missing)}: pass --attack-opt "
                          f"{missing[0]}=VALUE")
    return INSTRUCTION_ATTACKS.build(name, options, **fixed)


def attack_from(attack: InstructionAttack | dict[str, Any]) -> InstructionAttack:
    """An attack object, or one rebuilt from ``{"name": ..., "config": {...}}`` (the record's form)."""
    if isinstance(attack, InstructionAttack):
        return attack
    if not isinstance(attack, dict) or not isinstance(attack.get("name"), str):
        raise ConfigError(f"attack must be an InstructionAttack or {{name, config}}; choose a name among "
                          f"{', '.join(INSTRUCTION_ATTACKS.list())}")
    config = attack.get("config") or {}
    if not isinstance(config, dict):
        raise ConfigError(f"attack config must be a mapping of settings, got {type(config).__name__}")
    return build_attack(attack["name"], dict(config))
