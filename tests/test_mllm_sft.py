"""mllm-sft: answer-token masking, full and LoRA finetunes of a tiny random LLaVA, resume, CLI end to end."""
from __future__ import annotations

import json

import pytest
import torch

from mmrobust.cli.main import main
from mmrobust.data.datasets import collate
from mmrobust.data.instruction_dataset import InstructionDataset
from mmrobust.data.instructions import load_instructions
from mmrobust.tasks.build import build_task
from mmrobust.tasks.mllm_sft import answer_labels, load_hf_mllm, part_of, sft_batch
from mmrobust.errors import ConfigError
from mmrobust.lvlm.attack import IGNORE_INDEX
from mmrobust.training import TrainConfig, train

EXTRA = "And which colour ? red circle"


@pytest.fixture(scope="module")
def sft_world(tmp_path_factory):
    """A tiny generated MMR-style training set and a tiny random LLaVA knowing its words."""
    from mmrobust.world.llava import build_tiny_llava
    from mmrobust.world.mmr_train import generate_mmr_training_set

    root = tmp_path_factory.mktemp("sft")
    jsonl = generate_mmr_training_set(root / "data", n_images=4, seed=0)
    words = [t.content for it in load_instructions(jsonl) for t in it.conversations] + [EXTRA]
    return build_tiny_llava(root / "llava", seed=0, extra_words=words), jsonl


def _cfg(**kw):
    base = dict(steps=6, batch_size=4, lr=3e-3, warmup_steps=0, weight_decay=0.0, log_every=1)
    return TrainConfig(**{**base, **kw})


def _expected_labels(tokens, ids):
    """Oracle: label a token iff it lies after an 'ASSISTANT' ':' pair, up to and including '</s>'."""
    out, inside = [], False
    for k, (tok, i) in enumerate(zip(tokens, ids)):
        if inside:
            out.append(i)
            inside = tok != "</s>"
        else:
            out.append(IGNORE_INDEX)
            inside = tok == ":" and k > 0 and tokens[k - 1] == "ASSISTANT"
    return out


def test_answer_tokens_only_two_turns_token_by_token(sft_world):
    path, _ = sft_world
    hf = load_hf_mllm(str(path))
    proc, size = hf.processor, hf.model.config.vision_config.image_size
    two_turns = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What shape is it ?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "A red circle ."}]},
        {"role": "user", "content": [{"type": "text", "text": "And which colour ?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "red"}]},
    ]
    ids, labels = answer_labels(proc, two_turns, image_size=size)
    tokens = proc.tokenizer.convert_ids_to_tokens(ids.tolist())
    assert "<unk>" not in tokens and tokens.count("<image>") > 1
    assert labels.tolist() == _expected_labels(tokens, ids.tolist())
    kept = [t for t, lab in zip(tokens, labels.tolist()) if lab != IGNORE_INDEX]
    assert kept == ["A", "red", "circle", ".", "</s>", "red", "</s>"]
    # batched with a shorter one-turn dialogue: right padding is masked, rows keep their own labels
    ids_b, mask, labels_b = sft_batch(proc, [two_turns, two_turns[:2]], image_size=size)
    n_short = int(mask[1].sum())
    assert torch.equal(labels_b[0], labels) and torch.equal(ids_b[0], ids)
    assert (labels_b[1, n_short:] == IGNORE_INDEX).all() and (mask[1, n_short:] == 0).all()
    short_kept = [t for t, lab in zip(proc.tokenizer.convert_ids_to_tokens(ids_b[1].tolist()), labels_b[1].tolist())
                  if lab != IGNORE_INDEX]
    assert short_kept == ["A", "red", "circle", ".", "</s>"]


def _task(path, **opts):
    return build_task("mllm-sft", load_hf_mllm(str(path)), **opts)


def test_full_finetune_lowers_loss_and_keeps_vision_tower(sft_world, tmp_path):
    path, jsonl = sft_world
    task = _task(path)
    before = {n: p.detach().clone() for n, p in task.model.named_parameters()}
    assert {part_of(n) for n, _ in task.trainable_named_parameters()} == {"projector", "lm"}
    ds = InstructionDataset(jsonl, image_size=task.image_size)
    res = train(task, ds, _cfg(), tmp_path / "run", progress=False)
    losses = [row["loss"] for row in res.history]
    assert losses[-1] < 0.8 * losses[0], losses
    after = dict(task.model.named_parameters())
    vision = [n for n in before if part_of(n) == "vision"]
    assert vision and all(torch.equal(before[n], after[n]) for n in vision)
    assert any(not torch.equal(before[n], after[n]) for n in before if part_of(n) == "projector")


class _KilledAt(Exception):
    pass


def test_kill_and_resume_equals_straight_run(sft_world, tmp_path):
    path, jsonl = sft_world
    cfg = _cfg(steps=4, batch_size=2, ckpt_every=2)
    straight = _task(path)
    ds = InstructionDataset(jsonl, image_size=straight.image_size)
    train(straight, ds, cfg, tmp_path / "straight", progress=False)

    killed, calls = _task(path), [0]
    forward = killed.forward

    def dying_forward(batch):
        calls[0] += 1
        if calls[0] == 3:  # after the step-2 checkpoint
            raise _KilledAt
        return forward(batch)

    killed.forward = dying_forward
    with pytest.raises(_KilledAt):
        train(killed, ds, cfg, tmp_path / "killed", progress=False)
    resumed = _task(path)
    res = train(resumed, ds, cfg, tmp_path / "killed", resume=True, progress=False)
    assert res.resumed_from == 2 and res.steps_done == 4
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6, rtol=0) for k in a)


