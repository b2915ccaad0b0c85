"""`mmrobust eval ...` as library functions: each writes results.json + per-sample JSONL to ``out_dir``."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mmrobust.data.datasets import ClassInfo, ImageTextDataset, LabelledDataset
from mmrobust.eval.backdoor import evaluate_backdoor
from mmrobust.eval.retrieval import evaluate_retrieval
from mmrobust.eval.zeroshot import build_classifier, evaluate_zeroshot
from mmrobust.errors import ConfigError
from mmrobust.models.clip import CLIPModel, create_clip
from mmrobust.reports.records import write_jsonl, write_results


@dataclass(frozen=True)
class EvalData:
    """A labelled evaluation split: CSV (image + label columns) and classes.json."""

    manifest: str
    classes: str
    image_col: str = "image"
    label_col: str = "label"
    delimiter: str = ","


def load_model(name: str, *, pretrained: str | None = None, checkpoint: str | None = None,
               device: str = "cpu") -> CLIPModel:
    """A CLIP to evaluate; refuses a stock open_clip architecture without weights (a random model)."""
    random_init = not (pretrained or checkpoint or Path(name).is_dir() or name.startswith(("hf-hub:", "local-dir:"))
                       or name.startswith("mmrobust-"))
    if random_init:
        raise ConfigError(f"model {name!r} would be evaluated with random weights; pass --pretrained TAG "
                          "(e.g. openai), --checkpoint FILE, hf-hub:org/repo or a model directory")
    return create_clip(name, pretrained=pretrained, checkpoint=checkpoint, device=device)


def labelled(data: EvalData, model: CLIPModel) -> LabelledDataset:
    classes = ClassInfo.load(data.classes)
    return LabelledDataset(data.manifest, classes=classes, image_size=model.image_size, image_col=data.image_col,
                           label_col=data.label_col, delimiter=data.delimiter, preload=True)


def _model_dir(name: str) -> str | None:
    return name if Path(name).is_dir() else None


def eval_zeroshot(*, model: str, data: EvalData, out_dir: str | Path, weights: dict | None = None,
                  batch_size: int = 256, device: str = "cpu",
                  clip: CLIPModel | None = None) -> dict[str, Any]:
    """Zero-shot top-1/top-5 with the template ensemble (or a saved linear head)."""
    clip = clip or load_model(model, device=device, **(weights or {}))
    ds = labelled(data, clip)
    clf = build_classifier(clip, ds.classes.classnames, ds.classes.templates, model_dir=_model_dir(model))
    metrics, rows = evaluate_zeroshot(clip, ds, clf, batch_size=batch_size, device=device)
    write_jsonl(Path(out_dir) / "samples_zeroshot.jsonl", rows)
    write_results(out_dir, kind="eval.zeroshot", metrics=metrics, config={"model": model, "data": asdict(data)},
                  extra={"skipped_images": ds.skips.summary()["skipped"]}, filename="results_zeroshot.json")
    return metrics


def eval_backdoor(*, model: str, data: EvalData, trigger: Any, target: str, out_dir: str | Path,
                  weights: dict | None = None, seed: int = 0,
                  batch_size: int = 256, device: str = "cpu", clip: CLIPModel | None = None) -> dict[str, Any]:
    """Clean accuracy and ASR of ``trigger`` towards class ``target`` (name from classes.json)."""
    from mmrobust.data.poison.triggers import trigger_spec

    clip = clip or load_model(model, device=device, **(weights or {}))
    ds = labelled(data, clip)
    if target not in ds.classes.classnames:
        raise ConfigError(f"target {target!r} is not a class in {data.classes}; choose one of "
                          f"{', '.join(ds.classes.classnames)}")
    clf = build_classifier(clip, ds.classes.classnames, ds.classes.templates, model_dir=_model_dir(model))
    metrics, rows = evaluate_backdoor(clip, ds, clf, trigger=trigger, target=ds.classes.classnames.index(target),
                                      seed=seed, batch_size=batch_size, device=device)
    metrics["target_name"] = target
    write_jsonl(Path(out_dir) / "samples_backdoor.jsonl", rows)
    write_results(out_dir, kind="eval.backdoor", metrics=metrics,
                  config={"model": model, "data": asdict(data), "trigger": trigger_spec(trigger), "target": target},
                  seeds={"trigger": seed}, extra={"skipped_images": ds.skips.summary()["skipped"]},
                  filename="results_backdoor.json")
    return metrics


def eval_retrieval(*, model: str, manifest: str, out_dir: str | Path, weights: dict | None = None,
                   image_col: str = "image",
                   caption_col: str = "caption", delimiter: str = ",", batch_size: int = 256, device: str = "cpu",
                   clip: CLIPModel | None = None) -> dict[str, Any]:
    """Image->text and text->image recall@1/5/10 over a manifest of pairs."""
    clip = clip or load_model(model, device=device, **(weights or {}))
    ds = ImageTextDataset(manifest, image_size=clip.image_size, image_col=image_col, caption_col=caption_col,
                          delimiter=delimiter, preload=True)
    metrics, rows = evaluate_retrieval(clip, ds, batch_size=batch_size, device=device)
    write_jsonl(Path(out_dir) / "samples_retrieval.jsonl", rows)
    write_results(out_dir, kind="eval.retrieval", metrics=metrics, config={"model": model, "manifest": manifest},
                  extra={"skipped_images": ds.skips.summary()["skipped"]}, filename="results_retrieval.json")
    return metrics


def eval_robust(*, model: str, data: EvalData, out_dir: str | Path, weights: dict | None = None,
                attack: str = "apgd-ce", eps: tuple[float, ...] = (4 / 255,), n_samples: int | None = 500,
                seed: int = 0, norm: str = "linf", attack_options: dict[str, Any] | None = None,
                reference: str | None = None, reference_weights: dict | None = None, save_adv: bool = False,
                batch_size: int = 250, device: str = "cpu", clip: CLIPModel | None = None) -> dict[str, Any]:
    """Clean + robust zero-shot accuracy per eps under ``attack``; with ``reference`` (the original model)
    also the embedding drift on clean and adversarial images."""
    from mmrobust.eval.robust import embedding_drift, eps_name, evaluate_robust, load_images, sample_ids

    clip = clip or load_model(model, device=device, **(weights or {}))
    ds = labelled(data, clip)
    clf = build_classifier(clip, ds.classes.classnames, ds.classes.templates, model_dir=_model_dir(model))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    metrics, rows = evaluate_robust(clip, ds, clf, attack=attack, eps=eps, n_samples=n_samples, seed=seed, norm=norm,
                                    attack_options=attack_options, save_adv=out if save_adv else None,
                                    batch_size=batch_size, device=device)
    if reference:
        ref = load_model(reference, device=device, **(reference_weights or {}))
        x, _, _ = load_images(ds, sample_ids(len(ds), min(n_samples or 256, 256), seed))
        metrics["embedding_drift"] = {eps_name(e): embedding_drift(clip, ref, x.to(device), eps=e, seed=seed)
                                      for e in eps}
    write_jsonl(out / "samples_robust.jsonl", rows)
    write_results(out, kind="eval.robust", metrics=metrics,
                  config={"model": model, "data": asdict(data), "attack": attack, "eps": list(eps), "norm": norm,
                          "n_samples": n_samples, "attack_options": attack_options or {}, "reference": reference},
                  seeds={"sample": seed, "attack": seed}, extra={"sample_ids": [r["index"] for r in rows]},
                  filename="results_robust.json")
    return metrics
