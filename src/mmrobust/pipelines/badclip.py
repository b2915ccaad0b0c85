"""`mmrobust make-trigger badclip` as a library function: optimize a BadCLIP patch (Liang et al., CVPR 2024) on a
clean surrogate CLIP and write the artifact that `mmrobust poison --trigger patch` pastes.

The artifact folder holds ``patch.png`` (the 8-bit patch, exactly what gets pasted), ``preview.png`` (a picture
of it: as it is, on mid-grey and on an image) and ``trigger.json`` (settings,
seed, surrogate, data, target, loss terms before and after, the PNG's sha256 and the ``patch`` trigger spec to
poison with). Example::

    from mmrobust.data.poison.badclip import BadCLIPSettings
    from mmrobust.pipelines.badclip import make_badclip_trigger
    from mmrobust.pipelines.evaluate import EvalData
    art = make_badclip_trigger(surrogate="runs/clean/model", data=EvalData("world/train.csv", "world/classes.json"),
                               target="star", out_dir="runs/badclip", settings=BadCLIPSettings(size=6, steps=300))
    art.trigger   # {"name": "patch", "config": {"file": ".../patch.png", "sha256": ..., "size": 6, ...}}
"""
from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from mmrobust.data.datasets import ClassInfo, LabelledDataset
from mmrobust.data.poison.badclip import BadCLIPSettings, PatchResult, optimize_patch
from mmrobust.data.poison.patch import Patch, save_patch_png
from mmrobust.data.poison.triggers import trigger_spec
from mmrobust.errors import ConfigError, DataError
from mmrobust.jsonio import write_json
from mmrobust.models.clip import CLIPModel, zero_shot_weights
from mmrobust.pipelines.evaluate import EvalData, load_model, manifest_images
from mmrobust.safety import check_replace, is_inside

GENERATOR = "mmrobust make-trigger badclip"
PATCH_NAME, RECORD_NAME, PREVIEW_NAME = "patch.png", "trigger.json", "preview.png"
PAPER = ("Liang et al., CVPR 2024, 'BadCLIP: Dual-Embedding Guided Backdoor Attack on Multimodal Contrastive "
         "Learning'")
OBJECTIVE = ("text_weight * CE(s * f(x+p) @ T^T, target) + visual_weight * max(0, |f(x+p) - f(x_target)| - "
             "|f(x+p) - f(x)| + margin); f, T L2-normalized; p clamped to [0,1]")


@dataclass(frozen=True)
class BadCLIPArtifact:
    """What :func:`make_badclip_trigger` wrote: the PNG, its sha256, the record, the ``patch`` trigger spec to
    poison with and the final loss terms."""

    out_dir: Path
    patch: Path
    record: Path
    sha256: str
    trigger: dict[str, Any]
    final: dict[str, float]
    image_size: int  # the surrogate's: poison at this size (mmrobust poison --image-size) to paste as optimized
    preview: Path | None = None  # preview.png: the patch as it is, on mid-grey and on an image (None: not drawn)
    preview_error: str = ""  # why not


class _Images:
    """The chosen images of a labelled dataset as a sequence of (3,H,W) float tensors in [0,1]."""

    def __init__(self, dataset: LabelledDataset, ids: list[int]) -> None:
        self.dataset, self.ids = dataset, ids

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> torch.Tensor:
        item = self.dataset[self.ids[i]]
        if item is None:  # readable when chosen; gone since
            raise DataError(f"image {self.dataset.image_path(self.ids[i])} can no longer be read; rerun")
        return item["image"]


def _holds(out_dir: Path, path: Path) -> bool:
    try:
        return is_inside(out_dir, path)
    except DataError:  # an unresolvable image path is no file there to protect
        return False


