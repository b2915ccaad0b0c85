"""`mmrobust train` as a library function: model + data + task + loop -> run directory."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

from mmrobust.data.datasets import ClassInfo, ImageTextDataset
from mmrobust.data.image_folder import folder_split, parse_folder_spec
from mmrobust.data.instruction_dataset import InstructionDataset
from mmrobust.data.manifest import PathPolicy
from mmrobust.data.shards import ShardImageTextDataset, ShardIndex, cached_shard_index, parse_shard_spec
from mmrobust.tasks.build import build_task
from mmrobust.tasks.mllm_sft import load_hf_mllm
from mmrobust.errors import ConfigError, DataError
from mmrobust.models.checkpoint import CONFIG_NAME, HEAD_NAME, WEIGHTS_NAME
from mmrobust.models.clip import create_clip
from mmrobust.registry import TASKS
from mmrobust.reports.records import write_results
from mmrobust.reports.sanity import rows_skipped, target_absent, too_few_poisoned
from mmrobust.models.limits import MAX_TOWER_IMAGE_SIZE
from mmrobust.models.resize import resize_clip_image_size
from mmrobust.values import check_int, check_seed
from mmrobust.training.distributed import barrier, is_main, rank_and_size
from mmrobust.training.loop import CKPT_NAME, LATER_DEFAULTS, LOG_NAME, RESUME_FREE, TrainConfig, TrainResult, train

CONFIG_FILE = "config.yaml"
SHARD_INDEX = "shard_index.npz"  # the shards' cached index, under out_dir/data
# The files of a run that --overwrite may delete, and nothing else. What a run writes under out_dir/data (a
# class-folder manifest, the shard-index cache) is rewritten or checked against its sources at every start.
RUN_FILES = (CONFIG_FILE, LOG_NAME, "results.json", f"checkpoints/{CKPT_NAME}", "checkpoints/last.tmp",
             f"model/{CONFIG_NAME}", f"model/{WEIGHTS_NAME}", f"model/{WEIGHTS_NAME}.tmp", f"model/{HEAD_NAME}")


@dataclass(frozen=True)
class DataSpec:
    """Where training pairs come from: a CSV manifest (columns configurable) or ``shards:PATTERN`` (webdataset
    tars of KEY.jpg/png/webp + KEY.txt, read by random access; the column, delimiter and path options do not
    apply)."""

    manifest: str
    image_col: str = "image"
    caption_col: str = "caption"
    label_col: str | None = None
    delimiter: str = ","
    classes: str | None = None  # classes.json for tasks that classify
    preload: bool = True
    data_root: str | None = None  # image paths must lie inside it (default: the manifest's folder)
    allow_outside: bool = False  # allow image paths anywhere (--allow-outside-paths)

    def __post_init__(self) -> None:
        if not isinstance(self.delimiter, str) or len(self.delimiter) != 1:
            raise ConfigError(f"delimiter {self.delimiter!r} must be one character, e.g. , or ; or a tab (--delimiter)")


@dataclass(frozen=True)
class ModelSpec:
    """Which CLIP to start from."""

    name: str = "mmrobust-tiny"
    pretrained: str | None = None
    checkpoint: str | None = None
    seed: int = 0
    image_size: int | None = None  # run the image tower at this size: positions resized (LLaVA-1.5: 336)

    def __post_init__(self) -> None:
        check_seed("init seed", self.seed, fix="--init-seed")
        if self.image_size is not None:
            check_int("image size", self.image_size, low=1, high=MAX_TOWER_IMAGE_SIZE, fix="--image-size, e.g. 336")


@dataclass(frozen=True)
class TrainJob:
    task: str
    model: ModelSpec
    data: DataSpec
    optim: TrainConfig
    out_dir: str
    task_options: dict[str, Any] = field(default_factory=dict)


def job_dict(job: TrainJob) -> dict[str, Any]:
    d = asdict(job)
    d["optim"]["betas"] = list(job.optim.betas)
    return d


def run_files(out_dir: str | Path) -> list[str]:
    """The files of a training run present in ``out_dir`` (what ``overwrite=True`` replaces)."""
    return [name for name in RUN_FILES if (Path(out_dir) / name).exists()]


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def _saved_config(out: Path) -> dict[str, Any] | None:
    """The job dict in ``out/config.yaml`` if mmrobust train wrote it, else None."""
    try:
        saved = yaml.safe_load((out / CONFIG_FILE).read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    return saved if isinstance(saved, dict) and {"task", "model", "data", "optim"} <= set(saved) else None


def _check_resume(out: Path, job: TrainJob) -> None:
    """A resumed run must have the settings of the run it continues (steps, devices, workers may change)."""
    if not (out / CONFIG_FILE).exists():
        return
    saved = _saved_config(out)
    if saved is None:
        raise DataError(f"{out / CONFIG_FILE} is not a config written by mmrobust train; resume into the run's own "
                        "directory, or use a new --out")
    free = {"out_dir", "data.preload", *(f"optim.{k}" for k in RESUME_FREE)}
    old, new = _flat(saved), _flat(yaml.safe_load(yaml.safe_dump(job_dict(job))))
    old.update({f"optim.{k}": v for k, v in LATER_DEFAULTS.items() if f"optim.{k}" not in old})  # older runs
    diff = sorted(k for k in set(old) | set(new) if k not in free and old.get(k) != new.get(k))
    if diff:
        shown = ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in diff[:3])
        raise ConfigError(f"cannot resume {out}: it was trained with other settings ({shown}); resume with the "
                          f"settings in {out / CONFIG_FILE}, or pass --overwrite / a new --out to start over")


def check_run_dir(job: TrainJob, *, resume: bool = False, overwrite: bool = False) -> list[str]:
    """Refuse (one line) what would replace or mix into an earlier run; returns the files that
    ``overwrite`` will delete (only files a run writes, see RUN_FILES)."""
    out = Path(job.out_dir)
    if resume and overwrite:
        raise ConfigError("pass --resume (continue the run) or --overwrite (replace it), not both")
    found = run_files(out)
    if resume:
        _check_resume(out, job)
        return []
    if found and not overwrite:
        raise ConfigError(f"{out} already holds a training run ({', '.join(found)}); pass --resume to continue it, "
                          "--overwrite to replace those files, or choose a new --out")
    if found and _saved_config(out) is None:
        raise ConfigError(f"{out} holds {', '.join(found)} but no config.yaml written by mmrobust train, so "
                          "--overwrite will not delete them; move them away or choose a new --out")
    return found


def _remove_run(out: Path, files: list[str]) -> None:
    """Delete an earlier run's files (only those listed) and its then-empty folders."""
    for name in files:
        (out / name).unlink(missing_ok=True)
    for folder in (out / "checkpoints", out / "model"):
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()


