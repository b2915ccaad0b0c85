"""Shared fixtures of the LVLM attack tests: a tiny random LLaVA whose vocabulary holds the prompts."""
from __future__ import annotations

import pytest
import torch

from mmrobust.world.llava import build_tiny_llava

WORDS = "what colour is the object ? red blue green picture shows a dog cat"
PROMPTS = ["what colour is the object ?", "what is in the picture ?"]
REFS = [["red blue"], ["a dog", "a cat shows"]]
EPS = 4 / 255


@pytest.fixture(scope="module")
def llava(tmp_path_factory):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    path = build_tiny_llava(tmp_path_factory.mktemp("tiny-llava"), seed=0, image_size=32, extra_words=[WORDS])
    return AutoModelForImageTextToText.from_pretrained(path).eval(), AutoProcessor.from_pretrained(path)


@pytest.fixture()
def images():
    return torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
