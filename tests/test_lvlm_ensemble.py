"""RobustVLM's ensemble attack (Schlarmann et al. 2024) on a tiny random LLaVA: invariants, keep rule, stopping."""
from __future__ import annotations

import math

import pytest
import torch

from mmrobust.errors import ConfigError
from mmrobust.lvlm.attack import attack_lvlm_ensemble, build_lvlm_inputs, lm_loss_fn

from _lvlm import EPS, PROMPTS, REFS, images, llava  # noqa: F401  (fixtures)


def _in_threat(x_adv, x):
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert (x_adv - x).abs().max() <= EPS + 1e-6


def _loss_of(model, proc, x, i, ref):
    """Oracle: full-precision loss of one reference at image x[i], through the plain closure."""
    batch = build_lvlm_inputs(proc, [PROMPTS[i]], [[ref]], image_size=32)
    with torch.no_grad():
        return float(lm_loss_fn(model, proc, batch, like=x)(x[i:i + 1])[0])


@pytest.mark.parametrize("low", [torch.bfloat16, torch.float16])
def test_ensemble_invariants_and_keep_rule(llava, images, low):
    model, proc = llava
    state = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()  # the attack runs in eval mode and restores the caller's mode and flags
    rng = torch.random.get_rng_state()
    x_adv, rec = attack_lvlm_ensemble(model, proc, images, PROMPTS, REFS, eps=EPS, steps=4, seed=0, low_precision=low)
    assert torch.equal(rng, torch.random.get_rng_state())
    assert model.training and all(p.requires_grad for p in model.parameters())
    model.eval()
    after = model.state_dict()
    assert after.keys() == state.keys()
    assert all(after[k].dtype == v.dtype and torch.equal(after[k], v) for k, v in state.items())
    _in_threat(x_adv, images)
    name = str(low).removeprefix("torch.")
    # one low-precision pass per reference from a random start, then one full-precision pass from the kept image
    for i, refs in enumerate(REFS):
        ps = rec.passes[i]
        assert [(p.reference, p.precision, p.start) for p in ps[:-1]] == [(j, name, "random") for j in range(len(refs))]
        assert (ps[-1].reference, ps[-1].precision, ps[-1].start) == (rec.kept_reference[i], "full", "kept")
        # keep rule: the returned image has the highest full-precision loss of all passes ...
        assert rec.final_loss[i] == max(p.loss for p in ps)
        assert ps[rec.kept_reference[i]].kept or ps[-1].kept
        # ... the full-precision pass never ends below its start (APGD's best includes the start point) ...
        assert ps[-1].loss >= max(p.loss for p in ps[:-1]) - 1e-5
        # ... and the recorded losses are the plain closure's at the returned / clean image
        ref = refs[rec.kept_reference[i]]
        assert math.isclose(_loss_of(model, proc, x_adv, i, ref), rec.final_loss[i], abs_tol=1e-5)
        assert math.isclose(_loss_of(model, proc, images, i, ref), rec.clean_loss[i], abs_tol=1e-5)
        assert rec.reference_clean_loss[i] == pytest.approx([_loss_of(model, proc, images, i, r) for r in refs],
                                                            abs=1e-5)
        assert rec.final_loss[i] > max(rec.reference_clean_loss[i])  # the attack raised the worst-case loss
    assert rec.stopped == [False, False] and rec.broken_after == [None, None] and rec.low_precision == name
    again, rec2 = attack_lvlm_ensemble(model, proc, images, PROMPTS, REFS, eps=EPS, steps=4, seed=0, low_precision=low)
    assert torch.equal(x_adv, again) and rec == rec2


def test_full_precision_only(llava, images):
    model, proc = llava
    x_adv, rec = attack_lvlm_ensemble(model, proc, images, PROMPTS, REFS, eps=EPS, steps=3, seed=1,
                                      low_precision=None)
    _in_threat(x_adv, images)
    assert rec.low_precision is None
    for i, refs in enumerate(REFS):
        assert [(p.reference, p.precision, p.start) for p in rec.passes[i]] == [(j, "full", "random")
                                                                                for j in range(len(refs))]
        assert all(p.pass_loss == p.loss for p in rec.passes[i])  # no separate re-scoring in full precision
        assert rec.final_loss[i] == max(p.loss for p in rec.passes[i])


def test_broken_images_are_skipped(llava, images):
    model, proc = llava
    # image 0 broken on the clean input: not attacked, returned unchanged
    x_adv, rec = attack_lvlm_ensemble(model, proc, images, PROMPTS, REFS, eps=EPS, steps=2, seed=0,
                                      low_precision=torch.bfloat16, is_broken=lambda i, o: i == 0)
    assert torch.equal(x_adv[0], images[0]) and not torch.equal(x_adv[1], images[1])
    assert rec.passes[0] == [] and rec.kept_reference[0] is None and rec.broken_after[0] == 0
    assert math.isnan(rec.clean_loss[0]) and math.isnan(rec.final_loss[0]) and rec.stopped == [True, False]
    assert len(rec.passes[1]) == 3 and rec.broken_after[1] is None
    # image 1 robust on the clean input, broken at its first kept result: skips its second reference and the
    # full-precision pass
    calls = {0: 0, 1: 0}

    def broken_after_clean(i: int, out: str) -> bool:
        calls[i] += 1
        return i == 1 and calls[i] > 1

    x_adv, rec = attack_lvlm_ensemble(model, proc, images, PROMPTS, REFS, eps=EPS, steps=2, seed=0,
                                      low_precision=torch.bfloat16, is_broken=broken_after_clean)
    _in_threat(x_adv, images)
    assert [len(p) for p in rec.passes] == [2, 1] and rec.stopped == [False, True]
    assert rec.broken_after == [None, 1] and rec.passes[1][0].broken and rec.kept_reference[1] == 0


@pytest.mark.parametrize("kwargs", [dict(low_precision=torch.float32), dict(eps=2.0), dict(steps=0)])
def test_bad_arguments(llava, images, kwargs):
    model, proc = llava
    with pytest.raises(ConfigError):
        attack_lvlm_ensemble(model, proc, images, PROMPTS, REFS, **{"eps": EPS, "steps": 2, **kwargs})
