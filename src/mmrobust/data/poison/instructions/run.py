"""Poison an instruction JSONL (``mmrobust poison --instructions``) and build the triggered test set of the same
attack, reproducibly, never touching the input.

:func:`poison_instructions` chooses ``round(rate * N)`` (or ``count``) of the attack's candidate rows with a
seeded permutation, rewrites their dialogue (and, for image attacks, writes their new image as
``images/NNNNNNNN.png``, NNNNNNNN the row) and writes ``OUT/instructions.jsonl`` (every row, in order; other rows
copied with their image path re-based to resolve from OUT) and ``OUT/poison.json`` (format, kind
``instructions``, source path and SHA-256, seed, the attack's name and settings, target, ``poisoned_ids`` = the
0-based rows, ``poisoned_keys`` = their ids, one entry per poisoned row). The instruction file format is
:mod:`mmrobust.data.instructions` (validated on reading: malformed lines, rows without an answer and image paths
outside the file's folder are refused in one line). Same input, attack and seed give byte-identical files.

:func:`triggered_test_set` writes the test inputs of the same attack from a clean test file: only the attack's
test rows (triggered image, trigger phrase in the question, or Shadowcast's concept images unchanged), answers
kept, into ``OUT/instructions.jsonl`` + ``OUT/poison.json`` (kind ``instructions-test``), for
:mod:`mmrobust.eval.instruction_asr` / ``mmrobust bench run instruction-asr``. Example::

    rec = poison_instructions(instructions="data/train.jsonl", out_dir="runs/p", rate=0.05, seed=0,
                              attack=TextTriggerAttack(target="Visit evil.example"))
    test = triggered_test_set(instructions="data/test.jsonl", out_dir="runs/asr", attack=rec.build_attack())

The output folder follows ``mmrobust poison``'s rules (:mod:`mmrobust.data.poison.outdir`): it may not hold the
input, and ``overwrite`` deletes only what an earlier record of ours lists.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from mmrobust.data.instructions import Instruction, Turn, load_instructions, parse_record
from mmrobust.data.manifest import INSTRUCTIONS_COPY, base_from, read_jsonl_objects, rebase
from mmrobust.data.poison.instructions.attack import ImageContext, InstructionAttack
from mmrobust.data.poison.instructions.record import ASR_RULE, InstructionPoisonRecord, attack_from, attack_name
from mmrobust.data.poison.outdir import RECORD_FORMAT, discard_written, prepare_out
from mmrobust.data.poison.poison import SKIPPED_ERRORS, _load_image, _n_poison, _save_png, _subseed
from mmrobust.errors import ConfigError, DataError
from mmrobust.jsonio import write_json
from mmrobust.values import check_int, check_seed

Tensor = torch.Tensor


@dataclass
class _Source:
    """The validated rows of an instruction file, its raw line objects and its bytes' SHA-256."""

    path: Path
    items: list[Instruction]
    raws: list[dict[str, Any]]
    sha256: str


def _read(path: Path, allow_outside: bool) -> _Source:
    items = load_instructions(path, allow_outside=allow_outside)  # every hostile line refused here, in one line
    raws = [obj for _, _, obj in read_jsonl_objects(path, "instruction file")]
    return _Source(path, items, raws, hashlib.sha256(path.read_bytes()).hexdigest())


@dataclass
class _Job:
    """One copy to write: which rows (``order``, ``k`` of them), how they change, and the record's fields."""

    src: _Source
    out: Path
    attack: InstructionAttack
    order: list[int]
    k: int
    seed: int
    image_size: int | None
    test: bool
    record: dict[str, Any]
    overwrite: bool = False
    encode_image: Callable[[Tensor], Tensor] | None = None


def _stream(seed: int, tag: str, row: int) -> torch.Generator:
    return torch.Generator().manual_seed(_subseed(seed, tag, row))


def _alter(job: _Job) -> Callable[[list[Tensor], list[int], ImageContext], list[Tensor]] | None:
    a = job.attack
    if job.test:
        return a.test_images if a.test_changes_image else None
    return a.alter_images if a.changes_image else None


def _image_rows(job: _Job, alter: Callable, ctx: ImageContext, images_dir: Path, written: list[Path],
                skipped: list[dict[str, Any]]) -> list[int]:
    """Rows of ``job.order`` whose images were read, altered (in batches) and saved, until ``job.k``; unreadable
    images are listed in ``skipped`` and the next row in the order is taken."""
    done: list[int] = []
    imgs: list[Tensor] = []
    rows: list[int] = []

    def flush() -> None:
        for img, row in zip(alter(imgs, rows, ctx) if rows else [], rows):
            path = images_dir / f"{row:08d}.png"
            written.append(path)
            _save_png(img, path)
            done.append(row)
        imgs.clear()
        rows.clear()

    for row in job.order:
        if len(done) + len(rows) == job.k:
            break
        try:
            imgs.append(ctx.load(row))
        except SKIPPED_ERRORS as e:
            skipped.append({"row": row, "image": job.src.items[row].image, "error": f"{type(e).__name__}: {e}"})
            continue
        rows.append(row)
        if len(rows) == job.attack.batch_size:
            flush()
    flush()
    return sorted(done)


