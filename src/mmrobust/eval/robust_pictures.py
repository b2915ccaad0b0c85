"""The pictures of a robust evaluation: robust accuracy against eps, and a few attacked test images with the
model's predictions (class names) on the clean and the attacked image and the perturbation magnified.

The attacked images exist only while the evaluation runs, so an :class:`ExampleKeeper` is offered every attacked
chunk and keeps a handful at one eps (4/255 when evaluated, else the largest): a seeded choice that prefers
examples whose prediction the attack flips, the same whatever the batch size. Nothing is attacked again.
"""
from __future__ import annotations

import hashlib
from functools import partial
from typing import Any, Callable, Sequence

import torch

from mmrobust.reports.contract import Picture
from mmrobust.reports.gallery import Shown, example_grid
from mmrobust.reports.plots import eps_curve
from mmrobust.reports.protocol import eps_label

N_EXAMPLES = 6


def picture_eps(eps: Sequence[float]) -> float | None:
    """The eps whose attacked images are shown: 4/255 when evaluated, else the largest; None with only eps 0."""
    if any(abs(e - 4 / 255) < 1e-9 for e in eps):
        return next(e for e in eps if abs(e - 4 / 255) < 1e-9)
    top = max(eps, default=0.0)
    return top if top > 0 else None


def _priority(seed: int, index: int) -> int:
    """A seeded order of sample indices, independent of batches and of torch's RNG."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{index}".encode()).digest()[:8], "big")


class ExampleKeeper:
    """Keeps up to ``n`` attacked examples at ``eps``: first those the attack flips (clean right, attacked
    wrong), then others, each group in a seeded order; with the model's predicted class on both images."""

    def __init__(self, eps: float | None, *, n: int = N_EXAMPLES, seed: int = 0) -> None:
        self.eps, self.n, self.seed = eps, n, seed
        self.pools: dict[bool, list[dict[str, Any]]] = {True: [], False: []}  # flipped -> kept examples
        self.error = ""  # why keeping stopped: a picture must never fail the evaluation

    def offer(self, eps: float, chunk: dict[str, Any], x: torch.Tensor, y: torch.Tensor, x_adv: torch.Tensor | None,
              logits_fn: Callable[[torch.Tensor], torch.Tensor], device: Any) -> None:
        """Look at one finished chunk (its ids and clean / robust flags, clean images ``x``, labels ``y``, attacked
        images ``x_adv`` on the CPU); keep the examples that rank among the first ``n`` of their group."""
        if self.eps is None or x_adv is None or abs(eps - self.eps) > 1e-12 or self.error:
            return
        try:
            self._keep(chunk, x, y, x_adv, logits_fn, device)
        except Exception as e:  # noqa: BLE001 - reported as the picture's failure (files.pictures_failed)
            self.error = f"{type(e).__name__}: {e}"

    def _keep(self, chunk: dict[str, Any], x: torch.Tensor, y: torch.Tensor, x_adv: torch.Tensor,
              logits_fn: Callable[[torch.Tensor], torch.Tensor], device: Any) -> None:
        seen = sorted((_priority(self.seed, int(i)), bool(ok and not rob), j, int(i))
                      for j, (i, ok, rob) in enumerate(zip(chunk["ids"], chunk["clean"], chunk["robust"])))
        new = []
        for flipped in (True, False):  # this chunk's first n of each group that beat the kept ones
            pool = self.pools[flipped]
            bar = max((p["priority"] for p in pool), default=None) if len(pool) >= self.n else None
            new += [(j, flipped, prio, i) for prio, f, j, i in seen if f == flipped and (bar is None or prio < bar)
                    ][:self.n]
        if not new:
            return
        rows = [j for j, *_ in new]
        with torch.no_grad():
            pred = logits_fn(torch.cat([x[rows], x_adv[rows]]).to(device)).argmax(1).cpu()
        for k, (j, flipped, prio, i) in enumerate(new):
            pool = self.pools[flipped]
            pool.append({"priority": prio, "index": i, "label": int(y[j]), "x": x[j].detach().cpu().clone(),
                         "x_adv": x_adv[j].detach().cpu().clone(), "pred": int(pred[k]),
                         "pred_adv": int(pred[len(rows) + k])})
            pool.sort(key=lambda p: p["priority"])
            del pool[self.n:]

    def examples(self) -> list[dict[str, Any]]:
        """The kept examples: flipped ones first, then others, up to ``n``."""
        return (self.pools[True] + self.pools[False])[:self.n]


def _shown(e: dict[str, Any], names: Sequence[str]) -> Shown:
    return Shown(clean=e["x"], altered=e["x_adv"], header=f"#{e['index']} true: {names[e['label']]}",
                 clean_text=f"pred: {names[e['pred']]}", altered_text=f"pred: {names[e['pred_adv']]}",
                 clean_bad=e["pred"] != e["label"], altered_bad=e["pred_adv"] != e["label"])


def _fail(error: str, path: Any) -> None:
    raise RuntimeError(f"the examples could not be kept during the evaluation ({error})")


def robust_pictures(metrics: dict[str, Any], keeper: ExampleKeeper, names: Sequence[str], *, attack: str,
                    norm: str) -> list[Picture]:
    """The robust record's pictures: ``robust_curve.png`` (accuracy against eps, clean at 0) when some eps is
    above 0, and ``robust_examples.png`` (the keeper's examples) when it kept any."""
    points = [(0.0, metrics["clean_top1"])] + [(r["eps"], r["robust_top1"]) for r in metrics["eps"].values()]
    pics = []
    if any(e > 0 for e, _ in points):
        pics.append(Picture("robust_curve.png", partial(
            eps_curve, series={f"{attack} ({norm})": points},
            title=f"Zero-shot accuracy under {attack} ({norm}), {metrics['n']} test images")))
    kept = keeper.examples()
    if keeper.error:
        pics.append(Picture("robust_examples.png", partial(_fail, keeper.error)))
    elif kept and keeper.eps is not None:
        shown = [_shown(e, names) for e in kept]
        n_flip = sum(e["pred"] == e["label"] and e["pred_adv"] != e["label"] for e in kept)
        title = (f"{attack} ({norm}) at eps {eps_label(keeper.eps)}: {len(kept)} test images, a seeded choice "
                 f"showing flipped predictions first ({n_flip} of {len(kept)} flipped; wrong predictions in red)")
        pics.append(Picture("robust_examples.png", partial(example_grid, examples=shown, title=title,
                                                            altered_name=f"attacked\neps {eps_label(keeper.eps)}")))
    return pics