def _write_config(out: Path, job: TrainJob) -> None:
    (out / CONFIG_FILE).write_text(yaml.safe_dump(job_dict(job), sort_keys=False))


def _shard_dataset(job: TrainJob, pattern: str, task: Any, image_size: int,
                   classes: ClassInfo | None, resume: bool = False) -> ShardImageTextDataset:
    """Samples of webdataset shards: image-caption pairs, or with ``--classes`` image + ``.cls`` label
    (the caption "a photo of a {class}." where a sample has no ``.txt``), as TeCoA and supervised need."""
    if job.data.label_col:
        raise ConfigError("--label-col is for CSV manifests; shards carry labels in .cls members: drop it and "
                          "pass --classes")
    if task.needs_labels and classes is None:
        raise ConfigError(f"task {job.task!r} trains on the shards' .cls labels: pass --classes (a classes.json, "
                          "or imagenet for ImageNet-1k's 1000 names in index order)")
    if job.data.data_root or job.data.allow_outside:
        raise ConfigError("--data-root / --allow-outside-paths apply to CSV manifests; shards are read from the files "
                          "their pattern names, drop them")
    return ShardImageTextDataset(index=_shard_index(job, pattern, resume), image_size=image_size, views=task.views,
                                 seed=job.optim.seed, labels=classes is not None,
                                 classnames=classes.classnames if classes else None)


