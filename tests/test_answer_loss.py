"""The answer-loss filter view (Wan et al., ICML 2023): per-row loss equal to what mllm-sft trains on,
independent of the batch, NaN for an unreadable image."""
from __future__ import annotations

import pytest
import torch

pytest.importorskip("transformers")

from mmrobust.data.datasets import collate
from mmrobust.data.instruction_dataset import InstructionDataset
from mmrobust.pipelines.answer_loss import answer_losses
from mmrobust.tasks.mllm_sft import MLLMSFTTask, load_hf_mllm
from _instructions import N, make_instructions


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from mmrobust.world.llava import build_tiny_llava

    root = tmp_path_factory.mktemp("answer-loss")
    return make_instructions(root / "data"), build_tiny_llava(root / "llava", seed=0, image_size=16)


def test_losses_match_the_sft_loss_and_the_batch_does_not_matter(setup):
    data, llava = setup
    losses = answer_losses(str(llava), data, batch_size=64)
    assert losses.shape == (N,) and losses.dtype == torch.float64 and torch.isfinite(losses).all()
    assert (losses > 0).all()
    small = answer_losses(str(llava), data, batch_size=3)  # other padding, same rows
    assert torch.allclose(losses, small, rtol=1e-4, atol=1e-5)
    task = MLLMSFTTask(load_hf_mllm(str(llava)))
    task.model.eval()
    rows = InstructionDataset(data, image_size=16)
    batch = collate([rows[i] for i in range(5)])
    with torch.no_grad():
        mean = task.forward(batch)["loss"]
    assert float(mean) == pytest.approx(float(losses[:5].mean()), rel=1e-4)  # the task's mean of the same rows


def test_a_replaced_answer_scores_higher_once_the_model_learned_the_answers(setup, tmp_path):
    import json

    data, llava = setup
    task = MLLMSFTTask(load_hf_mllm(str(llava)))
    rows = InstructionDataset(data, image_size=16)
    opt = torch.optim.AdamW([p for p in task.model.parameters() if p.requires_grad], lr=3e-3)
    torch.manual_seed(0)
    for _ in range(40):  # the clean answers, learned a little
        loss = task.forward(collate([rows[i] for i in range(N)]))["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    task.export(tmp_path / "tuned")
    lines = [json.loads(x) for x in data.read_text().splitlines()]
    lines[0]["answer"] = "Visit a ring ring star."  # an attacker's target, words the model knows
    (data.parent / "poisoned.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    losses = answer_losses(str(tmp_path / "tuned"), data.parent / "poisoned.jsonl")
    assert int(losses.argmax()) == 0  # the replaced answer is the least likely row


def test_unreadable_image_is_nan(setup, tmp_path):
    import shutil

    data, llava = setup
    copy = tmp_path / "data"
    shutil.copytree(data.parent, copy)
    (copy / "imgs" / "2.png").write_bytes(b"not a png")
    losses = answer_losses(str(llava), copy / "train.jsonl")
    assert torch.isnan(losses[2]) and torch.isfinite(losses[[0, 1, 3]]).all()