def _line(raw: dict[str, Any], turns: tuple[Turn, ...] | None, image: str) -> dict[str, Any]:
    """The output line: the raw line with a new image path and (if given) new turns, in the line's own form."""
    out = {**raw, "image": image}
    if turns is not None:
        if "conversations" in raw:
            out["conversations"] = [{"role": t.role, "content": t.content} for t in turns]
        else:
            out["question"], out["answer"] = turns[0].content, turns[-1].content
    return out


def _lines(job: _Job, chosen: list[int], changed_image: bool, ctx: ImageContext
           ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The output lines (every row, or only the chosen ones for a test set) and the record's entries."""
    base, picked = base_from(job.out, job.src.path.parent), set(chosen)
    lines, entries = [], []
    for i, (item, raw) in enumerate(zip(job.src.items, job.src.raws)):
        if i not in picked:
            if not job.test:
                lines.append(_line(raw, None, rebase(item.image, base)))
            continue
        gen = _stream(job.seed, "text", i)
        turns = job.attack.test_dialogue(item, gen) if job.test else job.attack.dialogue(item, gen)
        image = f"images/{i:08d}.png" if changed_image else rebase(item.image, base)
        lines.append(_line(raw, turns, image))
        entries.append({"row": i, "id": item.id, "source_image": item.image, "image": image,
                        **job.attack.row_info(i, ctx)})
    return lines, entries


def _write_lines(path: Path, lines: list[dict[str, Any]]) -> None:
    """Write the JSONL copy; every line is validated first (a too-long turn after insertion is refused)."""
    for n, line in enumerate(lines, start=1):
        parse_record(line, f"{path.name}: line {n}")
    path.write_text("".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines), encoding="utf-8")


def _context(job: _Job) -> ImageContext:
    items, size = job.src.items, job.image_size
    return ImageContext(items, load=lambda row: _load_image(items[row].image_path, size),  # type: ignore[arg-type]
                        encode_image=job.encode_image, seed=job.seed)


def _write(job: _Job) -> list[int]:
    """Write ``job``'s copy, images and record into ``job.out``; on any failure remove what it wrote, only that."""
    paths = [it.image_path for it in job.src.items]
    images_dir, created = prepare_out(job.out, job.src.path, paths, job.overwrite, listing=INSTRUCTIONS_COPY)
    written: list[Path] = [job.out / "poison.json"]
    try:
        ctx, alter, skipped = _context(job), _alter(job), []
        chosen = (_image_rows(job, alter, ctx, images_dir, written, skipped) if alter is not None
                  else sorted(job.order[:job.k]))
        if len(chosen) < job.k and not (job.test and chosen):
            first = f"first: {skipped[0]['image']}" if skipped else "none to choose from"
            raise DataError(f"only {len(chosen)} of the {job.k} rows asked for have a readable image ({first}); fix "
                            "the images or lower the rate/count")
        lines, entries = _lines(job, chosen, alter is not None, ctx)
        written.append(job.out / INSTRUCTIONS_COPY)
        _write_lines(job.out / INSTRUCTIONS_COPY, lines)
        keys = [job.src.items[i].id for i in chosen]
        write_json(job.out / "poison.json", {**job.record, "n_poisoned": len(chosen), "poisoned_ids": chosen,
                                             "poisoned_keys": keys, "poisoned": entries, "skipped_unreadable": skipped})
    except BaseException:
        discard_written(written, images_dir, created)  # leave no half-written run (and nothing else touched)
        raise
    if created and not any(images_dir.iterdir()):  # a text-only attack writes no image
        images_dir.rmdir()
    return chosen


def _check(attack: InstructionAttack, seed: int, image_size: int | None, encode_image: Any, *, tower: bool) -> None:
    """One-line ConfigErrors for the run's arguments (``tower``: this run optimizes against a vision tower)."""
    check_seed("seed", seed)
    if image_size is not None:
        check_int("image_size", image_size, low=1, high=4096, fix="a square side in pixels (--image-size)")
    if tower and attack.needs_encoder():
        if encode_image is None:
            raise ConfigError(f"{attack_name(attack)} needs a vision tower: pass encode_image (--encoder MODEL)")
        if image_size is None:
            raise ConfigError(f"{attack_name(attack)} needs image_size, the tower's input size (--image-size)")