def _shard_index(job: TrainJob, pattern: str, resume: bool = False) -> ShardIndex:
    """The shards' index, cached in ``out_dir/data`` (a resumed run skips the pass over the tar headers; a
    changed shard rebuilds it, and a resumed run whose shard now holds other samples is refused). Rank 0
    builds and writes it; the others read it after the barrier, or build it themselves, and so fail alike
    on a bad shard (a failed write is only a warning)."""
    cache = Path(job.out_dir) / "data" / SHARD_INDEX
    index, error = None, None
    if is_main():
        try:
            index = cached_shard_index(pattern, cache, same_data=resume)
        except Exception as e:  # noqa: BLE001 - raised after the barrier: no rank is left waiting
            error = e
    barrier()
    if error is not None:
        raise error
    return index if index is not None else cached_shard_index(pattern, cache, write=False)


def _folder_split(job: TrainJob) -> tuple[Path, Path, Path]:
    """(manifest, classes.json, root) of a class-folder tree (``imagenet:PATH`` / ``folder:PATH``) as image,
    label and caption rows under ``out_dir/data``; rank 0 writes them, every rank reads them."""
    given = [flag for flag, value in (("--classes", job.data.classes), ("--label-col", job.data.label_col),
                                      ("--data-root", job.data.data_root)) if value]
    if given:
        raise ConfigError(f"{', '.join(given)} not used with --data {job.data.manifest!r}: the class folders give the "
                          "labels, names and root; drop them")
    split = folder_split(job.data.manifest, Path(job.out_dir) / "data", write=is_main())  # a bad tree fails every rank
    barrier()
    return split


def _clip_model(job: TrainJob) -> tuple[Any, dict[str, Any]]:
    """The starting CLIP, at ``job.model.image_size`` when given (position embeddings resized, bicubic, class
    token kept); the resize record, or {} when none was asked."""
    model = create_clip(job.model.name, pretrained=job.model.pretrained, checkpoint=job.model.checkpoint,
                        seed=job.model.seed)
    if job.model.image_size is None:
        return model, {}
    return model, {"position_embedding": resize_clip_image_size(model, job.model.image_size)}


def _clip_setup(job: TrainJob, resume: bool = False) -> tuple[Any, Any, dict[str, Any]]:
    """A CLIP Task on an image-caption CSV manifest, a class-folder tree (imagenet:PATH, folder:PATH: labels
    and the caption "a photo of a {class}.") or webdataset shards (``resume``: they must hold what they held);
    and what was done to the model before training (the resize record)."""
    model, notes = _clip_model(job)
    folder = _folder_split(job) if parse_folder_spec(job.data.manifest) is not None else None
    class_file = str(folder[1]) if folder else job.data.classes
    classes = ClassInfo.load(class_file) if class_file else None
    task = build_task(job.task, model, classes=classes, **job.task_options)
    pattern = parse_shard_spec(job.data.manifest)
    if pattern is not None:
        return task, _shard_dataset(job, pattern, task, model.image_size, classes, resume), notes
    if folder:
        manifest, _, root = folder
        return task, ImageTextDataset(manifest, image_size=model.image_size, label_col="label" if task.needs_labels
                                      else None, classnames=classes.classnames, preload=job.data.preload,
                                      views=task.views, seed=job.optim.seed,
                                      paths=PathPolicy.of(manifest, str(root), job.data.allow_outside)), notes
    label_col = job.data.label_col if (task.needs_labels or job.data.label_col) else None
    if task.needs_labels and not label_col:
        raise ConfigError(f"task {job.task!r} trains on labels: pass --label-col (and --classes)")
    dataset = ImageTextDataset(
        job.data.manifest, image_size=model.image_size, image_col=job.data.image_col,
        caption_col=job.data.caption_col, label_col=label_col,
        classnames=classes.classnames if classes else None, delimiter=job.data.delimiter,
        preload=job.data.preload, views=task.views, seed=job.optim.seed,
        paths=PathPolicy.of(job.data.manifest, job.data.data_root, job.data.allow_outside),
    )
    return task, dataset, notes


def _mllm_setup(job: TrainJob) -> tuple[Any, Any, dict[str, Any]]:
    """An MLLM Task (HF model folder in --model) on an instruction JSONL file (--data)."""
    unused = [flag for flag, value in (("--pretrained", job.model.pretrained), ("--checkpoint", job.model.checkpoint),
                                       ("--data-root", job.data.data_root), ("--label-col", job.data.label_col),
                                       ("--classes", job.data.classes),
                                      ("--image-size", job.model.image_size)) if value]
    if unused:
        raise ConfigError(f"task {job.task!r} takes an HF model folder (--model) and an instruction JSONL (--data); "
                          f"drop {', '.join(unused)}")
    task = build_task(job.task, load_hf_mllm(job.model.name), **job.task_options)
    dataset = InstructionDataset(job.data.manifest, image_size=task.image_size, allow_outside=job.data.allow_outside,
                                 preload=job.data.preload)
    return task, dataset, {}


