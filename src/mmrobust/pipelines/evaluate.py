"""`mmrobust eval ...` as library functions: each writes results.json + per-sample JSONL to ``out_dir``."""
from __future__ import annotations

import hashlib
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from mmrobust.data.clip_benchmark import BenchmarkSplit
from mmrobust.data.datasets import ClassInfo, LabelledDataset
from mmrobust.data.manifest import PathPolicy
from mmrobust.errors import ConfigError
from mmrobust.eval.backdoor import BackdoorSettings
from mmrobust.eval.contract import run_evaluation
from mmrobust.eval.retrieval import RetrievalSettings
from mmrobust.eval.robust import RobustSettings
from mmrobust.eval.zeroshot import ZeroShotSettings
from mmrobust.models.clip import CLIPModel, create_clip
from mmrobust.reports.contract import Record, write_record
from mmrobust.reports.sanity import test_in_train, too_few_poisoned

HASH_LIMIT = 20_000  # compare image contents (not only paths) when train + test hold at most this many files


@dataclass(frozen=True)
class EvalData:
    """A labelled evaluation split: CSV (image + label columns) and classes.json."""

    manifest: str
    classes: str
    image_col: str = "image"
    label_col: str = "label"
    delimiter: str = ","
    data_root: str | None = None  # image paths must lie inside it (default: the manifest's folder)
    allow_outside: bool = False
    benchmark: str | None = None  # a clip-benchmark dataset name (clip_benchmark:NAME) read from data_root
    split: str = "test"

    def paths(self) -> PathPolicy:
        return PathPolicy.of(self.manifest, self.data_root, self.allow_outside)


def eval_data(data: str, classes: str | None, *, out_dir: str | Path, image_col: str = "image",
              label_col: str = "label", delimiter: str = ",", data_root: str | None = None,
              allow_outside: bool = False) -> EvalData:
    """The split ``data`` names: a CSV manifest with its ``classes`` JSON, an image folder
    (``imagenet:PATH``, ``folder:PATH``; :mod:`mmrobust.data.image_folder`) whose manifest and classes.json
    are written under ``out_dir/data`` with the folder as the data root, or a clip-benchmark dataset
    (``clip_benchmark:NAME``; :mod:`mmrobust.data.clip_benchmark`) read from ``data_root``."""
    from mmrobust.data.clip_benchmark import parse_benchmark_spec
    from mmrobust.data.image_folder import folder_split, parse_folder_spec

    name = parse_benchmark_spec(data)
    if name is not None:
        if classes:
            raise ConfigError(f"--classes is not used with --data {data!r}: clip-benchmark gives the class names "
                              "and templates; drop --classes")
        if not data_root:
            raise ConfigError(f"--data {data!r} needs --data-root, the folder clip-benchmark keeps its datasets in "
                              "(its --dataset_root)")
        return EvalData(manifest=data, classes="", data_root=data_root, benchmark=name)
    if parse_folder_spec(data) is None:
        if not classes:
            raise ConfigError(f"--data {data!r} is a CSV manifest and needs --classes classes.json (or give "
                              "imagenet:PATH or folder:PATH for a class-folder tree)")
        return EvalData(manifest=data, classes=classes, image_col=image_col, label_col=label_col,
                        delimiter=delimiter, data_root=data_root, allow_outside=allow_outside)
    if classes:
        raise ConfigError(f"--classes is not used with --data {data!r}: its class names come from the folder "
                          "(imagenet: the OpenAI CLIP names and templates); drop --classes")
    manifest, class_file, root = folder_split(data, Path(out_dir) / "data")
    return EvalData(manifest=str(manifest), classes=str(class_file), data_root=str(root), allow_outside=allow_outside)


def load_model(name: str, *, pretrained: str | None = None, checkpoint: str | None = None,
               device: str = "cpu") -> CLIPModel:
    """A CLIP to evaluate; refuses a stock open_clip architecture without weights (a random model)."""
    random_init = not (pretrained or checkpoint or Path(name).is_dir() or name.startswith(("hf-hub:", "local-dir:"))
                       or name.startswith("mmrobust-"))
    if random_init:
        raise ConfigError(f"model {name!r} would be evaluated with random weights; pass --pretrained TAG "
                          "(e.g. openai), --checkpoint FILE, hf-hub:org/repo or a model directory")
    return create_clip(name, pretrained=pretrained, checkpoint=checkpoint, device=device)


def labelled(data: EvalData, model: CLIPModel) -> LabelledDataset | BenchmarkSplit:
    if data.benchmark:
        return BenchmarkSplit(data.benchmark, root=data.data_root or ".", image_size=model.image_size, split=data.split)
    classes = ClassInfo.load(data.classes)
    return LabelledDataset(data.manifest, classes=classes, image_size=model.image_size, image_col=data.image_col,
                           label_col=data.label_col, delimiter=data.delimiter, preload=True, paths=data.paths())


def _write(out_dir: str | Path, record: Record, config: dict[str, Any]) -> dict[str, Any]:
    record.config = {**config, **record.config}
    write_record(out_dir, record)
    return record.metrics


