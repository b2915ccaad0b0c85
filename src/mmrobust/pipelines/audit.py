"""`mmrobust audit` as a library function: score every pair of a manifest, of shards or of an MLLM instruction
file (``data=InstructionData("train.jsonl")``: each row's image and text) for poisoning.

Poisoned-pair detection (Huang et al., "Detecting Backdoor Samples in Contrastive Language Image
Pretraining", ICLR 2025; DESIGN §3): embed each pair with the (possibly poisoned) CLIP, score it by the
density / dimensionality of its k nearest neighbours (:mod:`mmrobust.eval.detect`), and, given the poison
record, report AUROC / AP / precision at the poison count. ``drop_top`` writes a cleaned copy without the
top-scored pairs (retraining on it is the defense). ``reference``: trusted clean pairs whose embeddings the
neighbours are searched among (a dedicated reference set), for poison rates at which the audited pairs' own
poisons would be each other's neighbours. Example::

    res = run_audit(model="runs/poisoned/model", data=DataSpec("shards:p/shards/{00000..00003}.tar"),
                    out_dir="runs/audit", poison_record="p/poison.json",
                    settings=AuditSettings(detectors=("dao", "kdist"), drop_top=0.05))
    res.metrics["auroc"]["dao"];  res.cleaned       # "shards:runs/audit/shards/{00000,...}.tar"

Writes ``results_audit.json`` (k, embedding, model, data, detectors, metrics), ``samples_audit.jsonl`` (one row
per scored pair: id, key or image, scores), ``audit_scores.png``; with ``drop_top`` also ``manifest.csv`` or
``instructions.jsonl`` (image paths re-based, images not copied) or ``shards/NAME.tar``, and ``dropped.json``.
The input is never written; nothing that exists is replaced except those record files of an earlier audit.
"""
from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mmrobust.data.manifest import AUDIT_DROP_FORMAT, INSTRUCTIONS_COPY
from mmrobust.data.poison import PoisonRecord
from mmrobust.data.subset import shard_data, write_manifest_subset, write_shard_subset
from mmrobust.errors import ConfigError
from mmrobust.eval.detect import DEFAULT_K, detection_metrics, detector_options, score_embeddings, top_order
from mmrobust.jsonio import write_json
from mmrobust.models.clip import CLIPModel
from mmrobust.pipelines.audit_data import (EMBEDDINGS, AuditSource, InstructionData, check_out_dir, embed_pairs,
                                           open_source, poisoned_mask, write_instruction_drop)
from mmrobust.pipelines.evaluate import load_model
from mmrobust.pipelines.train import DataSpec
from mmrobust.reports.contract import Record, Table, write_record
from mmrobust.reports.plots import score_histograms
from mmrobust.reports.sanity import poisons_outnumber_k, rows_skipped
from mmrobust.safety import resolve_path
from mmrobust.training.distributed import is_main
from mmrobust.values import check_int, check_seed, setting

PLOT = "audit_scores.png"
ANSWER_LOSS = "answer-loss"  # the score of --answer-loss-model (instruction rows only)
DROPPED = "dropped.json"