def check_out(out_dir: Path, data: EvalData, overwrite: bool) -> None:
    """Refuse an output folder that holds the data (manifest, class file or an image) or files of ours without
    ``overwrite``, or files mmrobust did not write (never replaced)."""
    for what, path in (("manifest", Path(data.manifest)), ("class file", Path(data.classes))):
        if _holds(out_dir, path):
            raise ConfigError(f"--out {out_dir} holds the {what} {path}; write the trigger to a new folder outside "
                              "the data (e.g. --out runs/badclip)")
    inside = next((p for p in manifest_images(data.manifest, data.image_col, data.delimiter) if _holds(out_dir, p)),
                  None)
    if inside is not None:
        raise ConfigError(f"--out {out_dir} holds the image {inside} of the data; write the trigger to a new folder "
                          "outside the data (e.g. --out runs/badclip)")
    found = [n for n in (PATCH_NAME, RECORD_NAME, PREVIEW_NAME)
             if (out_dir / n).exists() or (out_dir / n).is_symlink()]
    check_replace(out_dir, found, marker=RECORD_NAME, generator=GENERATOR, overwrite=overwrite)


def _select(dataset: LabelledDataset, target: int, s: BadCLIPSettings) -> tuple[list[int], list[int]]:
    """Seeded choice of readable images: up to ``max_images`` non-target ones and ``max_positives`` of the target."""
    others: list[int] = []
    targets: list[int] = []
    for i in torch.randperm(len(dataset), generator=torch.Generator().manual_seed(s.seed)).tolist():
        pool, cap = (targets, s.max_positives) if dataset.labels[i] == target else (others, s.max_images)
        if len(pool) < cap and dataset.image_u8(i) is not None:
            pool.append(i)
        if len(others) == s.max_images and len(targets) == s.max_positives:
            break
    return others, targets


@torch.no_grad()
def _embed(model: CLIPModel, images: _Images, batch_size: int, device: str) -> torch.Tensor:
    """(N, D) normalized image embeddings, in batches."""
    rows = [model.encode_image(torch.stack([images[i] for i in range(k, min(k + batch_size, len(images)))])
                               .to(device), normalize=True) for k in range(0, len(images), batch_size)]
    return torch.cat(rows)


def _load(surrogate: str, data: EvalData, target: str, settings: BadCLIPSettings, weights: dict[str, Any]
          ) -> tuple[CLIPModel, LabelledDataset, ClassInfo, int]:
    classes = ClassInfo.load(data.classes)
    if target not in classes.classnames:
        shown = ", ".join(classes.classnames[:12]) + (", ..." if len(classes.classnames) > 12 else "")
        raise ConfigError(f"target {target!r} is not among the classes of {data.classes} ({shown}); pick one of them")
    if len(classes.classnames) < 2:
        raise ConfigError(f"{data.classes} lists one class; the text term needs the other classes' texts")
    looks_like_path = "/" in surrogate or "\\" in surrogate or surrogate.startswith(".")
    if looks_like_path and not surrogate.startswith(("hf-hub:", "local-dir:")) and not Path(surrogate).exists():
        raise ConfigError(f"surrogate model directory {surrogate} not found; pass a model directory (e.g. "
                          "runs/clean/model from mmrobust train), an open_clip name with --pretrained, or "
                          "hf-hub:org/repo")
    model = load_model(surrogate, device=settings.device, **weights)
    if settings.size > model.image_size:
        raise ConfigError(f"a {settings.size} px patch does not fit the surrogate's {model.image_size} px images; "
                          "use a smaller --size")
    dataset = LabelledDataset(data.manifest, classes=classes, image_size=model.image_size, image_col=data.image_col,
                              label_col=data.label_col, delimiter=data.delimiter, preload=True, paths=data.paths())
    return model, dataset, classes, classes.classnames.index(target)


