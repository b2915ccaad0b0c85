"""Test-time defenses of CLIP models, picked by name through ``mmrobust.registry.DEFENSES``.

A defense wraps a :class:`~mmrobust.models.clip.CLIPModel` into a :class:`DefendedCLIP` that runs a test-time
procedure before the image tower and stands wherever a CLIP is evaluated (``mmrobust eval robust --defense
NAME``). Registered: "ttc" (test-time counterattacks, Xing et al., CVPR 2025). A new defense is one new file
here registering a factory ``(model, *, seed, backward, **options) -> DefendedCLIP``.

Evaluate a defense adaptively (Athalye et al. 2018; Tramer et al. 2020): attack the defended model, EOT over
its randomness, BPDA where a step has no useful gradient (:mod:`mmrobust.attacks.adaptive`)::

    from mmrobust.registry import DEFENSES
    defended = DEFENSES.build("ttc", {"steps": "2"}, model=clip, seed=0)
"""
from mmrobust.defenses.defended import DefendedCLIP
from mmrobust.defenses.ttc import TTCSettings, counterattack, step_weights, ttc

__all__ = ["DefendedCLIP", "TTCSettings", "counterattack", "step_weights", "ttc"]

from mmrobust.registry import import_modules  # noqa: E402

import_modules(__name__, __path__)  # every module registers what it defines: a new one is one new file