@dataclass(frozen=True)
class AuditSettings:
    """How pairs are embedded, scored and dropped (Huang et al., ICLR 2025)."""

    detectors: tuple[str, ...] = setting(("dao",), "detectors, comma-separated: dao, kdist, lid, slof, iforest "
                                                   "(or all)", flag="--detector")
    k: int = setting(DEFAULT_K, "neighbours per pair for dao, kdist, lid, slof (the paper's default)")
    embedding: str = setting("image", "what a pair is scored by: image, text or pair (both, each L2-normalized, "
                                      "side by side)")
    normalize: bool = setting(False, "L2-normalize image / text embeddings first (the reference uses them raw)")
    reference_size: int | None = setting(None, "score against seeded random reference sets of about this many pairs "
                                               "(the paper's batches; keep the poisons per set below k); none: all")
    drop_top: float | int | None = setting(None, "write a cleaned copy without the top-scored pairs: a share in "
                                                 "(0, 1) such as 0.05, or a count such as 300")
    drop_by: str | None = setting(None, "the detector whose scores choose the dropped pairs; none: the first")
    detector_options: dict = setting(factory=dict, help="detector option NAME.KEY=VALUE, e.g. dao.form=power or "
                                                        "iforest.n_estimators=200", flag="--detector-opt")
    batch_size: int = setting(256, "pairs embedded at once")
    workers: int = setting(0, "DataLoader worker processes reading images")
    chunk_size: int = setting(1024, "rows per block of the exact neighbour search (memory: rows x pairs)")
    answer_loss_model: str | None = setting(None, "instructions only: also score each row by its answers' loss "
                                                  "under this LLaVA-family model before finetuning (detector "
                                                  "answer-loss; Wan et al., ICML 2023)")
    seed: int = setting(0, "seed of the isolation forest and of the reference sets")
    device: str = setting("cpu", "cpu, cuda or cuda:N")

    def __post_init__(self) -> None:
        if self.embedding not in EMBEDDINGS:
            raise ConfigError(f"embedding {self.embedding!r} is not one of {', '.join(EMBEDDINGS)}")
        for name, low in (("k", 1), ("batch_size", 1), ("workers", 0), ("chunk_size", 1)):
            check_int(name, getattr(self, name), low=low)
        check_seed("seed", self.seed)
        if self.reference_size is not None:
            check_int("reference_size", self.reference_size, low=self.k + 2,
                      fix="a reference set must hold the pair, its k neighbours and one more")
        run = (*self.detectors, *((ANSWER_LOSS,) if self.answer_loss_model else ()))
        if self.drop_by is not None and self.drop_by not in run:
            raise ConfigError(f"--drop-by {self.drop_by!r} is not among the detectors run ({', '.join(run)}"
                              f"{'' if self.answer_loss_model else '; answer-loss needs --answer-loss-model'})")

    def options_by_detector(self) -> dict[str, dict[str, Any]]:
        """``{"dao.form": "power"}`` as ``{"dao": {"form": "power"}}``."""
        out: dict[str, dict[str, Any]] = {}
        for key, value in self.detector_options.items():
            name, dot, option = str(key).partition(".")
            if not dot or not option:
                raise ConfigError(f"detector option {key!r} must be NAME.KEY=VALUE, e.g. dao.form=power")
            out.setdefault(name, {})[option] = value
        return out


@dataclass(frozen=True)
class AuditResult:
    """What :func:`run_audit` found and wrote (empty on ranks other than 0)."""

    metrics: dict[str, Any] = field(default_factory=dict)
    files: tuple[Path, ...] = ()
    cleaned: str | None = None  # the --data of the cleaned copy


def drop_count(drop_top: float | int | None, n: int) -> int:
    """Pairs to drop of ``n``: an int is a count in [1, n), a float a share in (0, 1) (rounded half up)."""
    if drop_top is None:
        return 0
    if isinstance(drop_top, bool) or not isinstance(drop_top, (int, float)) or not math.isfinite(drop_top):
        raise ConfigError(f"--drop-top {drop_top!r} must be a share in (0, 1) or a count of pairs")
    if isinstance(drop_top, int):
        return check_int("--drop-top (a count)", drop_top, low=1, high=n - 1,
                         fix=f"keep at least one of the {n} scored pairs")
    if not 0 < drop_top < 1:
        why = "a share of 1 drops every pair" if drop_top == 1 else "write a count as an integer, e.g. 300"
        raise ConfigError(f"--drop-top {drop_top:g} as a share must be in (0, 1): {why}")
    k = int(math.floor(drop_top * n + 0.5))
    if not 1 <= k < n:
        raise ConfigError(f"--drop-top {drop_top:g} of {n} scored pairs drops {k}; give a share that drops at least "
                          "one pair and keeps one")
    return k


def load_audit_model(name: str, weights: dict | None, device: str) -> CLIPModel:
    """:func:`load_model`, with a one-line error for a model path that does not exist."""
    path = Path(name).expanduser()
    looks_like_path = os.sep in name or name.startswith((".", "~"))
    if looks_like_path and not name.startswith(("hf-hub:", "local-dir:")) and not path.exists():
        raise ConfigError(f"model {name!r} not found: no such model directory; pass one written by mmrobust train "
                          "(RUN/model), an open_clip name with --pretrained, or hf-hub:org/repo")
    return load_model(name, device=device, **(weights or {}))


