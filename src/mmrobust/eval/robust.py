"""Robust zero-shot evaluation (as in Schlarmann et al. 2024 / Croce & Hein 2020): clean and robust
accuracy per eps under a registered attack, on a seeded sample of the test set, with the sample ids,
seeds and attack config recorded; and the embedding drift of an encoder against the original."""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
from safetensors.torch import save_file

from mmrobust.attacks.checks import run_checks
from mmrobust.attacks.pgd import pgd
from mmrobust.data.datasets import collate
from mmrobust.errors import ConfigError
from mmrobust.eval.contract import evaluation
from mmrobust.eval.zeroshot import Classifier, model_classifier
from mmrobust.losses.embedding import squared_l2
from mmrobust.models.clip import CLIPModel
from mmrobust.registry import ATTACKS
from mmrobust.reports.contract import Record, Table


def sample_ids(n_total: int, n_samples: int | None, seed: int) -> list[int]:
    """The first ``n_samples`` of a permutation seeded by ``seed`` (all rows, in order, if None)."""
    if n_samples is None or n_samples >= n_total:
        return list(range(n_total))
    perm = torch.randperm(n_total, generator=torch.Generator().manual_seed(seed))
    return sorted(int(i) for i in perm[:n_samples])


def load_images(dataset: Any, ids: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    batch = collate([dataset[i] for i in ids])
    return batch["image"], batch["label"], [int(i) for i in batch["index"]]


def eps_name(eps: float) -> str:
    """4/255-style name when eps is a multiple of 1/255, else the number."""
    k = eps * 255
    return f"{round(k)}/255" if abs(k - round(k)) < 1e-6 else f"{eps:.6g}"


def evaluate_robust(model: CLIPModel, dataset: Any, classifier: Classifier, *, attack: str, eps: Sequence[float],
                    n_samples: int | None = 500, seed: int = 0, norm: str = "linf", batch_size: int = 250,
                    attack_options: dict[str, Any] | None = None, save_adv: Path | None = None,
                    device: str = "cpu", check: bool = True) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Clean and robust accuracy per eps. Returns (metrics, per-sample rows)."""
    fn = ATTACKS.get(attack)
    allowed = set(inspect.signature(fn).parameters) - {"logits_fn", "x", "y", "eps", "norm", "seed"}
    unknown = sorted(set(attack_options or {}) - allowed)
    if unknown:
        raise ConfigError(f"attack {attack!r} has no option(s) {unknown}; it accepts {sorted(allowed)}")
    ids = sample_ids(len(dataset), n_samples, seed)
    x_all, y_all, ids = load_images(dataset, ids)
    logits_fn = lambda x: classifier.logits(model, x)  # noqa: E731
    model.eval()
    if check:
        run_checks(logits_fn, x_all[:16].to(device), y_all[:16].to(device))
    metrics: dict[str, Any] = {"attack": attack, "norm": norm, "n": len(ids), "seed": seed, "eps": {}}
    rows = [{"index": i, "label": int(y)} for i, y in zip(ids, y_all)]
    for e in eps:
        robust, clean, advs = [], [], []
        for start in range(0, len(ids), batch_size):
            x, y = x_all[start:start + batch_size].to(device), y_all[start:start + batch_size].to(device)
            res = fn(logits_fn, x, y, eps=e, norm=norm, seed=seed, **(attack_options or {}))
            robust.append(res.robust.cpu())
            clean.append(res.clean_correct.cpu())
            advs.append(res.x_adv.cpu())
        rob, cln = torch.cat(robust), torch.cat(clean)
        metrics["eps"][eps_name(e)] = {"eps": e, "robust_top1": float(rob.float().mean()), "config": res.config}
        metrics["clean_top1"] = float(cln.float().mean())
        for row, ok in zip(rows, rob):
            row[f"robust@{eps_name(e)}"] = bool(ok)
        if save_adv is not None:
            save_file({"x_adv": torch.cat(advs).contiguous(), "index": torch.tensor(ids)},
                      str(Path(save_adv) / f"adv_{eps_name(e).replace('/', '_')}.safetensors"))
    for row, ok in zip(rows, cln):
        row["clean_correct"] = bool(ok)
    return metrics, rows


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

    attack: str = "apgd-ce"
    eps: tuple[float, ...] = (4 / 255,)
    n_samples: int | None = 500
    seed: int = 0
    norm: str = "linf"
    attack_options: dict[str, Any] = field(default_factory=dict)
    batch_size: int = 250
    device: str = "cpu"
    check: bool = True


@evaluation("robust", settings=RobustSettings)
def robust_record(model: CLIPModel, data: Any, settings: RobustSettings, *, save_adv: Path | None = None) -> Record:
    """Clean and robust zero-shot accuracy per eps under an attack (Croce & Hein 2020; Schlarmann et al. 2024)."""
    s = settings
    metrics, rows = evaluate_robust(model, data, model_classifier(model, data), attack=s.attack, eps=s.eps,
                                    n_samples=s.n_samples, seed=s.seed, norm=s.norm, attack_options=s.attack_options,
                                    save_adv=save_adv, batch_size=s.batch_size, device=s.device, check=s.check)
    table_rows = [{"eps": "0 (clean)", "accuracy": metrics["clean_top1"]}]
    table_rows += [{"eps": name, "accuracy": r["robust_top1"]} for name, r in metrics["eps"].items()]
    table = Table.of(f"Robust accuracy under {s.attack} ({s.norm})", [("eps", "eps"), ("accuracy", "accuracy", "%")],
                     table_rows, f"Zero-shot accuracy of {metrics['n']} seeded test images (seed {s.seed}) on clean "
                                 f"images and under the {s.attack} attack with {s.norm} radius eps (images in [0,1]).")
    return Record(kind="robust", metrics=metrics, samples=rows, tables=[table],
                  seeds={"sample": s.seed, "attack": s.seed}, extra={"sample_ids": [r["index"] for r in rows]})