def eval_zeroshot(*, model: str, data: EvalData, out_dir: str | Path, weights: dict | None = None,
                  batch_size: int = 256, device: str = "cpu",
                  clip: CLIPModel | None = None) -> dict[str, Any]:
    """Zero-shot top-1/top-5 with the template ensemble (or a saved linear head)."""
    clip = clip or load_model(model, device=device, **(weights or {}))
    record = run_evaluation("zeroshot", model=clip, data=labelled(data, clip),
                            settings=ZeroShotSettings(batch_size=batch_size, device=device))
    return _write(out_dir, record, {"model": model, "data": asdict(data)})


def backdoor_trigger(*, poison_record: str | Path | None = None, trigger: Any = None,
                     trigger_params: dict[str, Any] | None = None, target: str | None = None
                     ) -> tuple[dict[str, Any], str]:
    """The trigger spec and target class of a backdoor evaluation: from a poison record (``poison.json``;
    an explicit ``target`` wins), or from a trigger (name + params, spec dict or Trigger) and a target."""
    from mmrobust.data.poison import PoisonRecord
    from mmrobust.data.poison.triggers import Trigger, make_trigger, trigger_from_dict, trigger_spec

    if poison_record is not None:
        rec = PoisonRecord.load(poison_record)
        return trigger_spec(rec.build_trigger()), target or rec.target
    if trigger is None or not target:
        raise ConfigError("give a poison record (--poison-record poison.json), or both a trigger and a target "
                          "(--trigger NAME --target CLASS)")
    if isinstance(trigger, str):
        trigger = make_trigger(trigger, **(trigger_params or {}))
    elif isinstance(trigger, dict):
        trigger = trigger_from_dict(trigger)
    if not isinstance(trigger, Trigger):
        raise ConfigError(f"trigger must be a name, a spec dict or a Trigger, got {type(trigger).__name__}")
    return trigger_spec(trigger), target


def manifest_images(manifest: str | Path, image_col: str = "image", delimiter: str = ",") -> list[Path]:
    """The image paths of a CSV manifest, resolved from its folder (the file's own rows, nothing read)."""
    from mmrobust.data.manifest import read_csv

    table = read_csv(manifest, delimiter=delimiter)
    col = table.column(image_col)
    base = Path(manifest).parent
    return [Path(os.path.normpath(base / row[col])) for row in table.rows]


