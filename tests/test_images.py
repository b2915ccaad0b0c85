"""The one image loader: 16-bit images scaled to 8 bits, pipes and devices refused without blocking,
decompression bombs and extreme aspect ratios refused before decoding, datasets skipping such rows."""
from __future__ import annotations

import csv
import os
import struct
import threading
import time
import zlib

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile

from mmrobust.data import transforms as T
from mmrobust.data.manifest import PathPolicy
from mmrobust.data.datasets import ClassInfo, LabelledDataset
from mmrobust.errors import DataError


def _png_header_only(path, width, height):
    """A PNG whose header claims width x height (8-bit gray) with a tiny, short IDAT: cheap to write."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 16))
                     + chunk(b"IEND", b""))
    return path


def test_16bit_png_gradient_round_trips_to_value_over_257(tmp_path):
    values = (np.arange(64 * 64, dtype=np.uint32).reshape(64, 64) * 16).astype(np.uint16)  # 0 .. 65520
    Image.fromarray(values).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode.startswith("I;16")
    img = T.load_image(tmp_path / "g16.png")
    assert img.dtype == torch.uint8 and img.shape == (3, 64, 64)
    expected = torch.from_numpy(values.astype(np.float64) / 257)
    assert (img[0].double() - expected).abs().max() <= 0.5 + 1e-9
    assert torch.equal(img[0], img[1]) and torch.equal(img[1], img[2])
    assert float((img == 255).double().mean()) < 0.01  # PIL's own conversion saturates ~100% of pixels
    resized = T.load_image(tmp_path / "g16.png", 32)
    assert abs(float(resized.double().mean()) - float(expected.mean())) < 2.0


def test_32bit_integer_image_is_scaled_and_8bit_range_kept(tmp_path):
    values = (np.arange(32 * 32).reshape(32, 32) * 60).astype(np.int32)  # 0 .. 61380
    Image.fromarray(values, mode="I").save(tmp_path / "i32.tif")
    img = T.load_image(tmp_path / "i32.tif")
    assert (img[0].double() - torch.from_numpy(values / 257)).abs().max() <= 0.5 + 1e-9
    small = (np.arange(32 * 32).reshape(32, 32) % 200).astype(np.int32)  # an 8-bit range stored as I
    Image.fromarray(small, mode="I").save(tmp_path / "i8.tif")
    assert torch.equal(T.load_image(tmp_path / "i8.tif")[0], torch.from_numpy(small.astype(np.uint8)))


def test_named_pipe_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "image.png"
    os.mkfifo(fifo)
    result: dict = {}

    def load():
        try:
            T.load_image(fifo, 32)
        except DataError as e:
            result["error"] = e

    t0 = time.monotonic()
    worker = threading.Thread(target=load, daemon=True)
    worker.start()
    worker.join(timeout=5)
    if worker.is_alive():  # unblock the reader so the test process can exit
        with open(fifo, "wb"):
            pass
        pytest.fail("load_image blocked on a named pipe")
    assert time.monotonic() - t0 < 1.0
    assert "not a regular file" in str(result["error"])


def test_missing_image_is_a_data_error_that_is_also_a_value_error(tmp_path):
    with pytest.raises(DataError, match="not found") as info:
        T.load_image(tmp_path / "gone.png", 32)
    assert isinstance(info.value, ValueError)  # loops that skip on ValueError (poisoning) keep skipping


@pytest.mark.parametrize("size", [(1, 200_000), (200_000, 1), (3000, 40)])
def test_extreme_aspect_ratio_is_refused_before_decoding(tmp_path, monkeypatch, size):
    path = _png_header_only(tmp_path / "strip.png", *size)
    decoded = []
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: decoded.append(1))
    with pytest.raises(DataError, match="aspect ratio"):
        T.load_image(path, 224)
    assert not decoded


def test_decompression_bomb_is_refused_before_decoding(tmp_path, monkeypatch):
    path = _png_header_only(tmp_path / "bomb.png", 9000, 9000)  # 81 MP: under PIL's own limit, over ours
    decoded = []
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: decoded.append(1))
    with pytest.raises(DataError, match="pixels"):
        T.load_image(path, 224)
    assert not decoded
    T.check_image_size((50, 2500), path)  # 50:1 is still fine


def test_dataset_skips_and_counts_pipes_bombs_and_strips(tmp_path, micro_world):
    os.mkfifo(tmp_path / "pipe.png")
    _png_header_only(tmp_path / "strip.png", 1, 200_000)
    _png_header_only(tmp_path / "bomb.png", 9000, 9000)
    Image.fromarray((np.arange(16 * 16).reshape(16, 16) * 256).astype(np.uint16)).save(tmp_path / "deep.png")
    rows = list(csv.DictReader(open(micro_world.test_manifest)))[:6]
    manifest = tmp_path / "m.csv"
    with manifest.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "label"])
        for r in rows:
            w.writerow([str(micro_world.root / r["image"]), r["label"]])
        for name in ("pipe.png", "strip.png", "bomb.png", "deep.png"):
            w.writerow([str(tmp_path / name), rows[0]["label"]])
    classes = ClassInfo.load(micro_world.classes)
    t0 = time.monotonic()
    for preload in (True, False):
        ds = LabelledDataset(manifest, classes=classes, image_size=16, preload=preload,
                             paths=PathPolicy.of(manifest, data_root=tmp_path.parent))
        items = [ds[i] for i in range(len(ds))]
        assert sorted(ds.skips.skipped) == [6, 7, 8]
        assert [it is None for it in items] == [False] * 6 + [True] * 3 + [False]
        assert ds.skips.summary()["n_skipped"] == 3
    assert time.monotonic() - t0 < 10
