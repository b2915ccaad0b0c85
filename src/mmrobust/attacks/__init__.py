"""Adversarial attacks on [0, 1] images: PGD, APGD (CE, DLR, targeted DLR), AutoAttack-style worst case.

Two layers:

* functions over a per-sample loss closure, for any model and loss (e.g. FARE's embedding loss):
  :func:`pgd` (Madry et al. 2018) and :func:`apgd` (Croce & Hein 2020);
* registered classifier attacks with one signature, picked by name through
  ``mmrobust.registry.ATTACKS``: "pgd", "apgd-ce", "apgd-dlr", "apgd-t", "autoattack"::

      from mmrobust.registry import ATTACKS
      result = ATTACKS.get("autoattack")(logits_fn, x, y, eps=4/255, seed=0)
      result.robust_accuracy, result.broken_by

Run :func:`run_checks` (logits, determinism, nonzero gradients) before an evaluation.

Adaptive attacks on defenses (Athalye et al. 2018; Tramer et al. 2020): :func:`eot` (every registered attack's
``eot_samples`` option) for randomized models, :func:`bpda` for non-differentiable steps, and
:func:`through_defense` to attack a classifier with its test-time procedure in the loop.
"""
from mmrobust.attacks.adaptive import defense_step, through_defense
from mmrobust.attacks.api import apgd_ce_attack, apgd_dlr_attack, apgd_t_attack, pgd_attack
from mmrobust.attacks.apgd import APGDOutput, apgd, apgd_logits, apgd_targeted, checkpoints
from mmrobust.attacks.autoattack import DEFAULT_ATTACKS, autoattack
from mmrobust.attacks.checks import (
    AttackCheckWarning,
    check_deterministic,
    check_gradients,
    check_logits,
    run_checks,
)
from mmrobust.attacks.bpda import bpda
from mmrobust.attacks.eot import eot
from mmrobust.attacks.losses import ce_loss, dlr_loss, dlr_targeted_loss, margin_loss
from mmrobust.attacks.ops import (
    clamp_box,
    lp_norm,
    make_generator,
    normalize_grad,
    project,
    project_l2,
    project_linf,
    project_to_threat,
    random_delta,
)
from mmrobust.attacks.pgd import pgd
from mmrobust.attacks.result import AttackResult

__all__ = [
    "APGDOutput",
    "AttackCheckWarning",
    "AttackResult",
    "DEFAULT_ATTACKS",
    "apgd",
    "apgd_ce_attack",
    "apgd_dlr_attack",
    "apgd_logits",
    "apgd_t_attack",
    "apgd_targeted",
    "autoattack",
    "bpda",
    "ce_loss",
    "check_deterministic",
    "check_gradients",
    "check_logits",
    "checkpoints",
    "clamp_box",
    "defense_step",
    "dlr_loss",
    "dlr_targeted_loss",
    "eot",
    "lp_norm",
    "make_generator",
    "margin_loss",
    "normalize_grad",
    "pgd",
    "pgd_attack",
    "project",
    "project_l2",
    "project_linf",
    "project_to_threat",
    "random_delta",
    "run_checks",
    "through_defense",
]

from mmrobust.registry import import_modules  # noqa: E402

import_modules(__name__, __path__)  # every module registers what it defines: a new one is one new file
