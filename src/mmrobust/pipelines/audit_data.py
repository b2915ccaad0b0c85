"""The pairs ``mmrobust audit`` scores: a CSV manifest, webdataset shards or the rows of an MLLM instruction JSONL
(``audit --instructions``: each row's image, and as its text the assistant turns then the user turns), their ids,
the poison record's labels, the output-folder guard, and their CLIP embeddings (batched, no gradients; split over
torchrun ranks)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mmrobust.data.datasets import ClassInfo, ImageTextDataset, collate
from mmrobust.data.instruction_dataset import InstructionDataset
from mmrobust.data.manifest import INSTRUCTIONS_COPY, PathPolicy
from mmrobust.data.poison import PoisonRecord
from mmrobust.data.shards import ShardImageTextDataset, ShardIndex, parse_shard_spec, shard_index
from mmrobust.data.subset import write_instruction_subset
from mmrobust.errors import ConfigError, DataError
from mmrobust.models.clip import CLIPModel
from mmrobust.safety import is_inside, resolve_path
from mmrobust.training.distributed import rank_and_size

EMBEDDINGS = ("image", "text", "pair")


@dataclass
class AuditSource:
    """What is audited: ``dataset`` (items by position 0..N-1), with the manifest or the shard index behind it."""

    spec: str
    dataset: Any
    manifest: Path | None = None
    index: ShardIndex | None = None

    @property
    def kind(self) -> str:
        return "shards" if self.index is not None else "manifest"

    def __len__(self) -> int:
        return len(self.dataset)

    def ident(self, pos: int) -> dict[str, Any]:
        """How a person finds pair ``pos``: its row and image cell (manifest) or its key and shard (shards)."""
        if self.index is not None:
            s = int(self.dataset.rows[pos])
            return {"id": pos, "key": self.index.key(s), "shard": self.index.shard(s).name}
        return {"id": pos, "image": self.dataset.rows[pos][self.dataset.image_col]}

    def inputs(self) -> list[Path]:
        """The files an output folder must not hold: the manifest and its images' folders, or the shards."""
        if self.index is not None:
            return list(self.index.shards)
        assert self.manifest is not None
        cells = {Path(r[self.dataset.image_col]).expanduser() for r in self.dataset.rows}
        return [self.manifest, *{(c if c.is_absolute() else self.manifest.parent / c).parent for c in cells}]


@dataclass(frozen=True)
class InstructionData:
    """An MLLM instruction JSONL to audit (``mmrobust audit --instructions``): images relative to it."""

    instructions: str
    allow_outside: bool = False


class InstructionPairs(torch.utils.data.Dataset):
    """Rows of an instruction file as audit pairs: ``image`` (3,H,W) in [0,1], ``caption`` = the assistant turns
    then the user turns, joined by spaces (what poisoning rewrites comes first: a CLIP text tower truncates to
    its context), ``index``; an unreadable image gives None (listed in ``skips``)."""

    def __init__(self, path: Path, image_size: int, allow_outside: bool) -> None:
        self.rows = InstructionDataset(path, image_size=image_size, allow_outside=allow_outside)
        self.skips = self.rows.skips

    def __len__(self) -> int:
        return len(self.rows)

    def text(self, i: int) -> str:
        turns = self.rows.items[i].conversations
        return " ".join([t.content for t in turns if t.role == "assistant"] + [t.content for t in turns
                                                                                 if t.role == "user"])

    def __getitem__(self, i: int) -> dict[str, Any] | None:
        img = self.rows.image_u8(int(i))
        return None if img is None else {"image": img.float() / 255, "caption": self.text(int(i)), "index": int(i)}


