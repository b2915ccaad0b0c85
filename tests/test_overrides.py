"""`mmrobust demo --set`: typed key=value overrides of a story's settings."""
from __future__ import annotations

import pytest

from mmrobust.errors import ConfigError
from mmrobust.pipelines.demo_adversarial import AdversarialDemo
from mmrobust.pipelines.demo_backdoor import BackdoorDemo
from mmrobust.pipelines.overrides import apply_overrides


def test_overrides_are_typed_and_reach_into_dicts():
    s = apply_overrides(BackdoorDemo(), ["finetune_lr=1e-3", "finetune_steps=40", "trigger_params.pattern=random_noise",
                                         "poison_templates=['a {}.', 'the {}.']", "par_view=autoaugment"])
    assert s.finetune_lr == 0.001 and isinstance(s.finetune_lr, float) and s.finetune_steps == 40
    assert s.trigger_params == {"size": 6, "pattern": "random_noise", "location": "bottom_right"}
    assert s.poison_templates == ("a {}.", "the {}.") and s.par_view == "autoaugment"
    assert BackdoorDemo().trigger_params["pattern"] == "checkerboard"  # the default is untouched
    a = apply_overrides(AdversarialDemo(), ["pretrain_lr=2", "eval_eps=[2/255, 0.02]", "train_eps=8/255"])
    assert a.pretrain_lr == 2.0 and isinstance(a.pretrain_lr, float) and a.eval_eps == (2 / 255, 0.02)
    assert a.train_eps == 8 / 255


@pytest.mark.parametrize("item,message", [("steps=3", "key among"), ("finetune_steps=3.5", "expected a int"),
                                          ("finetune_steps", "key=value"), ("seed.x=1", "not a dict")])
def test_bad_overrides_name_the_problem(item, message):
    with pytest.raises(ConfigError, match=message):
        apply_overrides(BackdoorDemo(), [item])