def make_badclip_trigger(*, surrogate: str, data: EvalData, target: str, out_dir: str | Path,
                         settings: BadCLIPSettings | None = None, pretrained: str | None = None,
                         checkpoint: str | None = None, overwrite: bool = False,
                         on_step: Callable[[int, dict[str, float]], None] | None = None) -> BadCLIPArtifact:
    """Optimize a BadCLIP patch on ``surrogate`` (an open_clip name with ``pretrained``, ``hf-hub:...`` or a model
    directory) over ``data`` (a labelled CSV manifest + classes.json: non-target images carry the patch, images of
    ``target`` give the visual positives) and write ``out_dir/patch.png`` + ``out_dir/trigger.json``.

    Refuses (one-line errors) a target not among the classes, a split without target or non-target images, and
    an ``out_dir`` holding the data or files it did not write; files of an earlier run of its own are replaced
    only with ``overwrite``. Nothing else in ``out_dir`` is touched.
    """
    s = settings or BadCLIPSettings()
    out_dir = Path(out_dir).expanduser()
    check_out(out_dir, data, overwrite)
    weights = {"pretrained": pretrained, "checkpoint": checkpoint}
    model, dataset, classes, t = _load(surrogate, data, target, s, weights)
    others, targets = _select(dataset, t, s)
    if not targets or not others:
        which = f"no image labelled {target!r}" if not targets else f"only images labelled {target!r}"
        raise DataError(f"{data.manifest} has {which} that could be read; the patch needs both target images "
                        "(visual positives) and others (to carry it)")
    class_text = zero_shot_weights(model, classes.classnames, classes.templates)
    positives = _embed(model, _Images(dataset, targets), s.batch_size, s.device)
    result = optimize_patch(model, images=_Images(dataset, others), positives=positives, class_text=class_text,
                            target=t, settings=s, logit_scale=float(model.logit_scale.detach()), on_step=on_step)
    info = {"surrogate": {"model": surrogate, **weights, "image_size": model.image_size},
            "data": {"manifest": str(Path(data.manifest).resolve()), "classes": str(Path(data.classes).resolve()),
                     "manifest_sha256": hashlib.sha256(Path(data.manifest).read_bytes()).hexdigest(),
                     "image_col": data.image_col, "label_col": data.label_col, "delimiter": data.delimiter,
                     "n_images": len(others), "n_positives": len(targets), "n_unreadable": len(dataset.skips.skipped)},
            "target": target, "target_index": t}
    art = _write_artifact(out_dir, result, s, info)
    preview, error = write_preview(art, example=_Images(dataset, others)[0], target=target)
    return dataclasses.replace(art, preview=preview, preview_error=error)


def write_preview(art: BadCLIPArtifact, *, example: torch.Tensor, target: str) -> tuple[Path | None, str]:
    """``preview.png`` beside the patch: the patch as it is, pasted on mid-grey and on ``example`` (an image that
    carried it). Returns (path, '') or (None, why not): the artifact stands without its picture."""
    from mmrobust.data.poison.preview import trigger_panels
    from mmrobust.data.poison.triggers import trigger_from_dict
    from mmrobust.reports.gallery import image_row

    try:
        trigger = trigger_from_dict(art.trigger)
        h, w = (int(v) for v in example.shape[-2:])
        panels = [("an image", example), ("the image with the patch", trigger(example)),
                  *trigger_panels(trigger, height=h, width=w)]
        title = f"BadCLIP patch for target '{target}' (sha256 {art.sha256[:12]}...), pasted as poisoning pastes it"
        return image_row(art.out_dir / PREVIEW_NAME, panels, title=title), ""
    except Exception as e:  # noqa: BLE001 - patch.png and trigger.json are written; only the picture is missing
        return None, f"{type(e).__name__}: {e}"


def _write_artifact(out_dir: Path, result: PatchResult, s: BadCLIPSettings, info: dict[str, Any]) -> BadCLIPArtifact:
    """patch.png, then trigger.json (a marker of ours is written first, so an interrupted run can be replaced)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    record = out_dir / RECORD_NAME
    write_json(record, {"generator": GENERATOR, "status": "writing"})
    sha = save_patch_png(result.patch, out_dir / PATCH_NAME)
    trig = Patch(file=str(out_dir / PATCH_NAME), sha256=sha, size=s.size, location=s.location)
    spec = trigger_spec(trig)
    write_json(record, {"generator": GENERATOR, "method": "badclip", "paper": PAPER, "objective": OBJECTIVE,
                        "patch": PATCH_NAME, "sha256": sha, "trigger": spec, **info, "seed": s.seed,
                        "settings": asdict(s), "loss": {"initial": result.initial, "final": result.final}})
    return BadCLIPArtifact(out_dir=out_dir, patch=Path(trig.file), record=record, sha256=sha, trigger=spec,
                           final=result.final, image_size=int(info["surrogate"]["image_size"]))
