"""Robust zero-shot evaluation (as in Schlarmann et al. 2024 / Croce & Hein 2020): clean and robust
accuracy per eps under a registered attack, on a seeded sample of the test set, with the sample ids,
seeds and attack config recorded; and the embedding drift of an encoder against the original.

Long evaluations resume: with a ``partial`` file, every finished (eps, batch) chunk is appended to it
(per-sample clean / robust flags, keyed by a hash of the settings, model, classifier and images), and a
rerun with the same settings takes those chunks from it instead of attacking them again. Every batch
starts its attack from ``seed`` (as AutoAttack reseeds per chunk), so a resumed run equals a full one.
"""
from __future__ import annotations

import hashlib
import inspect
import json
import logging
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from safetensors.torch import load_file, save_file

from mmrobust.attacks.checks import AttackCheckWarning, run_checks
from mmrobust.attacks.pgd import pgd
from mmrobust.data.datasets import collate
from mmrobust.errors import ConfigError, DataError
from mmrobust.eval.contract import evaluation
from mmrobust.eval.randomized import probe_randomness, randomized_warnings, table_label
from mmrobust.eval.zeroshot import Classifier, model_classifier
from mmrobust.jsonio import Journal
from mmrobust.losses.embedding import squared_l2
from mmrobust.models.clip import CLIPModel
from mmrobust import registry
from mmrobust.registry import ATTACKS
from mmrobust.reports.contract import Record, Table
from mmrobust.reports.protocol import digest, eps_fields, eps_label, templates_protocol
from mmrobust.reports.sanity import collect, robust_above_clean, targeted_beats_untargeted
from mmrobust.values import check_int, check_number, check_seed, setting

log = logging.getLogger(__name__)
PARTIAL_NAME = "partial_robust.jsonl"
_ADV_GLOB = "?" * 16 + "_*_*.safetensors*"  # adversarial chunk files: key prefix, eps, batch start (+ .tmp)
_CHUNK_FIELDS = {"eps", "start", "seed", "ids", "clean", "robust", "config"}


def sample_ids(n_total: int, n_samples: int | None, seed: int) -> list[int]:
    """The first ``n_samples`` of a permutation seeded by ``seed`` (all rows, in order, if None)."""
    if n_samples is None or n_samples >= n_total:
        return list(range(n_total))
    perm = torch.randperm(n_total, generator=torch.Generator().manual_seed(seed))
    return sorted(int(i) for i in perm[:n_samples])