def _check_drop_target(out: Path, source: AuditSource) -> None:
    """The cleaned copy never replaces a file: refuse an --out that already holds one."""
    names = [DROPPED, {"manifest": "manifest.csv", "instructions": INSTRUCTIONS_COPY}.get(source.kind, DROPPED)]
    if source.index is not None:
        names += [f"shards/{p.name}" for p in source.index.shards]
    found = [n for n in names if (out / n).exists() or (out / n).is_symlink()]
    if found:
        raise ConfigError(f"{out} already holds {', '.join(found[:3])}; write the cleaned copy to a new --out "
                          "(nothing is replaced)")


def _dropped_rows(source: AuditSource, by: str, scores: dict[str, torch.Tensor], pos: torch.Tensor,
                  labels: np.ndarray | None, order: np.ndarray) -> list[dict[str, Any]]:
    """One row per dropped pair, highest score first: who it is, its rank and score (and whether poisoned)."""
    return [{**source.ident(int(pos[i])), "rank": r + 1, "score": float(scores[by][i]),
             **({"poisoned": bool(labels[i])} if labels is not None else {})} for r, i in enumerate(order.tolist())]


def _write_drop(out: Path, source: AuditSource, data: Any, s: AuditSettings, rows: list[dict[str, Any]],
                n_scored: int) -> tuple[list[Path], str]:
    """The cleaned copy (manifest.csv, instructions.jsonl or shards/NAME.tar) without the pairs in ``rows``, then
    dropped.json
    saying what was dropped and why; returns the files written and the --data of the copy."""
    by = s.drop_by or s.detectors[0]
    chosen = {int(r["id"]) for r in rows}
    info: dict[str, Any] = {
        "format": AUDIT_DROP_FORMAT, "generator": "mmrobust audit", "kind": source.kind, "data": source.spec,
        "detector": by, "k": s.k, "embedding": s.embedding, "normalize": s.normalize,
        "reference_size": s.reference_size, "drop_top": s.drop_top, "n_pairs": len(source), "n_scored": n_scored,
        "n_dropped": len(rows), "reason": f"the {len(rows)} highest {by} scores of the {n_scored} scored pairs "
                                          "(higher = more suspicious; Huang et al., ICLR 2025)"}
    if source.kind == "instructions":
        assert source.manifest is not None
        files, cleaned = write_instruction_drop(out, source.manifest, chosen, info)
    elif source.manifest is not None:
        path, sha = write_manifest_subset(source.manifest, out, drop=chosen, image_col=data.image_col,
                                          delimiter=data.delimiter)
        files, cleaned = [path], str(path)
        info.update({"manifest": "manifest.csv", "source_manifest": str(source.manifest.resolve()),
                     "source_sha256": sha, "row_ids": "0-based data rows of the source manifest"})
    else:
        assert source.index is not None
        files = write_shard_subset(source.index, out, drop={int(source.dataset.rows[p]) for p in chosen})
        cleaned = shard_data(files, out)
        info.update({"shards": [f"shards/{p.name}" for p in files],
                     "source_shards": [str(p.resolve()) for p in source.index.shards],
                     "row_ids": "0-based positions among the samples with an image and a caption, shards in order"})
    write_json(out / DROPPED, {**info, "cleaned": cleaned, "dropped": rows})
    return [*files, out / DROPPED], cleaned


def _metrics(scores: dict[str, torch.Tensor], labels: np.ndarray | None, n_pairs: int,
             drop_rows: list[dict[str, Any]]) -> dict[str, Any]:
    per = {n: detection_metrics(v.numpy(), labels) for n, v in scores.items()} if labels is not None else {}
    out: dict[str, Any] = {"n_pairs": n_pairs, "n_scored": len(next(iter(scores.values()))),
                           "n_poisoned": int(labels.sum()) if labels is not None else None}
    for key in ("auroc", "ap", "precision_at_n"):
        out[key] = {n: m[key] for n, m in per.items()}
    out["n_dropped"] = len(drop_rows)
    out["n_poisoned_dropped"] = sum(bool(r.get("poisoned")) for r in drop_rows) if labels is not None else None
    return out