class InstructionSource(AuditSource):
    """An instruction file's rows: ``manifest`` is the JSONL, ``dataset`` :class:`InstructionPairs`."""

    @property
    def kind(self) -> str:
        return "instructions"

    def ident(self, pos: int) -> dict[str, Any]:
        item = self.dataset.rows.items[pos]
        return {"id": pos, "key": item.id, "image": item.image}

    def inputs(self) -> list[Path]:
        assert self.manifest is not None
        return [self.manifest, *{it.image_path.parent for it in self.dataset.rows.items if it.image_path}]


def write_instruction_drop(out: Path, source: Path, drop: set[int], info: dict[str, Any]) -> tuple[list[Path], str]:
    """The cleaned copy of the instruction file ``source`` (``out/instructions.jsonl``, images not copied); fills
    ``info`` (the dropped.json fields that make the copy's image paths trusted)."""
    path, sha = write_instruction_subset(source, out, drop=drop)
    info.update({"manifest": INSTRUCTIONS_COPY, "source_manifest": str(source.resolve()),
                 "source_sha256": sha, "row_ids": "0-based lines of the source file (blank lines not counted)"})
    return [path], str(path)


def open_source(data: Any, image_size: int) -> AuditSource:
    """The pairs ``data`` (a :class:`~mmrobust.pipelines.train.DataSpec` or an :class:`InstructionData`) names,
    read at ``image_size``."""
    if isinstance(data, InstructionData):
        path = Path(data.instructions).expanduser()
        return InstructionSource(data.instructions, InstructionPairs(path, image_size, data.allow_outside),
                                 manifest=path)
    pattern = parse_shard_spec(data.manifest)
    if pattern is None:
        if data.classes:
            raise ConfigError("--classes is for shards whose samples carry .cls labels; drop it for a CSV manifest")
        manifest = Path(data.manifest).expanduser()
        ds = ImageTextDataset(manifest, image_size=image_size, image_col=data.image_col, caption_col=data.caption_col,
                              delimiter=data.delimiter, paths=PathPolicy.of(manifest, data.data_root,
                                                                             data.allow_outside))
        return AuditSource(data.manifest, ds, manifest=manifest)
    index = shard_index(pattern)
    names = ClassInfo.load(data.classes).classnames if data.classes else None
    ds = ShardImageTextDataset(index=index, image_size=image_size, labels=bool(names), classnames=names)
    return AuditSource(data.manifest, ds, index=index)


def check_out_dir(out: Path, source: AuditSource) -> None:
    """Refuse (ConfigError) an output folder that is the input's folder or holds any input file."""
    out_r = resolve_path(out, "output folder")
    for path in source.inputs():
        folder = path if path.is_dir() else path.parent
        if resolve_path(folder, "input folder") == out_r or is_inside(out_r, path, "input path"):
            raise ConfigError(f"output folder {out} is or holds the input ({path}); write the audit to a new folder "
                              "outside the data (e.g. --out runs/audit)")


def poisoned_mask(source: AuditSource, record: PoisonRecord) -> np.ndarray:
    """(N,) bool: the pairs ``record`` lists (rows by ``poisoned_ids`` for a manifest, samples by ``keys`` for
    shards); a one-line DataError when it names pairs this data does not hold."""
    where, n = record.record_path, len(source)
    if record.kind != source.kind:
        raise ConfigError(f"poison record {where} is for {record.kind} but --data is {source.kind}; give the record "
                          "written with this data")
    mask = np.zeros(n, dtype=bool)
    if source.kind == "instructions":
        return _instruction_mask(source, record, mask)
    if source.kind == "manifest":
        bad = [i for i in record.poisoned_ids if not 0 <= i < n]
        if bad:
            raise DataError(f"poison record {where} names row {bad[0]} ({len(bad)} such) but {source.spec} has {n} "
                            "rows; give the record written with this data")
        if record.n_rows != n:
            raise DataError(f"poison record {where} was written for {record.n_rows} rows but {source.spec} has {n}; "
                            "give the record written with this data")
        mask[list(record.poisoned_ids)] = True
        return mask
    if record.poisoned_ids and not record.keys:
        raise DataError(f"poison record {where} lists no keys; shards are matched by key: give the poison.json "
                        "that mmrobust poison wrote for these shards")
    pos = {source.dataset.key(i): i for i in range(n)}
    missing = [k for k in record.keys if k not in pos]
    if missing:
        raise DataError(f"poison record {where} names {len(missing)} key(s) not in {source.spec} (e.g. "
                        f"{missing[0]!r}); give the record written with these shards")
    mask[[pos[k] for k in record.keys]] = True
    return mask


