"""Shared fixtures: tiny worlds and models built locally (no network)."""
from __future__ import annotations

import os

# One thread per process: CI has 2 cores and some tests run two training subprocesses at once;
# oversubscribed OpenMP threads make small ops 10-20x slower.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory):
    """A small synthetic world (train.csv, test.csv, classes.json) at 32 px."""
    from mmrobust.world.shapes import generate_world

    return generate_world(tmp_path_factory.mktemp("world"), n_train=400, n_test=120, seed=0)


@pytest.fixture(scope="session")
def micro_world(tmp_path_factory):
    """A very small 16 px world for the micro model."""
    from mmrobust.world.shapes import generate_world

    return generate_world(tmp_path_factory.mktemp("micro_world"), n_train=256, n_test=64, image_size=16, seed=1)