def _record(source: AuditSource, s: AuditSettings, scores: dict[str, torch.Tensor], pos: torch.Tensor,
            labels: np.ndarray | None, metrics: dict[str, Any], dropped: set[int], config: dict[str, Any],
            reference: dict[str, Any] | None = None) -> Record:
    """The results record: metrics, a table per detector, per-pair scores, warnings and the settings."""
    samples = [{**source.ident(p), **({"poisoned": bool(labels[i])} if labels is not None else {}),
                **({"dropped": p in dropped} if s.drop_top is not None else {}),
                "scores": {n: float(v[i]) for n, v in scores.items()}} for i, p in enumerate(pos.tolist())]
    rows = [{"detector": n, **{key: metrics[key].get(n) for key in ("auroc", "ap", "precision_at_n")}}
            for n in scores] if labels is not None else []
    n_scored, skipped = len(pos), sorted(set(range(len(source))) - set(pos.tolist()))
    reasons = source.dataset.skips.skipped
    set_size = min(n_scored, s.reference_size or n_scored)
    warnings = rows_skipped(len(skipped), len(source), reasons.get(skipped[0], "") if skipped else "")
    if labels is not None and reference is None and any(n in ("dao", "kdist", "lid", "slof") for n in scores):
        warnings += poisons_outnumber_k(int(labels.sum()), n_scored, s.k, set_size)
    caption = (f"{metrics['n_poisoned']} of {n_scored} scored pairs poisoned; precision at n = share of poisoned "
               f"pairs among the n top-scored, n = the poison count; {s.embedding} embeddings, k = {s.k}"
               + (f"; neighbours searched in the reference set {reference['data']} ({reference['n']} pairs)"
                  if reference else ""))
    table = Table.of("Poisoned-pair detection (Huang et al., ICLR 2025)",
                     [("detector", "detector"), ("auroc", "AUROC"), ("ap", "AP"), ("precision_at_n", "P@n")],
                     rows, caption)
    return Record(kind="audit", metrics=metrics, samples=samples, config=config, seeds={"seed": s.seed},
                  tables=[table] if rows else [], plots=[PLOT], warnings=warnings,
                  extra={"skipped": [{"id": p, "reason": reasons.get(p, "unreadable")} for p in skipped[:100]]},
                  protocol={"detectors": list(scores), "answer_loss_model": s.answer_loss_model, "k": s.k,
                            "embedding": s.embedding, "normalize": s.normalize, "reference_size": s.reference_size,
                            "reference": reference, "distance": "euclidean",
                            "detector_options": s.options_by_detector()})


def _reference_source(reference: DataSpec | None, data: Any, s: AuditSettings, image_size: int) -> AuditSource | None:
    """The dedicated reference set's pairs, checked: a manifest or shards other than the audited data, and not
    beside random reference sets."""
    if reference is None:
        return None
    if not isinstance(reference, DataSpec) or isinstance(data, InstructionData):
        raise ConfigError("--reference-data is a manifest or shards: of trusted clean pairs for --data; it does not "
                          "apply to --instructions")
    if s.reference_size is not None:
        raise ConfigError("give --reference-data (a dedicated reference set) or --reference-size (random reference "
                          "sets of the audited pairs), not both")
    if _same_data(reference.manifest, data.manifest):
        raise ConfigError(f"--reference-data {reference.manifest} is the audited data; every pair would find itself "
                          "among its neighbours. Give a separate set of trusted clean pairs (or drop the option)")
    ref = open_source(reference, image_size)
    check_int("pairs of --reference-data", len(ref), low=s.k + 2, fix=f"k = {s.k} needs at least {s.k + 2} reference "
                                                                      "pairs")
    return ref


def _same_data(a: str, b: str) -> bool:
    """Whether two --data values name the same file (symlinks resolved; a link loop is a one-line error)."""
    if a == b:
        return True
    pa, pb = Path(a).expanduser(), Path(b).expanduser()
    return pa.exists() and pb.exists() and resolve_path(pa, "--reference-data") == resolve_path(pb, "--data")


