"""Shared fixtures: tiny worlds and models built locally (no network)."""
from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory):
    """A small synthetic world (train.csv, test.csv, classes.json) at 32 px."""
    from mmrobust.data.synthetic import generate_world

    return generate_world(tmp_path_factory.mktemp("world"), n_train=400, n_test=120, seed=0)


@pytest.fixture(scope="session")
def micro_world(tmp_path_factory):
    """A very small 16 px world for the micro model."""
    from mmrobust.data.synthetic import generate_world

    return generate_world(tmp_path_factory.mktemp("micro_world"), n_train=256, n_test=64, image_size=16, seed=1)
