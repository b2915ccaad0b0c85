"""The zero-shot classification suite of the FARE and CleanCLIP papers through the ``clip-benchmark``
package (LAION-AI/CLIP_benchmark; the optional extra ``mmrobust[benchmarks]``).

``clip_benchmark:cifar10`` asks clip-benchmark's own dataset builder for the dataset, with its class names
and prompt templates (its ``en_classnames.json`` / ``en_zeroshot_classification_templates.json``, the
templates' ``{c}`` written as our ``{}``), and serves it as a labelled evaluation split: items ``image``
(float [0,1], resized and centre-cropped like every other split), ``label``, ``index``. The datasets are
read from ``--data-root`` (clip-benchmark's ``--dataset_root``) and never downloaded: fetch them once with
clip-benchmark itself. Map-style datasets are read lazily; streamed ones (``wds/...``, its webdataset
exports) are decoded once into memory at the model's image size.

Example::

    split = BenchmarkSplit("cifar10", root="/data/clip_benchmark", image_size=224)
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch

from mmrobust.data import transforms as T
from mmrobust.data.datasets import ClassInfo, SkipLog
from mmrobust.errors import ConfigError, DataError

PREFIX = "clip_benchmark"
_FETCH = ("fetch it once with clip-benchmark (`clip_benchmark eval --dataset {name} --dataset_root {root} ...` "
          "downloads)")


def parse_benchmark_spec(text: str) -> str | None:
    """The dataset name of ``clip_benchmark:NAME``; None for anything else."""
    kind, sep, rest = str(text).partition(":")
    if not sep or kind != PREFIX:
        return None
    if not rest.strip():
        raise DataError(f"--data {text!r} names no dataset; write clip_benchmark:cifar10 (any clip-benchmark name)")
    return rest.strip()


def _build(name: str, root: Path, split: str) -> Any:
    """clip-benchmark's dataset object (download off), its failures as one-line errors."""
    try:
        from clip_benchmark.datasets.builder import build_dataset
    except ImportError:
        raise ConfigError("clip_benchmark:NAME needs the clip-benchmark package: pip install 'mmrobust[benchmarks]'") \
            from None
    fetch = _FETCH.format(name=name, root=root)
    try:
        with warnings.catch_warnings():  # its webdataset reader warns about an unset shardshuffle
            warnings.filterwarnings("ignore", message=".*shardshuffle", category=UserWarning)
            return build_dataset(name, root=str(root), transform=None, split=split, download=False,
                                 task="zeroshot_classification")
    except ValueError as e:
        raise DataError(f"clip-benchmark has no dataset {name!r} ({str(e)[:120]}); see its README's list, e.g. "
                        "cifar10, imagenet1k, wds/vtab/cifar10") from None
    except (RuntimeError, FileNotFoundError, OSError) as e:
        raise DataError(f"clip-benchmark dataset {name!r} (split {split!r}) is not under {root} "
                        f"({type(e).__name__}: {str(e)[:120]}); {fetch}") from None
    except AssertionError as e:
        raise DataError(f"clip-benchmark dataset {name!r} has no class names or templates ({e}); only zero-shot "
                        "classification datasets are evaluated this way") from None


def benchmark_classes(ds: Any, name: str) -> ClassInfo:
    """Class names and templates the builder attached, ``{c}`` rewritten as ``{}``."""
    names, templates = getattr(ds, "classes", None), getattr(ds, "templates", None)
    if not names or not templates:
        raise DataError(f"clip-benchmark dataset {name!r} has no class names or templates; only zero-shot "
                        "classification datasets are evaluated this way")
    if isinstance(templates, dict):
        raise DataError(f"clip-benchmark dataset {name!r} has per-class prompts (a dict); mmrobust uses one "
                        "template list shared by all classes: pass a custom template file to clip-benchmark")
    shared = tuple(str(t).replace("{c}", "{}") for t in templates)
    bad = [t for t in shared if "{}" not in t]
    if bad:
        raise DataError(f"clip-benchmark dataset {name!r}: template {bad[0]!r} has no {{c}} for the class name")
    return ClassInfo(tuple(str(n) for n in names), shared)


def _label(value: Any, n_classes: int, name: str, i: int) -> int:
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, (bytes, str)):
        value = value.decode() if isinstance(value, bytes) else value
        value = int(value.strip()) if value.strip().lstrip("-").isdigit() else value
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < n_classes:
        raise DataError(f"clip-benchmark dataset {name!r} sample {i}: label {str(value)[:40]!r} is not a class index "
                        f"below {n_classes} (a multi-label or retrieval dataset?); use a zero-shot classification one")
    return value


def _to_u8(image: Any, size: int) -> torch.Tensor:
    """A PIL image or a float (C, H, W) tensor in [0,1] as uint8 (3, size, size)."""
    if isinstance(image, torch.Tensor):
        from torchvision.transforms.functional import to_pil_image

        image = to_pil_image(image.clamp(0, 1))
    return T.to_uint8_tensor(image, size)


class BenchmarkSplit(torch.utils.data.Dataset):
    """A clip-benchmark dataset as a labelled split (``classes``, ``skips``, items like LabelledDataset's)."""

    def __init__(self, name: str, *, root: str | Path, image_size: int, split: str = "test") -> None:
        root = Path(root).expanduser()
        if not root.is_dir():
            raise DataError(f"clip-benchmark root {root} does not exist; give --data-root, the folder clip-benchmark "
                            f"keeps its datasets in ({_FETCH.format(name=name, root=root)})")
        self.name, self.image_size, self.skips = name, image_size, SkipLog()
        self.ds = _build(name, root, split)
        self.classes = benchmark_classes(self.ds, name)
        self._items: list[tuple[torch.Tensor, int]] | None = None
        if isinstance(self.ds, torch.utils.data.IterableDataset) or not hasattr(self.ds, "__len__"):
            self._items = [self._convert(s, i) for i, s in enumerate(self.ds)]  # streamed: decode once
            if not self._items:
                raise DataError(f"clip-benchmark dataset {name!r} (split {split!r}) under {root} has no samples")

    def _convert(self, sample: Any, i: int) -> tuple[torch.Tensor, int]:
        if not isinstance(sample, (tuple, list)) or len(sample) < 2:
            raise DataError(f"clip-benchmark dataset {self.name!r} sample {i} is not an (image, label) pair")
        return _to_u8(sample[0], self.image_size), _label(sample[1], len(self.classes.classnames), self.name, i)

    def __len__(self) -> int:
        return len(self._items) if self._items is not None else len(self.ds)

    def __getitem__(self, key: Any) -> dict[str, Any]:
        i = int(key[1]) if isinstance(key, tuple) else int(key)
        image, label = self._items[i] if self._items is not None else self._convert(self.ds[i], i)
        return {"image": T.to_float(image), "label": label, "index": i}
