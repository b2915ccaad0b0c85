"""Run a story's independent stages side by side, each in its own process with a fixed thread count.

A tiny model's matrices are too small for two threads to share well: on 2 CPU cores, two stages
with one thread each get through about 1.4x the work of one stage with two threads. Stages are
resumable (:func:`mmrobust.stories.stages.run_stage`), so a killed pool loses only unfinished work.
Fixing the threads per stage also makes a stage's numbers independent of how many cores a machine has.
"""
from __future__ import annotations

import multiprocessing
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Sequence

from tqdm.auto import tqdm

Call = tuple[Callable[..., Any], tuple, dict]


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run a block with ``n`` torch threads (None: as they are), then restore the previous count.
    A fixed count makes a CPU stage's numbers the same on machines with other core counts."""
    import torch

    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _init_worker(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def run_parallel(calls: Sequence[Call], *, workers: int, threads: int = 1,
                 done: Callable[[int, Any], None] | None = None, desc: str | None = None) -> list[Any]:
    """Run ``fn(*args, **kwargs)`` for each call in ``workers`` spawned processes with ``threads``
    torch threads each; results come back in the order of ``calls``. ``done(i, result)`` is called as
    each finishes; ``desc`` shows a progress bar over the calls. ``workers <= 1`` runs the calls here,
    in order. The first exception is re-raised after the other running calls are cancelled or
    finished. Functions must be importable (module level).
    """
    bar = tqdm(total=len(calls), desc=desc, disable=desc is None, dynamic_ncols=True, leave=False)

    def finished(i: int, result: Any) -> None:
        bar.update(1)
        if done:
            done(i, result)

    try:
        if workers <= 1 or len(calls) <= 1:
            results = []
            for i, (fn, args, kwargs) in enumerate(calls):
                results.append(fn(*args, **kwargs))
                finished(i, results[-1])
            return results
        return _in_pool(calls, workers, threads, finished)
    finally:
        bar.close()


def run_stages(fn: Callable[..., Any], arg_lists: Sequence[tuple], *, workers: int, progress: bool,
               desc: str, done: Callable[[int, Any], None] | None = None) -> list[Any]:
    """``fn(*args, progress=...)`` for each args tuple through :func:`run_parallel`. Run in order, each
    stage shows its own progress bars; side by side, their bars would interleave, so one bar
    (``desc``) counts the finished stages instead."""
    side_by_side = workers > 1 and len(arg_lists) > 1
    calls = [(fn, args, {"progress": progress and not side_by_side}) for args in arg_lists]
    return run_parallel(calls, workers=workers, done=done, desc=desc if progress and side_by_side else None)


def _in_pool(calls: Sequence[Call], workers: int, threads: int, done: Callable[[int, Any], None]) -> list[Any]:
    ctx = multiprocessing.get_context("spawn")  # torch's OpenMP state does not survive fork()
    with ProcessPoolExecutor(max_workers=min(workers, len(calls)), mp_context=ctx,
                             initializer=_init_worker, initargs=(threads,)) as pool:
        futures = {pool.submit(fn, *args, **kwargs): i for i, (fn, args, kwargs) in enumerate(calls)}
        results: list[Any] = [None] * len(calls)
        pending = set(futures)
        while pending:
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)  # report each as it ends
            for fut in finished:
                if fut.exception() is not None:
                    for other in pending:
                        other.cancel()
                    raise fut.exception()  # type: ignore[misc]
                results[futures[fut]] = fut.result()
                done(futures[fut], results[futures[fut]])
        return results