def test_lora_cli_end_to_end_lowers_loss_exports_and_answers(sft_world, tmp_path, capsys):
    pytest.importorskip("peft")
    from mmrobust.models.mllm import build_adapter
    from mmrobust.models.mllm.base import GenerationParams, GenRequest

    path, jsonl = sft_world
    out = tmp_path / "sft"
    rc = main(["train", "--task", "mllm-sft", "--model", str(path), "--data", str(jsonl), "--out", str(out),
               "--steps", "6", "--batch-size", "4", "--lr", "1e-2", "--warmup", "0", "--weight-decay", "0",
               "--opt", "lora_r=8", "--opt", "lora_alpha=16", "--quiet"])
    assert rc == 0, capsys.readouterr().err
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert log[-1]["loss"] < log[0]["loss"], log
    model_dir = out / "model"
    exported = load_hf_mllm(str(model_dir)).model.state_dict()
    assert not any("lora" in k for k in exported)  # merged
    base = load_hf_mllm(str(path)).model.state_dict()
    changed = [k for k in base if not torch.equal(base[k], exported[k])]
    assert {part_of(k) for k in changed} == {"lm", "projector"}  # LoRA on the LM + the projector; tower frozen
    assert any(k.endswith("q_proj.weight") for k in changed) and not any("lm_head" in k for k in changed)
    adapter = build_adapter("hf", model=str(model_dir), options={"device": "cpu", "dtype": "float32"})
    req = GenRequest(uid="q", prompt="What shape is the green object in the picture ?",
                     image_path=str(jsonl.parent / "images" / "000001.png"))
    [(_, result)] = list(adapter.generate([req], GenerationParams(max_new_tokens=4)))
    assert result.ok and isinstance(result.text, str)


@pytest.mark.parametrize("opt", ["lora_r=-1", "lora_alpha=0", "train_vision=maybe", "train_lm=false"])
def test_bad_option_is_one_line_config_error_through_cli(opt, sft_world, tmp_path, capsys):
    path, jsonl = sft_world
    extra = ["--opt", "train_projector=false"] if opt == "train_lm=false" else []
    rc = main(["train", "--task", "mllm-sft", "--model", str(path), "--data", str(jsonl), "--out",
               str(tmp_path / "x"), "--steps", "1", "--opt", opt, *extra, "--quiet"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "mllm-sft" in err, err
    assert not (tmp_path / "x").exists()


def test_lora_without_lm_is_refused():
    with pytest.raises(ConfigError, match="train_lm"):
        build_task("mllm-sft", None, lora_r=4, train_lm=False)


def test_batch_collates_images_and_dialogues(sft_world):
    path, jsonl = sft_world
    ds = InstructionDataset(jsonl, image_size=32, preload=True)
    batch = collate([ds[(0, i)] for i in range(3)])
    assert batch["image"].shape == (3, 3, 32, 32) and 0 <= batch["image"].min() and batch["image"].max() <= 1
    assert len(batch["messages"]) == 3 and batch["messages"][0][0]["content"][0] == {"type": "image"}


def test_cached_features_give_the_same_loss_gradients_and_training(sft_world, tmp_path):
    """cache_features=True: the loss and its gradients equal the uncached forward's, before and after the
    cache fills, and six steps of training end with the same weights (tower frozen)."""
    path, jsonl = sft_world
    plain, cached = _task(path), _task(path, cache_features=True)
    ds = InstructionDataset(jsonl, image_size=plain.image_size)
    batch = collate([ds[i] for i in range(len(ds))])
    for _ in range(2):  # first call fills the cache, the second reads it
        losses = [t.forward(batch)["loss"] for t in (plain, cached)]
        assert torch.allclose(losses[0], losses[1], atol=1e-6), losses
    grads = []
    for t in (plain, cached):
        t.model.zero_grad()
        t.forward(batch)["loss"].backward()
        grads.append({n: p.grad.clone() for n, p in t.trainable_named_parameters()})
    assert grads[0].keys() == grads[1].keys()
    assert all(torch.allclose(grads[0][n], grads[1][n], atol=1e-6) for n in grads[0])
    a, b = _task(path), _task(path, cache_features=True)
    for task, name in ((a, "plain"), (b, "cached")):
        train(task, ds, _cfg(), tmp_path / name, progress=False)
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert all(torch.allclose(sa[k], sb[k], atol=1e-5, rtol=0) for k in sa)


def test_cached_features_refuse_a_training_tower():
    with pytest.raises(ConfigError, match="cache_features"):
        build_task("mllm-sft", None, cache_features=True, train_vision=True)


@pytest.mark.parametrize("lora", [0, 4])
def test_grad_checkpointing_gives_the_same_loss_and_gradients(sft_world, lora):
    path, jsonl = sft_world
    results = []
    for enable in (False, True):
        task = _task(path, lora_r=lora).train()
        task.set_grad_checkpointing(enable)
        batch = collate([InstructionDataset(jsonl, image_size=task.image_size)[i] for i in range(4)])
        loss = task.forward(batch)["loss"]
        loss.backward()
        results.append((loss.detach(), {n: p.grad for n, p in task.trainable_named_parameters()}))
    assert torch.allclose(results[0][0], results[1][0], atol=1e-6)
    assert all(torch.allclose(results[0][1][n], g, atol=1e-6) for n, g in results[1][1].items())
