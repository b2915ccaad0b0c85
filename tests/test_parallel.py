"""Side-by-side stages: results in call order, the same as in order, errors re-raised in the parent."""
from __future__ import annotations

import operator

import pytest

from mmrobust.stories.parallel import run_parallel, run_stages


def test_results_keep_call_order_and_match_the_in_order_run():
    calls = [(operator.truediv, (i, 4), {}) for i in range(5)]
    seen = []
    spawned = run_parallel(calls, workers=2, done=lambda i, r: seen.append(i))
    assert spawned == [0.0, 0.25, 0.5, 0.75, 1.0] and sorted(seen) == [0, 1, 2, 3, 4]
    assert run_parallel(calls, workers=1) == spawned


def test_a_failing_stage_raises_its_own_error_in_the_parent():
    with pytest.raises(ZeroDivisionError):
        run_parallel([(operator.truediv, (1, 2), {}), (operator.truediv, (1, 0), {})], workers=2)


def test_torch_threads_sets_then_restores_the_count():
    import torch

    from mmrobust.stories.parallel import torch_threads

    before = torch.get_num_threads()
    with torch_threads(before + 1):
        assert torch.get_num_threads() == before + 1
    assert torch.get_num_threads() == before
    with torch_threads(None):
        assert torch.get_num_threads() == before


def test_run_stages_shows_stage_bars_only_when_stages_run_in_order():
    # dict(progress=...) echoes the flag each stage was given
    assert run_stages(dict, [(), ()], workers=1, progress=True, desc="stages") == [{"progress": True}] * 2
    assert run_stages(dict, [(), ()], workers=2, progress=True, desc="stages") == [{"progress": False}] * 2
    assert run_stages(dict, [()], workers=2, progress=True, desc="stages") == [{"progress": True}]
    assert run_stages(dict, [(), ()], workers=1, progress=False, desc="stages") == [{"progress": False}] * 2


def test_quiet_hf_progress_restores_the_bars():
    pytest.importorskip("transformers")
    from transformers.utils import logging as hf_logging

    from mmrobust.stories.stages import quiet_hf_progress

    hf_logging.enable_progress_bar()
    with quiet_hf_progress():
        assert not hf_logging.is_progress_bar_enabled()
    assert hf_logging.is_progress_bar_enabled()
    with quiet_hf_progress(False):
        assert hf_logging.is_progress_bar_enabled()