def _record(src: _Source, attack: InstructionAttack, seed: int, image_size: int | None, kind: str,
            **extra: Any) -> dict[str, Any]:
    return {"format": RECORD_FORMAT, "kind": kind, "manifest": INSTRUCTIONS_COPY,
            "source_manifest": str(src.path.resolve()), "source_sha256": src.sha256, "n_rows": len(src.items),
            "seed": seed, "target": attack.target, "attack": {"name": attack_name(attack), "config": attack.config()},
            "trigger": getattr(attack, "trigger", {}), "image_size": image_size, "asr_rule": ASR_RULE,
            "row_ids": "0-based lines of the source file (blank lines not counted)", **extra}


def _selection(candidates: list[int], k: int, seed: int, attack: InstructionAttack) -> list[int]:
    """The candidate rows in a seeded random order; a DataError when fewer than ``k``."""
    if len(candidates) < k:
        raise DataError(f"only {len(candidates)} rows can take the {attack_name(attack)} attack (target "
                        f"{attack.target!r}) but {k} poisons were asked; lower the rate/count or use more data")
    perm = torch.randperm(len(candidates), generator=torch.Generator().manual_seed(_subseed(seed, "select")))
    return [candidates[j] for j in perm.tolist()]


def poison_instructions(*, instructions: str | Path, out_dir: str | Path, attack: InstructionAttack | dict[str, Any],
                        rate: float | None = None, count: int | None = None, seed: int = 0,
                        image_size: int | None = None, encode_image: Callable[[Tensor], Tensor] | None = None,
                        encoder: dict[str, Any] | None = None, overwrite: bool = False,
                        allow_outside: bool = False) -> InstructionPoisonRecord:
    """Poison ``rate`` (share of all rows, rounded half up) or ``count`` rows of an instruction JSONL with
    ``attack`` (see the module docstring). ``image_size`` resizes altered images to a square first (needed by
    Shadowcast: the tower's input size); ``encode_image`` is the vision tower Shadowcast optimizes against and
    ``encoder`` what the record says about it. Raises ConfigError / DataError with a one-line fix."""
    atk = attack_from(attack)
    _check(atk, seed, image_size, encode_image, tower=True)
    src = _read(Path(instructions).expanduser(), allow_outside)
    k = _n_poison(len(src.items), rate, count)
    order = _selection(atk.candidates(src.items), k, seed, atk)
    record = _record(src, atk, seed, image_size, "instructions", rate=rate, count=count, encoder=encoder)
    out = Path(out_dir).expanduser()
    chosen = _write(_Job(src, out, atk, order, k, seed, image_size, False, record, overwrite, encode_image))
    return InstructionPoisonRecord(out_dir=out, instructions=out / INSTRUCTIONS_COPY, record_path=out / "poison.json",
                                   poisoned_ids=tuple(chosen), poisoned_keys=tuple(src.items[i].id for i in chosen),
                                   n_rows=len(src.items), target=atk.target, seed=seed, attack=record["attack"],
                                   image_size=image_size)


def triggered_test_set(*, instructions: str | Path, out_dir: str | Path,
                       attack: InstructionAttack | dict[str, Any] | InstructionPoisonRecord, seed: int = 0,
                       image_size: int | None = None, overwrite: bool = False,
                       allow_outside: bool = False) -> InstructionPoisonRecord:
    """The triggered test inputs of ``attack`` (or of a poison record's attack) built from the clean test file
    ``instructions``: every test row of the attack (rows whose answers do not already hold the target; for
    Shadowcast the rows naming the concept), triggered as in poisoning, answers kept. Unreadable images are
    skipped and listed. ASR on them: :func:`mmrobust.eval.instruction_asr.attack_success_rate`."""
    source_record = str(attack.record_path) if isinstance(attack, InstructionPoisonRecord) else None
    if isinstance(attack, InstructionPoisonRecord) and image_size is None:
        image_size = attack.image_size  # trigger test images at the size the poisoned ones were written at
    atk = attack.build_attack() if isinstance(attack, InstructionPoisonRecord) else attack_from(attack)
    _check(atk, seed, image_size, None, tower=False)  # test inputs are never optimized
    src = _read(Path(instructions).expanduser(), allow_outside)
    order = atk.test_rows(src.items)
    if not order:
        raise DataError(f"no row of {src.path} is a test input of {attack_name(atk)} (target {atk.target!r}); give a "
                        "test file with rows that do not already answer with the target")
    record = _record(src, atk, seed, image_size, "instructions-test", poison_record=source_record)
    out = Path(out_dir).expanduser()
    chosen = _write(_Job(src, out, atk, order, len(order), seed, image_size, True, record, overwrite))
    return InstructionPoisonRecord(out_dir=out, instructions=out / INSTRUCTIONS_COPY, record_path=out / "poison.json",
                                   poisoned_ids=tuple(chosen), poisoned_keys=tuple(src.items[i].id for i in chosen),
                                   n_rows=len(src.items), target=atk.target, seed=seed, attack=record["attack"],
                                   kind="instructions-test", image_size=image_size)