def load_images(dataset: Any, ids: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """Images, labels and row ids of the readable rows among ``ids`` (unreadable ones are dropped)."""
    batch = collate([dataset[i] for i in ids])
    if "image" not in batch:
        raise DataError(f"none of the {len(ids)} sampled images could be read; check the manifest's image paths")
    return batch["image"], batch["label"], [int(i) for i in batch["index"]]


def _tensor_digest(h: Any, tensors: dict[str, torch.Tensor]) -> None:
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        h.update(t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")


def run_key(model: Any, classifier: Classifier, x: torch.Tensor, y: torch.Tensor, ids: Sequence[int],
            settings: dict[str, Any]) -> str:
    """Hash of what decides a robust evaluation's per-sample results: the settings, the image tower
    (bytes), the classifier (weights rounded to 1e-4: text embeddings may differ in the last bits
    between runs), and the sampled images, labels and ids."""
    h = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
    tower = getattr(model, "visual", model)
    tensors = dict(tower.state_dict()) if isinstance(tower, torch.nn.Module) else {}
    tensors.update({k: v for k, v in (("mean", getattr(model, "mean", None)), ("std", getattr(model, "std", None)))
                    if isinstance(v, torch.Tensor)})
    weights = classifier.weights.detach().cpu().double().mul(1e4).round().long()
    _tensor_digest(h, {**{f"model.{k}": v for k, v in tensors.items()}, "classifier": weights,
                       "images": x, "labels": y.long(), "ids": torch.tensor(list(ids))})
    h.update(f"{classifier.scale!r}:{classifier.source}".encode())
    return h.hexdigest()


class PartialResults:
    """Append-only JSONL of finished (eps, batch) chunks of one robust evaluation, plus their
    adversarial images (one safetensors file per chunk, beside it) when those are saved.

    Lines of other settings (another key) are ignored; a line cut short by a kill is skipped."""

    def __init__(self, path: str | Path, key: str) -> None:
        self.path, self.key = Path(path), key
        self.adv_dir = self.path.with_suffix("")

    def load(self) -> dict[tuple[float, int], dict[str, Any]]:
        """Finished chunks of this key, by (eps, batch start)."""
        done: dict[tuple[float, int], dict[str, Any]] = {}
        other = 0
        for chunk in Journal(self.path, what="partial results").records():  # a torn last line is skipped
            if chunk.get("key") == self.key and _CHUNK_FIELDS <= set(chunk):
                done[(float(chunk["eps"]), int(chunk["start"]))] = chunk
            else:
                other += 1
        if other:
            log.info("%s: ignoring %d chunk(s) of other settings", self.path, other)
        return done

    def adv_file(self, eps: float, start: int) -> Path:
        return self.adv_dir / f"{self.key[:16]}_{eps_label(eps).replace('/', '_')}_{start}.safetensors"

    def append(self, chunk: dict[str, Any], x_adv: torch.Tensor | None) -> None:
        """Record a finished chunk (its images first, so a listed chunk always has them)."""
        if x_adv is not None:
            self.adv_dir.mkdir(parents=True, exist_ok=True)
            file = self.adv_file(chunk["eps"], chunk["start"])
            tmp = file.with_name(file.name + ".tmp")
            save_file({"x_adv": x_adv.contiguous()}, str(tmp))
            os.replace(tmp, file)
        Journal(self.path, what="partial results").append({"key": self.key, **chunk}, sync=True)

    def adv(self, chunk: dict[str, Any]) -> torch.Tensor | None:
        file = self.adv_file(chunk["eps"], chunk["start"])
        return load_file(str(file))["x_adv"] if file.is_file() else None


def clear_partial(path: str | Path) -> None:
    """Remove a partial-results file and the adversarial chunk files beside it (after the final results
    are written); other files in that folder are left alone, and the folder too unless it is empty."""
    path = Path(path)
    path.unlink(missing_ok=True)
    adv_dir = path.with_suffix("")
    if adv_dir.is_dir():
        for f in adv_dir.glob(_ADV_GLOB):
            f.unlink(missing_ok=True)
        if not any(adv_dir.iterdir()):
            adv_dir.rmdir()


_ATTACK_GIVEN = ("logits_fn", "x", "y", "eps", "norm", "seed", "x_init")  # what every chunk passes itself


def typed_attack_options(attack: str, options: dict[str, Any] | None) -> dict[str, Any]:
    """``options`` of registered attack ``attack`` (text from ``--attack-opt key=value`` or typed values)
    checked against its signature and typed by its defaults; a one-line ConfigError otherwise."""
    return registry.ATTACKS.typed(attack, options, skip=_ATTACK_GIVEN)  # the registry itself, not a stand-in


@dataclass
class AttackRun:
    """What every chunk of one robust evaluation shares (the attack, the model's logits, the sampled images, the
    settings, the partial-results store); the defended evaluation (:mod:`mmrobust.eval.attack_chunks`) runs its
    chunks through it too."""

    fn: Callable[..., Any]
    logits_fn: Callable[[torch.Tensor], torch.Tensor]
    x: torch.Tensor
    y: torch.Tensor
    ids: list[int]
    settings: "RobustSettings"
    options: dict[str, Any]  # the attack's keyword options as called
    partial: PartialResults | None
    keep_adv: bool
    keeper: Any = None  # an ExampleKeeper (robust_pictures) offered every attacked chunk, or None
    starts: dict[float, torch.Tensor] | None = None  # per eps, (N, C, H, W) warm starts passed as x_init, or None

    def chunk(self, eps: float, start: int, done: dict[tuple[float, int], dict[str, Any]]
              ) -> tuple[dict[str, Any], torch.Tensor | None]:
        """One (eps, batch) chunk: from the partial file when finished before, else attacked now."""
        s = self.settings
        stop = start + s.batch_size
        old = done.get((float(eps), start))
        if old is not None and self.partial is not None and old["ids"] == self.ids[start:stop]:
            adv = self.partial.adv(old) if self.keep_adv else None
            if adv is not None or not self.keep_adv:
                self._offer(eps, start, old, adv)
                return old, adv
        x, y = self.x[start:stop].to(s.device), self.y[start:stop].to(s.device)
        warm = {} if self.starts is None else {"x_init": self.starts[float(eps)][start:stop].to(s.device)}
        res = self.fn(self.logits_fn, x, y, eps=eps, norm=s.norm, seed=s.seed, **self.options, **warm)
        chunk = {"eps": eps, "start": start, "seed": s.seed, "ids": self.ids[start:stop],
                 "clean": [bool(v) for v in res.clean_correct.cpu()], "robust": [bool(v) for v in res.robust.cpu()],
                 "config": json.loads(json.dumps(res.config, default=str))}
        if getattr(res, "broken_by", None) is not None:  # a worst case: which attack broke each point
            chunk["broken_by"] = list(res.broken_by)
        adv = res.x_adv.detach().cpu()
        self._offer(eps, start, chunk, adv)
        adv = adv if self.keep_adv else None
        if self.partial is not None:
            self.partial.append(chunk, adv)
        return chunk, adv

    def _offer(self, eps: float, start: int, chunk: dict[str, Any], adv: torch.Tensor | None) -> None:
        if self.keeper is not None:
            stop = start + len(chunk["ids"])
            self.keeper.offer(eps, chunk, self.x[start:stop], self.y[start:stop], adv, self.logits_fn,
                              self.settings.device)


def skipped_rows(dataset: Any, ids: Sequence[int]) -> list[dict[str, Any]]:
    """The sampled rows whose image could not be read, with the reason."""
    skipped = getattr(getattr(dataset, "skips", None), "skipped", {})
    return [{"row": i, "reason": skipped[i]} for i in ids if i in skipped]


def evaluate_robust(model: CLIPModel, dataset: Any, classifier: Classifier, settings: RobustSettings, *,
                    save_adv: Path | None = None, partial: Path | None = None, keeper: Any = None
                    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Clean and robust accuracy per eps. Returns (metrics, per-sample rows).

    ``partial`` (a JSONL path) saves each finished (eps, batch) chunk and reuses the chunks a killed
    run with the same settings, model and data finished. ``metrics["n_skipped"]`` counts the sampled
    rows whose image could not be read (:func:`skipped_rows` lists them); ``n`` excludes them. ``keeper`` (an
    :class:`~mmrobust.eval.robust_pictures.ExampleKeeper`) is offered every attacked chunk."""
    s = settings
    fn, options = ATTACKS.get(s.attack), dict(s.attack_options)
    wanted = sample_ids(len(dataset), s.n_samples, s.seed)
    x_all, y_all, ids = load_images(dataset, wanted)
    logits_fn = lambda x: classifier.logits(model, x)  # noqa: E731
    model.eval()
    found = checked_run(logits_fn, x_all[:16].to(s.device), y_all[:16].to(s.device)) if s.check else []
    key_settings = {"attack": s.attack, "norm": s.norm, "seed": s.seed, "batch_size": s.batch_size,
                    "options": options, "device": torch.device(s.device).type,
                    **({"defense": model.defense_config} if hasattr(model, "defense_config") else {})}
    store = PartialResults(partial, run_key(model, classifier, x_all, y_all, ids, key_settings)) if partial else None
    call = {"check": False, **options} if s.check and "check" in inspect.signature(fn).parameters else options
    run = AttackRun(fn, logits_fn, x_all, y_all, ids, s, call, store, save_adv is not None, keeper)
    done = store.load() if store is not None else {}
    metrics: dict[str, Any] = {"attack": s.attack, "norm": s.norm, "n": len(ids),
                               "n_skipped": len(skipped_rows(dataset, wanted)), "seed": s.seed, "eps": {},
                               "check_warnings": found,
                               "randomness": probe_randomness(logits_fn, x_all[:16].to(s.device))}
    rows = [{"index": i, "label": int(y)} for i, y in zip(ids, y_all)]
    for e in s.eps:
        chunks, advs = zip(*(run.chunk(e, start, done) for start in range(0, len(ids), s.batch_size)))
        rob = [ok for c in chunks for ok in c["robust"]]
        cln = [ok for c in chunks for ok in c["clean"]]
        metrics["eps"][eps_label(e)] = {"eps": e, "robust_top1": sum(rob) / len(rob), "config": chunks[-1]["config"]}
        broken = [b for c in chunks for b in c.get("broken_by", [])]
        if broken:
            metrics["eps"][eps_label(e)]["broken_by"] = {k: broken.count(k) for k in sorted(set(broken))}
        metrics["clean_top1"] = sum(cln) / len(cln)
        for row, ok in zip(rows, rob):
            row[f"robust@{eps_label(e)}"] = bool(ok)
        if save_adv is not None:
            save_file({"x_adv": torch.cat(advs).contiguous(), "index": torch.tensor(ids)},
                      str(Path(save_adv) / f"adv_{eps_label(e).replace('/', '_')}.safetensors"))
    for row, ok in zip(rows, cln):
        row["clean_correct"] = bool(ok)
    return metrics, rows


def checked_run(logits_fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> list[str]:
    """The attack sanity checks (:func:`~mmrobust.attacks.checks.run_checks`) on a small batch, their failures
    returned as warnings for the record (a randomized model, zero or NaN gradients, probabilities); a model
    that cannot be attacked at all (no gradient, not logits) still raises."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run_checks(logits_fn, x, y, on_fail="warn")
    for w in caught:
        if not issubclass(w.category, AttackCheckWarning):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return [str(w.message) for w in caught if issubclass(w.category, AttackCheckWarning)]


def robust_warnings(metrics: dict[str, Any]) -> list[str]:
    """Sanity warnings of a robust evaluation's metrics: robust above clean or rising with eps, and, for a
    worst case over attacks, a targeted attack breaking far more points than the untargeted ones before it."""
    robust = {name: r["robust_top1"] for name, r in metrics["eps"].items()}
    found = robust_above_clean(metrics["clean_top1"], robust, n=metrics["n"])
    for name, r in metrics["eps"].items():
        broken = r.get("broken_by") or {}
        after_targeted = sum(v for k, v in broken.items() if k.endswith("-t"))  # apgd-t: targeted, run after
        if metrics["n"] and after_targeted:
            found += targeted_beats_untargeted(r["robust_top1"] + after_targeted / metrics["n"], r["robust_top1"])
    return found


def embedding_drift(model: CLIPModel, reference: CLIPModel, images: torch.Tensor, *, eps: float,
                    steps: int = 10, step_size: float = 1 / 255, seed: int = 0) -> dict[str, float]:
    """Mean ||f(x) - f_orig(x)||^2 on clean images and on PGD images maximizing ||f(x+d) - f_orig(x)||^2,
    the embedding loss the FARE paper compares encoders with."""
    with torch.no_grad():
        target = reference.encode_image(images)
        clean = squared_l2(model.encode_image(images), target)
    x_adv = pgd(lambda xa: squared_l2(model.encode_image(xa), target), images, eps=eps, step_size=step_size,
                steps=steps, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        adv = squared_l2(model.encode_image(x_adv), target)
    return {"clean": float(clean.mean()), "adversarial": float(adv.mean()), "eps": eps}


@dataclass(frozen=True)
class RobustSettings:
    """Attack (a registered name) and its options, eps values in [0,1] units, norm, the seeded sample
    size, batch size, device, and whether to run the attack sanity checks first."""

    attack: str = setting("apgd-ce", "registered attack (mmrobust.registry.ATTACKS)")
    eps: tuple[float, ...] = setting((4 / 255,), "l-p radii in [0,1] image units, e.g. 2/255,4/255")
    n_samples: int | None = setting(500, "number of test images (a seeded choice; none: all)")
    seed: int = setting(0, "seed of the sampled test images and of the attack's random starts")
    norm: str = setting("linf", "threat model: linf or l2")
    attack_options: dict[str, Any] = setting(help="extra attack option, e.g. steps=50", flag="--attack-opt",
                                             factory=dict)
    batch_size: int = setting(250, "images attacked at once (each batch starts its attack from the seed)")
    device: str = setting("cpu", "cpu, cuda or cuda:N")
    check: bool = setting(True, "skip the attack sanity checks (randomness, gradients) run on 16 images first",
                          flag="--no-check")

    def __post_init__(self) -> None:
        eps = tuple(self.eps) if isinstance(self.eps, (list, tuple)) else (self.eps,)
        if not eps:
            raise ConfigError("--eps is empty: no eps given; pass at least one, e.g. --eps 4/255 (0 for clean "
                              "accuracy only)")
        for e in eps:
            check_number("eps", e, low=0, high=1, fix="images are in [0,1]: write 4/255 rather than 4")
        object.__setattr__(self, "eps", tuple(float(e) for e in eps))
        if self.n_samples is not None:
            check_int("n_samples", self.n_samples, low=1, fix="--n-samples")
        check_seed("seed", self.seed, fix="--seed")
        check_int("batch_size", self.batch_size, low=1, fix="--batch-size")
        if self.norm not in ("linf", "l2"):
            raise ConfigError(f"norm {self.norm!r} is not linf or l2 (--norm)")
        object.__setattr__(self, "attack_options", typed_attack_options(self.attack, self.attack_options))


@evaluation("robust", settings=RobustSettings)
def robust_record(model: CLIPModel, data: Any, settings: RobustSettings, *, save_adv: Path | None = None,
                  partial: Path | None = None) -> Record:
    """Clean and robust zero-shot accuracy per eps under an attack (Croce & Hein 2020; Schlarmann et al. 2024).

    ``partial`` (a JSONL path) keeps finished chunks so a killed run resumes (see :func:`evaluate_robust`)."""
    from mmrobust.eval.robust_pictures import ExampleKeeper, picture_eps, robust_pictures

    s = settings
    clf = model_classifier(model, data)
    keeper = ExampleKeeper(picture_eps(s.eps), seed=s.seed)  # a few attacked images for the record's pictures
    metrics, rows = evaluate_robust(model, data, clf, s, save_adv=save_adv, partial=partial, keeper=keeper)
    table_rows = [{"eps": "0 (clean)", "accuracy": metrics["clean_top1"]}]
    table_rows += [{"eps": name, "accuracy": r["robust_top1"]} for name, r in metrics["eps"].items()]
    title = f"Robust accuracy under {s.attack} ({s.norm})" + table_label(metrics["randomness"], s.attack_options)
    table = Table.of(title, [("eps", "eps"), ("accuracy", "accuracy", "%")],
                     table_rows, f"Zero-shot accuracy of {metrics['n']} seeded test images (seed {s.seed}) on clean "
                                 f"images and under the {s.attack} attack with {s.norm} radius eps (images in [0,1]); "
                                 f"{metrics['n_skipped']} sampled images could not be read and are skipped.")
    skipped = skipped_rows(data, sample_ids(len(data), s.n_samples, s.seed))
    found = collect(metrics.pop("check_warnings"), robust_warnings(metrics),
                    randomized_warnings(metrics["randomness"], s.attack, s.attack_options))
    return Record(kind="robust", metrics=metrics, samples=rows, tables=[table],
                  seeds={"sample": s.seed, "attack": s.seed},
                  extra={"sample_ids": [r["index"] for r in rows], "skipped_images": skipped},
                  warnings=found, protocol=robust_protocol(data, clf.source, s),
                  pictures=robust_pictures(metrics, keeper, data.classes.classnames, attack=s.attack, norm=s.norm))


def robust_protocol(data: Any, classifier: str, s: RobustSettings) -> dict[str, Any]:
    """What two robust evaluations must share: classifier texts, attack and its options, norm, eps (as a
    fraction of 1 and as k/255), sample size and seed."""
    return {**templates_protocol(data.classes.classnames, data.classes.templates, classifier),
            "attack": s.attack, "attack_options": dict(s.attack_options), "attack_sha": digest(
                [s.attack, s.attack_options, s.norm]), "norm": s.norm, **eps_fields(s.eps),
            "n_samples": s.n_samples, "sample_seed": s.seed, "checks": s.check}