def run_audit(*, model: str, data: DataSpec | InstructionData, out_dir: str | Path,
              settings: AuditSettings | None = None, weights: dict | None = None,
              poison_record: str | Path | None = None, clip: CLIPModel | None = None,
              reference: DataSpec | None = None) -> AuditResult:
    """Embed and score every pair of ``data`` with ``model``; see the module docstring for what is written.
    ``reference``: a dedicated reference set (trusted clean pairs, as a manifest or shards) whose embeddings the
    neighbours are searched among instead of the audited pairs' own (Huang et al.'s README; use it when the
    poisons may outnumber k in any random batch). Everything is checked before any work (detectors, model,
    data, reference, output folder, poison record, drop)."""
    s = settings or AuditSettings()
    out = Path(out_dir).expanduser()
    options = s.options_by_detector()
    detector_options(s.detectors, options)
    clip = clip or load_audit_model(model, weights, s.device)
    source = open_source(data, clip.image_size)
    ref_source = _reference_source(reference, data, s, clip.image_size)
    if s.answer_loss_model and source.kind != "instructions":
        raise ConfigError("--answer-loss-model scores instruction rows by their answers; use it with --instructions")
    for given in (source, ref_source):  # neither the audited pairs' files nor the reference's are written over
        if given is not None:
            check_out_dir(out, given)
    mask = poisoned_mask(source, PoisonRecord.load(poison_record)) if poison_record is not None else None
    drop_count(s.drop_top, len(source))
    if s.drop_top is not None:
        _check_drop_target(out, source)
    emb, pos = embed_pairs(clip, source, embedding=s.embedding, normalize=s.normalize, batch_size=s.batch_size,
                           workers=s.workers, device=s.device)
    ref_emb = ref_info = None
    if ref_source is not None:
        ref_emb, ref_pos = embed_pairs(clip, ref_source, embedding=s.embedding, normalize=s.normalize,
                                       batch_size=s.batch_size, workers=s.workers, device=s.device)
        ref_info = {"data": ref_source.spec, "n": len(ref_pos)}
    if not is_main():
        return AuditResult()
    scores = score_embeddings(emb, s.detectors, k=s.k, seed=s.seed, options=options, reference=ref_emb,
                              reference_size=s.reference_size, chunk_size=s.chunk_size, device=s.device)
    if s.answer_loss_model:
        from mmrobust.pipelines.answer_loss import answer_losses

        assert isinstance(data, InstructionData)
        losses = answer_losses(s.answer_loss_model, data.instructions, device=s.device,
                               allow_outside=data.allow_outside)
        scores[ANSWER_LOSS] = losses[pos].nan_to_num(nan=-math.inf)
    labels = mask[pos.numpy()] if mask is not None else None
    n_drop = drop_count(s.drop_top, len(pos))
    order = top_order(scores[s.drop_by or s.detectors[0]].numpy())[:n_drop]
    drop_rows = _dropped_rows(source, s.drop_by or s.detectors[0], scores, pos, labels, order)
    out.mkdir(parents=True, exist_ok=True)
    files, cleaned = _write_drop(out, source, data, s, drop_rows, len(pos)) if n_drop else ([], None)
    metrics = _metrics(scores, labels, len(source), drop_rows)
    config = {"model": model, "weights": weights or {}, "data": asdict(data),
              "poison_record": str(poison_record) if poison_record is not None else None, **asdict(s),
              "detectors": list(s.detectors), "cleaned": cleaned,
              "reference_data": asdict(reference) if reference is not None else None}
    record = _record(source, s, scores, pos, labels, metrics, {int(r["id"]) for r in drop_rows}, config, ref_info)
    against = f", neighbours in {ref_info['n']} reference pairs" if ref_info else ""
    score_histograms(out / PLOT, scores={n: v.numpy() for n, v in scores.items()}, poisoned=labels,
                     title=f"{s.embedding} embeddings, k = {s.k}: {len(pos)} pairs{against}")
    write_record(out, record)
    written = [out / "results_audit.json", out / "samples_audit.jsonl", out / PLOT, *files]
    return AuditResult(metrics=metrics, files=tuple(written), cleaned=cleaned)