def _content(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None
    except OSError:
        return None


def _resolved(path: Path) -> Path:
    """``path`` resolved, or as given where it cannot be (a symlink loop: that image is skipped when read)."""
    try:
        return path.resolve()
    except (RuntimeError, OSError):
        return path.absolute()


def train_test_overlap(train: Sequence[Path], test: Sequence[Path]) -> tuple[int, str]:
    """(number of test images that are also training images, one example): the same resolved path, or, when
    both lists together hold at most ``HASH_LIMIT`` files, the same bytes."""
    seen = {_resolved(p) for p in train}
    same = [p for p in test if _resolved(p) in seen]
    if len(train) + len(test) <= HASH_LIMIT:
        hashes = {h for h in map(_content, train) if h}
        same += [p for p in test if _resolved(p) not in seen and _content(p) in hashes]
    return len(same), str(same[0]) if same else ""


def poison_warnings(record: str | Path, data: EvalData) -> list[str]:
    """Warnings a poison record supports on a backdoor evaluation: too few poisoned pairs, and test images that
    are also (poisoned or clean) training images."""
    from mmrobust.data.poison import PoisonRecord
    from mmrobust.jsonio import read_json

    rec = PoisonRecord.load(record)
    found = too_few_poisoned(len(rec.poisoned_ids) or len(rec.keys), rec.n_rows)
    if rec.kind != "manifest" or data.benchmark:
        return found
    info = read_json(rec.record_path)
    train = manifest_images(rec.manifest, str(info.get("image_col", "image")), str(info.get("delimiter", ",")))
    test = manifest_images(data.manifest, data.image_col, data.delimiter)
    n_same, example = train_test_overlap(train, test)
    return found + test_in_train(n_same, len(test), example)


def eval_backdoor(*, model: str, data: EvalData, out_dir: str | Path, trigger: Any = None,
                  target: str | None = None, trigger_params: dict[str, Any] | None = None,
                  poison_record: str | Path | None = None, weights: dict | None = None, seed: int = 0,
                  batch_size: int = 256, device: str = "cpu", clip: CLIPModel | None = None) -> dict[str, Any]:
    """Clean accuracy and ASR of a trigger towards class ``target`` (name from classes.json); the trigger
    and target come from ``poison_record`` or from ``trigger`` (+ ``trigger_params``) and ``target``."""
    spec, target = backdoor_trigger(poison_record=poison_record, trigger=trigger, trigger_params=trigger_params,
                                    target=target)
    clip = clip or load_model(model, device=device, **(weights or {}))
    settings = BackdoorSettings(trigger=spec, target=target, seed=seed, batch_size=batch_size, device=device)
    record = run_evaluation("backdoor", model=clip, data=labelled(data, clip), settings=settings)
    if poison_record is not None:
        record.warnings += poison_warnings(poison_record, data)
    return _write(out_dir, record, {"model": model, "data": asdict(data)})


@dataclass(frozen=True)
class RetrievalData:
    """An image-caption split: a CSV manifest of image,caption rows (rows sharing an image are one image with
    several captions) or ``karpathy:PATH`` (a COCO / Flickr30k Karpathy-split JSON; ``split`` of it, images
    below ``data_root``, default the JSON's folder)."""

    manifest: str
    image_col: str = "image"
    caption_col: str = "caption"
    delimiter: str = ","
    data_root: str | None = None  # image paths must lie inside it (default: the manifest's folder)
    allow_outside: bool = False
    split: str = "test"


def eval_retrieval(*, model: str, data: RetrievalData, out_dir: str | Path, settings: RetrievalSettings | None = None,
                   weights: dict | None = None, clip: CLIPModel | None = None) -> dict[str, Any]:
    """Image->text and text->image recall@1/5/10 over ``data`` (a Karpathy split is first written as a
    manifest under ``out_dir/data``)."""
    from mmrobust.data.captions import RetrievalSplit, karpathy_split, parse_caption_spec

    settings = settings or RetrievalSettings()
    karpathy = parse_caption_spec(data.manifest)
    d = data
    if karpathy is not None:
        root = data.data_root or str(karpathy.parent)
        manifest = str(karpathy_split(data.manifest, Path(out_dir) / "data", split=data.split, image_root=root))
        d = RetrievalData(manifest, data_root=root, allow_outside=data.allow_outside, split=data.split)
    clip = clip or load_model(model, device=settings.device, **(weights or {}))
    ds = RetrievalSplit(d.manifest, image_size=clip.image_size, image_col=d.image_col, caption_col=d.caption_col,
                        delimiter=d.delimiter, preload=True, paths=PathPolicy.of(d.manifest, d.data_root,
                                                                                  d.allow_outside))
    record = run_evaluation("retrieval", model=clip, data=ds, settings=settings)
    return _write(out_dir, record, {"model": model, "manifest": data.manifest,
                                    "split": data.split if karpathy else None})


def zero_shot_agreement(model: CLIPModel, reference: CLIPModel, data: Any, images: torch.Tensor) -> float:
    """Share of ``images`` on which ``model`` and ``reference`` (the original) predict the same class, each
    with its own classifier on ``data``'s classes: how far a finetuned tower (FARE) drifted in what it says."""
    from mmrobust.eval.zeroshot import model_classifier

    with torch.no_grad():
        a = model_classifier(model, data).logits(model, images).argmax(1)
        b = model_classifier(reference, data).logits(reference, images).argmax(1)
    return float((a == b).float().mean())


def robust_setup(*, model: str, data: EvalData, out_dir: str | Path, device: str, weights: dict | None,
                 clip: CLIPModel | None, resume: bool) -> tuple[CLIPModel, Any, Path, Path]:
    """What a resumable robust evaluation starts from: (the CLIP, its labelled split, the created output folder,
    the partial-results file, cleared unless ``resume``)."""
    from mmrobust.eval.robust import PARTIAL_NAME, clear_partial

    clip = clip or load_model(model, device=device, **(weights or {}))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    partial = out / PARTIAL_NAME
    if not resume:
        clear_partial(partial)
    return clip, labelled(data, clip), out, partial


def eval_robust(*, model: str, data: EvalData, out_dir: str | Path, settings: RobustSettings | None = None,
                weights: dict | None = None, reference: str | None = None, reference_weights: dict | None = None,
                save_adv: bool = False, clip: CLIPModel | None = None, resume: bool = True) -> dict[str, Any]:
    """Clean + robust zero-shot accuracy per eps under ``settings.attack``; with ``reference`` (the original
    model) also the embedding drift on clean and adversarial images and the zero-shot agreement with it.

    Finished (eps, batch) chunks go to ``out_dir/partial_robust.jsonl`` as they finish; a rerun with the
    same settings resumes from it (``resume=False`` starts over). It is removed once the results are written."""
    from mmrobust.eval.robust import clear_partial, embedding_drift, load_images, sample_ids
    from mmrobust.reports.protocol import eps_label

    s = settings = settings or RobustSettings()
    device = s.device
    clip, ds, out, partial = robust_setup(model=model, data=data, out_dir=out_dir, device=device, weights=weights,
                                          clip=clip, resume=resume)
    record = run_evaluation("robust", model=clip, data=ds, settings=settings, save_adv=out if save_adv else None,
                            partial=partial)
    if reference:
        ref = load_model(reference, device=device, **(reference_weights or {}))
        x, _, _ = load_images(ds, sample_ids(len(ds), min(s.n_samples or 256, 256), s.seed))
        record.metrics["embedding_drift"] = {eps_label(e): embedding_drift(clip, ref, x.to(device), eps=e, seed=s.seed)
                                             for e in s.eps}
        record.metrics["zero_shot_agreement"] = zero_shot_agreement(clip, ref, ds, x.to(device))
    metrics = _write(out, record, {"model": model, "data": asdict(data), **asdict(s), "eps": list(s.eps),
                                   "reference": reference})
    clear_partial(partial)
    return metrics
