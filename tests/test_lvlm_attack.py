"""LVLM pixel attacks (Schlarmann et al. 2024) on a tiny random LLaVA: masking, loss oracle, attack invariants."""
from __future__ import annotations

import pytest
import torch

from mmrobust.errors import ConfigError
from mmrobust.lvlm.attack import (
    IGNORE_INDEX, attack_lvlm_targeted, attack_lvlm_untargeted, build_lvlm_inputs, greedy_outputs, lm_loss_fn,
    targeted_success,
)

from _lvlm import EPS, PROMPTS, REFS, images, llava  # noqa: F401  (fixtures)


def test_masking_token_by_token(llava):
    _, proc = llava
    batch = build_lvlm_inputs(proc, [PROMPTS[0], PROMPTS[1]], [REFS[0], REFS[1]], image_size=32)
    assert batch.image_index.tolist() == [0, 1, 1]
    tok = proc.tokenizer.convert_ids_to_tokens
    prompt0 = ["USER", ":"] + ["<image>"] * 16 + PROMPTS[0].split() + ["ASSISTANT", ":"]
    row0 = tok(batch.input_ids[0][batch.attention_mask[0].bool()])
    assert row0 == prompt0 + ["red", "blue", "</s>"]
    labelled = (batch.labels[0] != IGNORE_INDEX).nonzero().squeeze(1).tolist()
    assert labelled == list(range(len(prompt0), len(prompt0) + 3))  # exactly the answer + end-of-turn EOS
    assert tok(batch.labels[0, labelled]) == ["red", "blue", "</s>"]
    for r, answer in [(1, ["a", "dog"]), (2, ["a", "cat", "shows"])]:  # padding (right) is masked too
        keep = batch.labels[r] != IGNORE_INDEX
        assert tok(batch.labels[r, keep]) == answer + ["</s>"]
        assert not (keep & ~batch.attention_mask[r].bool()).any()
        assert batch.labels[r, batch.input_ids[r] == proc.tokenizer.convert_tokens_to_ids("<image>")].eq(-100).all()


def test_closure_matches_hf_labels_loss(llava, images):
    model, proc = llava
    batch = build_lvlm_inputs(proc, PROMPTS, REFS, image_size=32)
    loss = lm_loss_fn(model, proc, batch, like=images)(images)
    assert loss.shape == (2,)
    pixels = proc.image_processor(list(images), do_rescale=False, return_tensors="pt")["pixel_values"]
    rows = []
    with torch.no_grad():
        for r, i in enumerate(batch.image_index.tolist()):
            n = int(batch.attention_mask[r].sum())  # unpadded row, as the model would see it alone
            out = model(pixel_values=pixels[i:i + 1], input_ids=batch.input_ids[r:r + 1, :n],
                        attention_mask=batch.attention_mask[r:r + 1, :n], labels=batch.labels[r:r + 1, :n])
            rows.append(out.loss)
    expected = torch.stack([rows[0], (rows[1] + rows[2]) / 2])  # image 1: mean over its two references
    torch.testing.assert_close(loss.detach(), expected, atol=1e-5, rtol=1e-5)


def _in_threat(x_adv, x):
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert (x_adv - x).abs().max() <= EPS + 1e-6


def test_untargeted_raises_loss_beyond_random(llava, images):
    model, proc = llava
    model.train()  # the attack must run in eval mode and restore the caller's mode and flags
    rng = torch.random.get_rng_state()
    x_adv, rec = attack_lvlm_untargeted(model, proc, images, PROMPTS, REFS, eps=EPS, steps=6, seed=0)
    assert torch.equal(rng, torch.random.get_rng_state())
    assert model.training and all(p.requires_grad for p in model.parameters())
    model.eval()
    _in_threat(x_adv, images)
    loss_fn = lm_loss_fn(model, proc, build_lvlm_inputs(proc, PROMPTS, REFS, image_size=32), like=images)
    with torch.no_grad():
        clean, adv = loss_fn(images), loss_fn(x_adv)
        noise = (2 * torch.rand(images.shape, generator=torch.Generator().manual_seed(5)) - 1) * EPS
        rand = loss_fn((images + noise).clamp(0, 1))
    assert (adv > clean).all() and (adv > rand).all()
    torch.testing.assert_close(torch.tensor(rec.final_loss), adv, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(torch.tensor(rec.clean_loss), clean, atol=1e-5, rtol=1e-5)
    assert (rec.eps, rec.steps, rec.seed, rec.objective) == (EPS, 6, 0, "untargeted")
    again, _ = attack_lvlm_untargeted(model, proc, images, PROMPTS, REFS, eps=EPS, steps=6, seed=0)
    assert torch.equal(x_adv, again)


def test_targeted_lowers_target_loss(llava, images):
    model, proc = llava
    target = "green dog"
    x_adv, rec = attack_lvlm_targeted(model, proc, images, PROMPTS, target, eps=EPS, steps=6, seed=3)
    _in_threat(x_adv, images)
    assert all(f < c for f, c in zip(rec.final_loss, rec.clean_loss))
    assert rec.target == target and len(rec.stopped) == 2


def test_targeted_success_and_early_stop(llava, images):
    model, proc = llava
    outs = greedy_outputs(model, proc, images, PROMPTS, max_new_tokens=4)
    assert targeted_success(model, proc, images, PROMPTS, outs[0], max_new_tokens=4)[0]
    assert not targeted_success(model, proc, images, PROMPTS, "zzz-not-a-word", max_new_tokens=4).any()
    # already broken on the clean image: not attacked, returned unchanged
    x_adv, rec = attack_lvlm_untargeted(model, proc, images, PROMPTS, REFS, eps=EPS, steps=2, seed=0,
                                        is_broken=lambda i, o: i == 0)
    assert torch.equal(x_adv[0], images[0]) and rec.stopped[0] and not rec.stopped[1]
    _in_threat(x_adv, images)
    seen: set[int] = set()  # robust at the clean check, broken at the first check (step 2)

    def broken_after_clean(i: int, out: str) -> bool:
        first = i not in seen
        seen.add(i)
        return not first

    _, rec = attack_lvlm_untargeted(model, proc, images, PROMPTS, REFS, eps=EPS, steps=3, seed=0,
                                    is_broken=broken_after_clean, check_every=2)
    assert rec.stopped == [True, True]


@pytest.mark.parametrize("kwargs, refs, x_fn", [
    (dict(eps=2.0), REFS, lambda x: x),
    (dict(eps=EPS, steps=0), REFS, lambda x: x),
    (dict(eps=EPS), [["red"], []], lambda x: x),
    (dict(eps=EPS), REFS, lambda x: x * 2),
    (dict(eps=EPS), REFS, lambda x: x[:, :, :16, :16]),
])
def test_bad_arguments(llava, images, kwargs, refs, x_fn):
    model, proc = llava
    with pytest.raises(ConfigError):
        attack_lvlm_untargeted(model, proc, x_fn(images), PROMPTS, refs, **kwargs)
