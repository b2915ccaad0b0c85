"""torchrun-style DDP on 2 gloo CPU processes (the test starts them) against one process on the global batch:
gathered CLIP, CleanCLIP and PAR losses and gradients, short training runs (accumulation, FARE's random
starts), resume; and one `torchrun ... mmrobust train` run."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from _ddp import DTYPES, LOSS_TASKS, RUNS, global_batch, loss_and_grads, run_training, tiny_task

WORLD = 2
# float32: the ranks sum in another order than one process, and MKL picks its kernels by CPU (MKL_CBWR), so
# a gradient summed over the batch differs by rounding of its terms, which can be far larger than the sum
# itself (cancellation). The float32 bound is relative to the tensor's largest entry: 1e-4 of it is ~800
# float32 ulps, far below what a difference in the math gives (a per-rank PAR threshold: ~1e-2). float64 rules
# rounding out (1e-10 absolute), so the math itself is checked there.
TOL = {torch.float32: dict(atol=1e-6, rtol=1e-4), torch.float64: dict(atol=1e-10, rtol=0)}


def _close(a: torch.Tensor, b: torch.Tensor, dtype: torch.dtype, msg: str) -> None:
    """``a`` equals ``b`` up to rounding: float32 relative to ``b``'s scale (see TOL), float64 absolutely."""
    tol = TOL[dtype]
    scale = float(b.abs().max()) if dtype == torch.float32 and b.numel() else 0.0
    torch.testing.assert_close(a, b, atol=tol["atol"] + tol["rtol"] * scale, rtol=0, msg=msg)
WEIGHTS_TOL = dict(atol=1e-9, rtol=0)  # training runs are in float64


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(**extra: str) -> dict[str, str]:
    src = str(Path(__file__).resolve().parents[1] / "src")
    path = os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", **extra}


