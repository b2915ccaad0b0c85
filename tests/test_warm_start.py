"""Warm start of APGD (Tramer et al. 2020): the start is projected onto the eps-ball of the clean image and [0, 1],
a start that already fools the model is kept (so the warm-started attack is never weaker than the attack whose
images it starts from), and the defended evaluation's --warm-start reaches its record."""
from __future__ import annotations

import pytest
import torch

from _attacks_models import synthetic_data, tiny_convnet
from mmrobust.attacks.apgd import apgd_logits
from mmrobust.data.datasets import ClassInfo, LabelledDataset
from mmrobust.errors import ConfigError
from mmrobust.eval.attack_chunks import WarmStart, attack_all
from mmrobust.eval.contract import run_evaluation
from mmrobust.eval.defended import DefendedSettings
from mmrobust.eval.robust import RobustSettings, load_images, sample_ids
from mmrobust.eval.zeroshot import model_classifier
from mmrobust.models import create_clip
from mmrobust.registry import ATTACKS

EPS = 4 / 255


def _in_threat(x_adv: torch.Tensor, x: torch.Tensor, eps: float) -> bool:
    return bool((x_adv - x).abs().max() <= eps + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1)


def test_a_start_outside_the_ball_is_projected_onto_it_and_into_the_box():
    net = tiny_convnet(seed=0)
    x, y = synthetic_data(net, n=16, seed=0)
    far = torch.rand(x.shape, generator=torch.Generator().manual_seed(1))  # far outside the eps-ball
    out = apgd_logits(net, x, y, eps=EPS, steps=3, x_init=far)
    assert _in_threat(out, x, EPS)
    res = ATTACKS.get("apgd-ce")(net, x, y, eps=EPS, steps=3, x_init=far)
    assert _in_threat(res.x_adv, x, EPS) and res.config["warm_start"] is True
    with pytest.raises(ConfigError, match="x_init"):
        ATTACKS.get("apgd-ce")(net, x, y, eps=EPS, steps=3, x_init=far[:3])


def test_warm_started_apgd_keeps_every_image_the_transfer_attack_broke():
    net = tiny_convnet(seed=0)
    x, y = synthetic_data(net, n=32, seed=0)
    eps = 0.5 / 255  # breaks some images of the tiny net, not all
    transfer = ATTACKS.get("pgd")(net, x, y, eps=eps, steps=3, seed=0)
    assert 0 < int(transfer.robust.sum()) < int(transfer.clean_correct.sum())  # a real transfer attack
    for steps in (1, 3):  # even a one-step attack keeps what its start broke
        warm = ATTACKS.get("apgd-ce")(net, x, y, eps=eps, steps=steps, seed=5, x_init=transfer.x_adv)
        assert bool((warm.robust <= transfer.robust).all())  # per image: never robust where the start broke it
        assert _in_threat(warm.x_adv, x, eps)


@pytest.fixture(scope="module")
def micro(micro_world):
    model = create_clip("mmrobust-micro", seed=0)
    classes = ClassInfo.load(micro_world.classes)
    return model, LabelledDataset(micro_world.test_manifest, classes=classes, image_size=16, preload=True)


def test_attack_all_warm_started_from_another_attacks_images_is_never_weaker_per_image(micro):
    model, ds = micro
    s = RobustSettings(n_samples=12, batch_size=6, eps=(EPS,), attack="apgd-ce", attack_options={"steps": 2})
    x, y, ids = load_images(ds, sample_ids(len(ds), s.n_samples, s.seed))
    clf = model_classifier(model, ds)
    pgd = attack_all(model, clf, x, y, ids, s, "pgd", {"steps": 10, "step_size": 1 / 255}, partial=None, tag="p")
    warm = WarmStart({EPS: pgd[EPS].x_adv}, {"from": "paper"})
    out = attack_all(model, clf, x, y, ids, s, "apgd-ce", {"steps": 1}, partial=None, tag="t", warm=warm)[EPS]
    assert bool((out.robust <= pgd[EPS].robust).all()) and out.config["warm_start"] is True
    assert _in_threat(out.x_adv, x, EPS)


def test_defended_settings_refuse_a_warm_start_the_attack_cannot_take():
    with pytest.raises(ConfigError, match="warm start"):
        DefendedSettings(attack="pgd")
    with pytest.raises(ConfigError, match="--warm-start"):
        DefendedSettings(warm_start="transfer")
    assert DefendedSettings(attack="pgd", warm_start="none").warm_start == "none"


def test_the_warm_start_reaches_the_defended_record(micro):
    model, ds = micro
    rec = run_evaluation("robust-defended", model=model, data=ds,
                         settings={"n_samples": 6, "batch_size": 6, "attack_options": {"steps": 1}, "eps": (EPS,),
                                   "defense": "ttc", "defense_options": {"steps": "1"}, "eot_samples": 2,
                                   "draws": 2, "warm_start": "undefended"})
    assert rec.protocol["warm_start"] == "undefended" and rec.metrics["warm_start"] == "undefended"
    assert "from its undefended-model images" in rec.tables[0].columns[3].heading
    r = rec.metrics["eps"]["4/255"]
    assert r["configs"]["through"]["warm_start"] is True and r["configs"]["transfer"]["warm_start"] is False


def test_the_start_is_kept_per_image_where_it_fools_more_passes_than_the_attacks_image():
    from mmrobust.attacks.apgd import _no_weaker_than_start

    def logits(z):  # class 1 where the image's mean is above 0.5, else class 0
        m = z.reshape(len(z), -1).mean(1)
        return torch.stack([0.5 - m, m - 0.5], dim=1)

    y = torch.tensor([0, 0, 0])
    start = torch.full((3, 1, 2, 2), 0.6)  # fools the model (class 1)
    attacked = torch.stack([torch.full((1, 2, 2), v) for v in (0.4, 0.7, 0.4)])  # right, fools, right
    start[2] = 0.3  # a start that is right: the attack's image stays
    out = _no_weaker_than_start(logits, attacked, start, y, eot_samples=3)
    assert torch.equal(out[0], start[0]) and torch.equal(out[1], attacked[1]) and torch.equal(out[2], attacked[2])
