"""Image-caption pairs read from webdataset shards by random access (see :mod:`.index`).

A map-style dataset over the complete samples (an image and a ``.txt`` caption) in shard order, with the
same items, transforms and (seed, epoch, index)-seeded views as the CSV :class:`ImageTextDataset`, so the
training loop's batches, their split across ranks and DataLoader workers, and mid-epoch resume work
unchanged. An unreadable image or caption is skipped and listed, never fatal.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
from PIL import Image

from mmrobust.data import transforms as T
from mmrobust.data.datasets import PairItems, SkipLog
from mmrobust.data.image_folder import CAPTION
from mmrobust.data.shards.index import ShardIndex, shard_index
from mmrobust.errors import DataError

MAX_CAPTION_BYTES = 1 << 20
SKIPPED = (OSError, ValueError, SyntaxError, Image.DecompressionBombError, DataError)


class ShardImageTextDataset(PairItems, torch.utils.data.Dataset):
    """Pairs from ``shards:PATTERN``-style shards. Items: ``image`` float (3,H,W) in [0,1], ``caption``,
    ``index`` (position among the complete samples), ``label`` with ``labels=True``, and the ``views`` asked for.

    ``labels``: read each sample's ``.cls`` (the class index, webdataset's ImageNet convention); ``classnames``
    checks the index and, for a sample without a ``.txt``, gives the caption "a photo of a {class}." (as class
    folders do), so label-only shards train FARE and TeCoA. ``dataset.key(i)`` is the webdataset key of item
    ``i``; ``dataset.incomplete`` lists samples that lack a needed member (not indexed), ``dataset.skips`` the
    ones that failed to decode or hold a bad label."""

    def __init__(self, pattern: str | None = None, *, image_size: int, views: Sequence[str] = (), seed: int = 0,
                 index: ShardIndex | None = None, labels: bool = False,
                 classnames: Sequence[str] | None = None) -> None:
        if (pattern is None) == (index is None):
            raise ValueError("give a shard pattern or an index")
        self.index = index if index is not None else shard_index(str(pattern))
        self.classnames = tuple(classnames) if classnames else None
        need = ("image",) + (("label",) if labels else ()) + (() if self.classnames and labels else ("caption",))
        self.rows = self.index.complete(need)
        if not len(self.rows):
            raise DataError(f"no sample of {pattern or self.index.shards[0]} has an image "
                            f"({', '.join('.' + e for e in ('jpg', 'png', 'webp'))}, ...)"
                            + (" and a .cls label" if labels else "") + ("" if "caption" not in need else
                                                                         " and a .txt caption"))
        self.incomplete = self.index.incomplete(need)
        self.label_col = "cls" if labels else None
        self.image_size, self.views, self.seed = image_size, tuple(views), seed
        self.skips = SkipLog()

    def __len__(self) -> int:
        return len(self.rows)

    def key(self, i: int) -> str:
        return self.index.key(int(self.rows[i]))

    def image_u8(self, i: int) -> torch.Tensor | None:
        if i in self.skips.skipped:
            return None
        s = int(self.rows[i])
        try:
            data = self.index.read_member(s, int(self.index.image[s]))
            return T.decode_image(data, f"{self.index.shard(s)}: {self.index.key(s)}", self.image_size)
        except SKIPPED as e:
            self.skips.add(i, f"{self.index.key(s)}: {type(e).__name__}: {str(e)[:500]}")
            return None

    def label(self, i: int) -> int:
        """The class index in sample ``i``'s ``.cls`` (read when the item is; -1 if unreadable, then skipped)."""
        s = int(self.rows[i])
        try:
            text = self.index.read_member(s, int(self.index.label[s]), limit=64).decode("ascii").strip()
            y = int(text)
        except (UnicodeDecodeError, ValueError, DataError, OSError) as e:
            self.skips.add(i, f"{self.index.key(s)}: label: {type(e).__name__}: {str(e)[:200]}")
            return -1
        if y < 0 or (self.classnames is not None and y >= len(self.classnames)):
            self.skips.add(i, f"{self.index.key(s)}: label {y} is outside the {len(self.classnames or ())} classes")
            return -1
        return y

    def caption(self, i: int) -> str | None:
        s = int(self.rows[i])
        if self.index.caption[s] < 0:  # a label-only sample (kept only with classnames)
            y = self.label(i)
            return None if y < 0 or self.classnames is None else CAPTION.format(self.classnames[y])
        try:
            text = self.index.read_member(s, int(self.index.caption[s]), limit=MAX_CAPTION_BYTES).decode("utf-8")
        except (UnicodeDecodeError, DataError, OSError) as e:
            self.skips.add(i, f"{self.index.key(s)}: caption: {type(e).__name__}: {str(e)[:200]}")
            return None
        return text.strip()

    def summary(self) -> dict[str, Any]:
        """Counts for results.json: samples indexed, incomplete (with examples), failed to decode."""
        return {"n_samples": len(self.rows), "n_incomplete": len(self.incomplete), "incomplete": self.incomplete[:100],
                **self.skips.summary()}