def _wait_all(procs: list[subprocess.Popen], timeout: float) -> list[str]:
    """Wait for every process; if one fails or time runs out, kill the rest (they would block in a collective)."""
    deadline = time.time() + timeout
    while any(p.poll() is None for p in procs):
        if time.time() > deadline or any(p.poll() not in (None, 0) for p in procs):
            for p in procs:
                if p.poll() is None:
                    p.kill()
            break
        time.sleep(0.1)
    outputs = [p.communicate()[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), "\n---\n".join(outputs)[-6000:]
    return outputs


@pytest.fixture(scope="module")
def ddp(tmp_path_factory, micro_world):
    """Both ranks' results of every scenario of tests/_ddp.py (one launch: process start-up dominates)."""
    out = tmp_path_factory.mktemp("ddp")
    port = str(_free_port())
    worker = str(Path(__file__).with_name("_ddp.py"))
    procs = [subprocess.Popen([sys.executable, worker, str(out), str(micro_world.train_manifest)],
                              env=_env(RANK=str(r), LOCAL_RANK=str(r), WORLD_SIZE=str(WORLD),
                                       MASTER_ADDR="127.0.0.1", MASTER_PORT=port),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for r in range(WORLD)]
    _wait_all(procs, timeout=300)
    return out, [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", LOSS_TASKS)
def test_gathered_losses_and_gradients_equal_one_process(ddp, name, dtype):
    terms, grads = loss_and_grads(name, global_batch(), dtype)
    tol = TOL[dtype]
    for rank in range(WORLD):
        ddp_terms, ddp_grads = ddp[1][rank][f"losses_{str(dtype)[6:]}"][name]
        assert ddp_terms.keys() == terms.keys()
        for k in terms:
            assert abs(ddp_terms[k] - terms[k]) <= tol["atol"] + tol["rtol"] * abs(terms[k]), (k, ddp_terms[k], terms[k])
        assert ddp_grads.keys() == grads.keys() and len(grads) > 2
        for k in grads:
            _close(ddp_grads[k], grads[k], dtype, f"{name} gradient of {k}")


@pytest.mark.parametrize("run", list(RUNS))
def test_two_process_training_ends_with_one_process_weights(ddp, run, micro_world, tmp_path):
    single = run_training(run, micro_world.train_manifest, tmp_path / run)
    ranks = ddp[1]
    for k, v in single.items():
        torch.testing.assert_close(ranks[0][run][k], v, **WEIGHTS_TOL, msg=f"{run}: {k}")
        assert torch.equal(ranks[0][run][k], ranks[1][run][k]), f"{run}: ranks disagree on {k}"
    steps = RUNS[run][2]["steps"]
    assert ranks[0][f"{run}_syncs"] == steps  # one gradient all-reduce per optimizer step, accumulation or not
    log = [json.loads(line) for line in (ddp[0] / run / "train_log.jsonl").read_text().splitlines()]
    single_log = [json.loads(line) for line in (tmp_path / run / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == list(range(1, steps + 1))  # rank 0 alone wrote it: no duplicate rows
    assert all(abs(a["loss"] - b["loss"]) < 1e-5 for a, b in zip(log, single_log))  # logged: global means


def test_resume_under_ddp_matches_uninterrupted(ddp):
    out, ranks = ddp
    assert ranks[0]["resumed_ckpt_step"] == 3  # stopped after the step-3 checkpoint, before the end
    for rank in ranks:
        for k, v in rank["cleanclip"].items():
            assert torch.equal(rank["resumed"][k], v), k
    steps = [json.loads(line)["step"] for line in (out / "resumed" / "train_log.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 7))


def test_an_unreadable_image_stops_every_rank_with_one_line(ddp):
    for rank in ddp[1]:
        assert rank["drop_error"].startswith("an image of step 0's batch could not be read; under torchrun")
        assert "\n" not in rank["drop_error"]


def test_world_size_must_divide_the_batch():
    from mmrobust.errors import ConfigError
    from mmrobust.training.sampler import EpochBatches, rank_share

    with pytest.raises(ConfigError, match="not divisible by world size 2 x accum steps 2.*--batch-size 8"):
        EpochBatches(100, batch_size=10, seed=0, total_steps=3, world_size=2, micro_batches=2)
    keys = list(range(8))  # micro-batch m of 1 process = ranks' slices of micro-batch m, concatenated
    assert rank_share(keys, rank=0, world_size=2, micro_batches=2) == [0, 1, 4, 5]
    assert rank_share(keys, rank=1, world_size=2, micro_batches=2) == [2, 3, 6, 7]


@pytest.mark.parametrize("name", ["cleanclip", "fare"])
def test_grad_checkpointing_gives_the_same_loss_and_gradients(name):
    results = []
    for enable in (False, True):
        task = tiny_task(name, torch.float64, **({"attack_steps": 2} if name == "fare" else {})).train()
        task.set_grad_checkpointing(enable)
        loss = task(global_batch())["loss"]
        loss.backward()
        results.append((loss.detach(), [p.grad for _, p in task.trainable_named_parameters()]))
    torch.testing.assert_close(results[0][0], results[1][0], atol=1e-12, rtol=0)
    for a, b in zip(results[0][1], results[1][1]):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=0)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("torchrun") is None and not (Path(sys.executable).parent / "torchrun").exists(),
                    reason="torchrun not installed")
def test_torchrun_cli_train(tmp_path, micro_world):
    torchrun = Path(sys.executable).parent / "torchrun"
    args = ["train", "--task", "clip", "--model", "mmrobust-micro", "--data", str(micro_world.train_manifest),
            "--steps", "3", "--batch-size", "16", "--lr", "1e-3", "--warmup", "1", "--quiet"]
    cmd = [str(torchrun if torchrun.exists() else "torchrun"), "--nproc_per_node", str(WORLD), "--master_addr",
           "127.0.0.1", "--master_port", str(_free_port()), "-m", "mmrobust.cli.main", *args,
           "--out", str(tmp_path / "ddp")]
    ddp = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    single = subprocess.run([sys.executable, "-m", "mmrobust.cli.main", *args, "--out", str(tmp_path / "one")],
                            env=_env(), capture_output=True, text=True, timeout=300)
    assert ddp.returncode == 0 and single.returncode == 0, ddp.stdout + ddp.stderr + single.stderr
    assert ddp.stdout.count("trained clip for 3 steps") == 1  # rank 0 alone prints
    assert json.loads((tmp_path / "ddp" / "results.json").read_text())["world_size"] == 2
    from safetensors.torch import load_file

    a = load_file(str(tmp_path / "ddp" / "model" / "open_clip_model.safetensors"))
    b = load_file(str(tmp_path / "one" / "model" / "open_clip_model.safetensors"))
    # float32 and Adam: a gradient that is zero in exact arithmetic (the attention's key bias) is float noise
    # whose order differs between 1 and 2 processes, and Adam scales it up to ~lr * 1e-3 per step
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-5, rtol=0) for k in a)
