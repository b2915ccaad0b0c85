"""Every command-line default equals its settings dataclass's default: one spelling per setting."""
from __future__ import annotations

import argparse
import dataclasses

import pytest

from mmrobust.cli.main import build_parser
from mmrobust.cli.options import add_settings, settings_from, settings_of
from mmrobust.eval.robust import RobustSettings
from mmrobust.training.loop import TrainConfig


def _parsers(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _parsers(sub, (*path, name))


def _field_defaults(cls: type) -> dict:
    out = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
    return out


def test_every_cli_default_equals_its_dataclass_default():
    checked = 0
    for path, parser in _parsers(build_parser()):
        for cls, names in settings_of(parser):
            defaults = _field_defaults(cls)
            for name in names:
                cli = parser.get_default(name)
                want = defaults.get(name)
                if isinstance(want, dict):  # KEY=VALUE options start empty; not given, the field's default holds
                    assert cli is None, (path, name)
                else:
                    assert cli == want, f"mmrobust {' '.join(path)}: --{name} defaults to {cli!r}, {cls.__name__} " \
                                        f"to {want!r}"
                checked += 1
    assert checked >= 25  # train, eval zeroshot/backdoor/retrieval/robust all derive their options


def _commands():
    """Each command and the settings dataclasses its options spell ({option dest: field} where they differ;
    None: the option is no spelling of that field, e.g. eval backdoor's --target None means 'the record's')."""
    from mmrobust.eval.backdoor import BackdoorSettings
    from mmrobust.eval.mmr.task import RunSettings
    from mmrobust.eval.retrieval import RetrievalSettings
    from mmrobust.eval.zeroshot import ZeroShotSettings
    from mmrobust.models.mllm.base import GenerationParams
    from mmrobust.pipelines.audit import AuditSettings
    from mmrobust.data.poison.badclip import BadCLIPSettings
    from mmrobust.eval.challenge import ChallengeSettings
    from mmrobust.eval.defended import DefendedSettings
    from mmrobust.pipelines.lvlm import LVLMAttackJob
    from mmrobust.stories.study import BackdoorStudy

    return [(("train",), TrainConfig, {}), (("eval", "zeroshot"), ZeroShotSettings, {}),
            (("eval", "backdoor"), BackdoorSettings, {"target": None, "trigger": None}), (("eval", "retrieval"), RetrievalSettings, {}),
            (("eval", "robust"), RobustSettings, {}), (("lvlm", "eval"), LVLMAttackJob, {"out": "out_dir"}),
            (("lvlm", "targeted"), LVLMAttackJob, {"out": "out_dir"}),
            (("mmr", "run"), RunSettings, {"bootstrap": "n_boot"}), (("mmr", "run"), GenerationParams, {}),
            (("audit",), AuditSettings, {}), (("make-trigger", "badclip"), BadCLIPSettings, {}),
            (("study", "backdoor"), BackdoorStudy, {}), (("bench", "run"), ChallengeSettings, {}),
            (("eval", "robust"), DefendedSettings, {"defense": None}), (("study", "ttc"), DefendedSettings, {})]


@pytest.mark.parametrize("path,cls,aliases", _commands())
def test_no_option_spells_a_setting_with_another_default(path, cls, aliases):
    """Options typed by hand (not derived) are caught too: any option naming a field of the command's
    settings must default to the field's default (None for a required option)."""
    parser = dict(_parsers(build_parser()))[path]
    defaults, n = _field_defaults(cls), 0
    for action in parser._actions:
        name = aliases.get(action.dest, action.dest)  # None: an option that means something else
        if name is None or not action.option_strings or name not in defaults or action.dest in ("help", "config"):
            continue
        want = defaults[name]
        cli = action.default
        if isinstance(want, dict) or action.required:
            continue  # KEY=VALUE options start empty; a required option has no default
        assert cli == want, f"mmrobust {' '.join(path)} --{action.dest} defaults to {cli!r}, {cls.__name__}.{name} " \
                            f"to {want!r}"
        n += 1
    assert n >= 1


@pytest.mark.parametrize("path,cls", [(("train",), TrainConfig), (("eval", "robust"), RobustSettings)])
def test_commands_derive_their_settings_options(path, cls):
    parser = dict(_parsers(build_parser()))[path]
    derived = {n for c, names in settings_of(parser) if c is cls for n in names}
    dests = {a.dest for a in parser._actions}
    # no option of this command spells a field of its settings outside add_settings
    assert derived and derived <= dests
    manual = {a.dest for a in parser._actions if a.dest in _field_defaults(cls)} - derived
    assert not manual, manual


def test_settings_round_trip_through_the_options():
    p = argparse.ArgumentParser()
    add_settings(p, RobustSettings)
    args = p.parse_args(["--eps", "2/255", "--attack-opt", "steps=7", "--no-check", "--n-samples", "none"])
    s = settings_from(args, RobustSettings)
    assert s.eps == (2 / 255,) and s.attack_options == {"steps": 7} and s.check is False and s.n_samples is None
    assert settings_from(p.parse_args([]), RobustSettings) == RobustSettings()