def _instruction_mask(source: AuditSource, record: PoisonRecord, mask: np.ndarray) -> np.ndarray:
    """The rows an instruction poison record lists, matched by id (and its row count checked)."""
    where, n = record.record_path, len(source)
    if record.n_rows != n:
        raise DataError(f"poison record {where} was written for {record.n_rows} rows but {source.spec} has {n}; "
                        "give the record written with this file")
    pos = {it.id: i for i, it in enumerate(source.dataset.rows.items)}
    missing = [k for k in record.keys if k not in pos]
    if missing or len(record.keys) != len(record.poisoned_ids):
        raise DataError(f"poison record {where} names {len(missing)} id(s) not in {source.spec} (e.g. "
                        f"{(missing or ['?'])[0]!r}); give the record written with this file")
    mask[[pos[k] for k in record.keys]] = True
    return mask


def _embed_batch(clip: CLIPModel, batch: dict[str, Any], embedding: str, normalize: bool, device: str) -> torch.Tensor:
    """(B, D) embeddings of one batch; ``pair`` is the L2-normalized image and text embeddings side by side."""
    unit = normalize or embedding == "pair"
    parts = []
    if embedding in ("image", "pair"):
        parts.append(clip.encode_image(batch["image"].to(device), normalize=unit))
    if embedding in ("text", "pair"):
        parts.append(clip.encode_text(clip.tokenize(batch["caption"]).to(device), normalize=unit))
    return torch.cat(parts, dim=1).float().cpu()


def _gather(emb: torch.Tensor, pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Every rank's (embeddings, positions), concatenated in rank order (identity in one process)."""
    _, size = rank_and_size()
    if size == 1:
        return emb, pos
    import torch.distributed as dist

    parts: list[Any] = [None] * size
    dist.all_gather_object(parts, (emb.numpy(), pos.numpy()))
    return (torch.from_numpy(np.concatenate([p[0] for p in parts if len(p[1])])),
            torch.from_numpy(np.concatenate([p[1] for p in parts])))


@torch.no_grad()
def embed_pairs(clip: CLIPModel, source: AuditSource, *, embedding: str, normalize: bool, batch_size: int,
                workers: int, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(M, D) float32 embeddings of the M readable pairs and their positions (M,), in position order. Under
    torchrun each rank embeds a contiguous slice and every rank gets all of them."""
    if embedding not in EMBEDDINGS:
        raise ConfigError(f"embedding {embedding!r} is not one of {', '.join(EMBEDDINGS)}")
    rank, size = rank_and_size()
    n = len(source)
    lo, hi = n * rank // size, n * (rank + 1) // size
    loader = torch.utils.data.DataLoader(source.dataset, batch_size=batch_size, sampler=range(lo, hi),
                                         collate_fn=collate, num_workers=workers)
    clip.eval()
    embs, pos = [], []
    for batch in loader:
        if "index" in batch:  # else every pair of the batch was unreadable
            embs.append(_embed_batch(clip, batch, embedding, normalize, device))
            pos.append(batch["index"])
    emb, ids = _gather(torch.cat(embs) if embs else torch.zeros(0, 0), torch.cat(pos) if pos else torch.zeros(0))
    if not len(ids):
        raise DataError(f"no pair of {source.spec} could be read (see the skipped images); nothing to audit")
    order = torch.argsort(ids.long())
    return emb[order], ids.long()[order]
