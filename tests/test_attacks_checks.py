"""Sanity checks fire on the models AutoAttack warns about, and pass on a plain logits model."""
from __future__ import annotations

import pytest
import torch

from _attacks_models import synthetic_data, tiny_convnet
from mmrobust.attacks import AttackCheckWarning, check_gradients, run_checks
from mmrobust.errors import ConfigError


@pytest.fixture(scope="module")
def setup():
    model = tiny_convnet(0)
    x, y = synthetic_data(model, 16)
    return model, x, y


def test_plain_logits_model_passes(setup):
    model, x, y = setup
    assert run_checks(model, x, y, attacks=("apgd-ce", "apgd-t")) == 10


def test_softmax_model_is_flagged(setup):
    model, x, y = setup
    probs = lambda xa: model(xa).softmax(dim=1)
    with pytest.raises(ConfigError, match="probabilities.*logits"):
        run_checks(probs, x, y)
    with pytest.warns(AttackCheckWarning, match="probabilities"):
        run_checks(probs, x, y, on_fail="warn")


def test_dropout_model_is_flagged_until_eval(setup):
    _, x, _ = setup
    model = tiny_convnet(0, dropout=0.5).train()
    with torch.no_grad():
        y = model.eval()(x).argmax(1)
    model.train()
    with pytest.raises(ConfigError, match="Dropout layers in training mode"):
        run_checks(model, x, y)
    with pytest.raises(ConfigError, match="not deterministic.*model.eval"):
        run_checks(lambda xa: model(xa), x, y)  # a plain function hides the module's mode
    run_checks(model.eval(), x, y)


def test_zero_gradients_are_flagged(setup):
    model, x, y = setup
    quantized = lambda xa: model(torch.round(xa * 255) / 255)  # gradient of round is zero
    with pytest.raises(ConfigError, match="zero input gradient"):
        check_gradients(quantized, x, y)
    detached = lambda xa: model(xa.detach())
    with pytest.raises(ConfigError, match="no gradient"):
        check_gradients(detached, x, y)


def test_class_count_checks(setup):
    model, x, y = setup
    with pytest.warns(AttackCheckWarning, match="only 9 exist"):
        run_checks(model, x, y, attacks=("apgd-t",), n_target_classes=12)
    small = tiny_convnet(0, n_classes=3)
    xs, ys = synthetic_data(small, 8)
    with pytest.raises(ConfigError, match="4 classes"):
        run_checks(small, xs, ys, attacks=("apgd-ce", "apgd-t"))