def run_train(job: TrainJob, *, resume: bool = False, overwrite: bool = False, progress: bool = True,
              on_replace: Callable[[list[str]], None] | None = None) -> tuple[Path, TrainResult]:
    """Train per ``job``; writes config.yaml, checkpoints/, train_log.jsonl, model/ and results.json.

    An ``out_dir`` holding an earlier run is an error unless ``resume`` (same settings: continue from its
    checkpoint) or ``overwrite`` (delete that run's files first). config.yaml is written only once the
    run starts, so a refused resume leaves it as it was. Returns (exported model directory, result).
    Under torchrun every rank calls it; rank 0 alone deletes, writes and exports. ``on_replace`` hears the
    names of the earlier run's files that ``overwrite`` replaces (the run directory is checked once, here)."""
    out = Path(job.out_dir)
    replace = check_run_dir(job, resume=resume, overwrite=overwrite)
    if replace and on_replace is not None:
        on_replace(replace)
    mllm = getattr(TASKS.get(job.task), "model_kind", "clip") == "hf-mllm"
    task, dataset, notes = _mllm_setup(job) if mllm else _clip_setup(job, resume)
    barrier()  # under torchrun: every rank has checked out_dir before rank 0 deletes anything
    if is_main():
        _remove_run(out, replace)
    barrier()
    result = train(task, dataset, job.optim, out, resume=resume, progress=progress, desc=f"train {job.task}",
                   on_start=lambda _start: _write_config(out, job))
    model_dir = out / "model"
    if is_main():
        model_dir = task.export(model_dir, extra=notes)
        _write_train_results(out, job, result, dataset, notes)
    barrier()  # the model directory and results.json exist when any rank returns
    return model_dir, result


def poison_warnings(job: TrainJob) -> list[str]:
    """With a ``poison.json`` beside the manifest (a copy written by ``mmrobust poison``): too few poisoned
    pairs for the data size, and a target that is not one of ``--classes``."""
    from mmrobust.data.poison import PoisonRecord
    from mmrobust.errors import MMRobustError

    path = Path(job.data.manifest).parent / "poison.json"
    if parse_shard_spec(job.data.manifest) is not None or not path.is_file():
        return []
    try:
        rec = PoisonRecord.load(path)
        names = ClassInfo.load(job.data.classes).classnames if job.data.classes else None
    except MMRobustError:
        return []
    return too_few_poisoned(len(rec.poisoned_ids), rec.n_rows) + (target_absent(rec.target, names) if names else [])


def _skip_warnings(dataset: Any) -> list[str]:
    skipped = dataset.skips.summary()["skipped"]
    first = skipped[0].get("reason", "") if skipped and isinstance(skipped[0], dict) else ""
    return rows_skipped(len(dataset.skips.skipped), len(dataset) if hasattr(dataset, "__len__") else 0, str(first)[:200])


def _write_train_results(out: Path, job: TrainJob, result: TrainResult, dataset: Any,
                         notes: dict[str, Any]) -> None:
    last = result.history[-1] if result.history else {}
    shards = dataset.summary() if isinstance(dataset, ShardImageTextDataset) else None
    write_results(out, kind="train", metrics={"steps": result.steps_done, "final": last,
                                              "n_skipped_images": len(dataset.skips.skipped),
                                              **({"n_samples": shards["n_samples"],
                                                  "n_incomplete_samples": shards["n_incomplete"]} if shards else {})},
                  config=job_dict(job), seeds={"train": job.optim.seed, "init": job.model.seed},
                  warnings=poison_warnings(job) + _skip_warnings(dataset),
                  extra={**notes, "skipped_images": dataset.skips.summary()["skipped"],
                         "resumed_from": result.resumed_from,
                         "world_size": rank_and_size()[1],
                         **({"incomplete_samples": shards["incomplete"]} if shards else {})})
