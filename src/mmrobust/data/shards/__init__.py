"""webdataset shards (plain tars as img2dataset writes them) read by random access.

Public API::

    parse_shard_spec("shards:/data/cc3m/{00000..00331}.tar") -> "/data/cc3m/{00000..00331}.tar" (None for a CSV)
    expand_pattern(pattern) -> shard paths;  build_index(paths) / shard_index(pattern) -> ShardIndex
    cached_shard_index(pattern, "run/data/shard_index.npz")   # rebuilt only when a shard changed
    ShardImageTextDataset(pattern, image_size=224, views=(), seed=0)   # map-style, like ImageTextDataset
"""
from mmrobust.data.shards.dataset import ShardImageTextDataset
from mmrobust.data.shards.index import (
    CAPTION_EXT,
    IMAGE_EXTS,
    PREFIX,
    ShardIndex,
    build_index,
    cached_shard_index,
    expand_pattern,
    load_index,
    parse_shard_spec,
    save_index,
    shard_index,
    split_name,
    tar_members,
)

__all__ = ["CAPTION_EXT", "IMAGE_EXTS", "PREFIX", "ShardImageTextDataset", "ShardIndex", "build_index",
           "cached_shard_index", "expand_pattern", "load_index", "parse_shard_spec", "save_index", "shard_index",
           "split_name", "tar_members"]
