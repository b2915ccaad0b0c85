"""`mmrobust demo --set`: typed key=value overrides of a story's settings."""
from __future__ import annotations

import pytest

from mmrobust.errors import ConfigError
from mmrobust.stories.adversarial import AdversarialDemo
from mmrobust.stories.backdoor import BackdoorDemo
from mmrobust.stories.overrides import apply_overrides


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


@pytest.mark.parametrize("item,message", [("steps=3", "key among"), ("finetune_steps=3.5", "expected an int"),
                                          ("finetune_steps", "key=value"), ("seed.x=1", "not a dict")])
def test_bad_overrides_name_the_problem(item, message):
    with pytest.raises(ConfigError, match=message):
        apply_overrides(BackdoorDemo(), [item])


def test_demo_cli_applies_overrides_and_records_them(tmp_path, capsys):
    from mmrobust.cli.main import main
    from mmrobust.jsonio import read_json

    tiny = ["n_train=400", "n_test=60", "model=mmrobust-micro", "pretrain_steps=3", "pretrain_batch=32",
            "finetune_pairs=200", "finetune_steps=2", "finetune_batch=16", "workers=1", "threads=1", "poison_rate=0.08"]
    args = ["demo", "--out", str(tmp_path), "--story", "backdoor", "--quiet"]
    assert main(args + [a for t in tiny for a in ("--set", f"backdoor.{t}")]) == 0
    rec = read_json(tmp_path / "backdoor" / "results_story.json")
    assert rec["config"]["poison_rate"] == 0.08 and rec["config"]["finetune_steps"] == 2
    assert len(rec["poisoned_ids"]) == 32 and "| PAR" in capsys.readouterr().out
    assert read_json(tmp_path / "results_demo.json")["config"]["set"][0] == "backdoor.n_train=400"
