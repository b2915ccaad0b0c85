"""Argument helpers shared by subcommands: YAML config files, eps strings, path checks."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import yaml

from mmrobust.errors import ConfigError
from mmrobust.values import SEED_MAX, parse_value


def print_warnings(warnings: Any) -> None:
    """Each sanity warning (:mod:`mmrobust.reports.sanity`) as a ``warning: ...`` line on stderr."""
    import sys

    for w in warnings if isinstance(warnings, list) else []:
        print(f"warning: {w}", file=sys.stderr)


def print_record_warnings(out_dir: str | Path, name: str | None = None) -> None:
    """The warnings of the record ``results_<name>.json`` (``results.json`` without a name) a command just
    wrote into ``out_dir``."""
    from mmrobust.jsonio import read_json

    try:  # read_json refuses a malformed or deeply nested file with a ValueError
        record = read_json(Path(out_dir) / (f"results_{name}.json" if name else "results.json"))
    except (OSError, ValueError):
        return
    print_warnings(record.get("warnings") if isinstance(record, dict) else None)


def with_config(parser: argparse.ArgumentParser, attr: str = "func") -> None:
    """Give an action's parser ``--config YAML`` (as ``train`` and ``eval`` have) and apply the file before the
    function it runs (its default ``attr``) is called."""
    add_config_option(parser)
    fn = parser.get_default(attr)

    def configured(args: argparse.Namespace) -> int:
        return fn(apply_config(parser, args))

    parser.set_defaults(**{attr: configured}, _parser=parser)


def run_subaction(args: argparse.Namespace, action: str, parent: str) -> int:
    """Run the sub-action a command's parser picked (``args.<action>``); with none, the command's help
    (``args.<parent>``) and exit status 2."""
    fn = getattr(args, action, None)
    if fn is None:
        getattr(args, parent).print_help()
        return 2
    return fn(args)


def seed_list(text: str) -> list[int]:
    """``"0,1,2"`` or ``"0-4"`` as a list of distinct seeds (at most 100)."""
    try:
        if "-" in text and "," not in text:
            lo, hi = (int(x) for x in text.split("-"))
            seeds = list(range(lo, hi + 1))
        else:
            seeds = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        seeds = []
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0 or max(seeds) > SEED_MAX or len(seeds) > 100:
        raise ConfigError(f"--seeds {text!r}: give distinct non-negative integers, e.g. --seeds 0,1,2,3,4 or 0-4")
    return seeds


def add_seeds_option(p: argparse.ArgumentParser, what: str) -> None:
    """``--seeds``: run the command once per seed into OUT/seed-K, then aggregate (see :func:`over_seeds`)."""
    p.add_argument("--seeds", default=None, metavar="0,1,2",
                   help=f"run once per seed ({what}) into OUT/seed-K, then write mean ± sd (min-max) over the "
                        "seeds into OUT/results_seeds.json and OUT/summary.md; a finished seed is reused")


def over_seeds(run: Any, *seed_args: str) -> Any:
    """``run(args)`` once per ``--seeds`` value, each with the ``seed_args`` set to that seed and ``--out``
    to ``OUT/seed-K``, then the records aggregated across the seeds; without ``--seeds``, ``run`` itself."""
    def wrapped(args: argparse.Namespace) -> int:
        if not getattr(args, "seeds", None):
            return run(args)
        from mmrobust.stories.seeds import aggregate_runs, check_aggregate_target

        seeds = seed_list(args.seeds)
        if not args.out:
            raise ConfigError("--seeds needs --out on the command line (each seed goes into OUT/seed-K)")
        out, rc = Path(args.out), 0
        check_aggregate_target(out)  # before the runs, not after
        for k in seeds:
            if any((out / f"seed-{k}").glob("results*.json")) and not getattr(args, "overwrite", False):
                print(f"== seed {k}: finished in {out / f'seed-{k}'}, reused", flush=True)
                continue
            print(f"== seed {k} -> {out / f'seed-{k}'}", flush=True)
            one = argparse.Namespace(**{**vars(args), "seeds": None, "out": str(out / f"seed-{k}"),
                                        **{a: k for a in seed_args}})
            rc = max(rc, int(run(one) or 0))
        agg = aggregate_runs(out, seeds)
        print(agg["table"])
        print_warnings(agg["record"].get("warnings"))
        return rc

    return wrapped


def parse_eps(text: str) -> float:
    """'4/255' or '0.0157' -> float in [0,1] units (only the CLI sees the '/255' form)."""
    try:
        value = parse_value(text, like=0.0)
    except ConfigError:
        raise argparse.ArgumentTypeError(f"eps {text!r} is not a number; write e.g. 4/255 or 0.0157") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"eps {text!r} = {value:.4g} is outside [0,1]; images are in [0,1], so "
                                         "write 4/255 rather than 4")
    return value


def eps_list(text: str) -> list[float]:
    return [parse_eps(t) for t in text.split(",") if t.strip()]


def _int_at_least(text: str, minimum: int) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if v < minimum:
        raise argparse.ArgumentTypeError(f"{text!r} must be >= {minimum}")
    return v


def positive_int(text: str) -> int:
    return _int_at_least(text, 1)


def seed(text: str) -> int:
    """A seed: an integer in [0, 2**63 - 1] (what torch and numpy generators accept)."""
    v = _int_at_least(text, 0)
    if v > SEED_MAX:
        raise argparse.ArgumentTypeError(f"seed {text} is beyond 2**63 - 1; use a smaller integer")
    return v


def number(low: float | None = None, high: float | None = None, *, low_open: bool = False,
           high_open: bool = False):
    """An argparse type for a finite float in [low, high] (open ends with ``low_open`` / ``high_open``);
    accepts 1e-3 and 4/255 alike."""
    import math

    def parse(text: str) -> float:
        try:
            v = parse_value(text, like=0.0)
        except ConfigError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not math.isfinite(v):
            raise argparse.ArgumentTypeError(f"{text!r} must be a finite number")
        if low is not None and (v < low or (low_open and v == low)):
            raise argparse.ArgumentTypeError(f"{text!r} must be {'>' if low_open else '>='} {low:g}")
        if high is not None and (v > high or (high_open and v == high)):
            raise argparse.ArgumentTypeError(f"{text!r} must be {'<' if high_open else '<='} {high:g}")
        return v

    parse.__name__ = "number"
    return parse


non_negative_float = number(0.0)
positive_float = number(0.0, low_open=True)


def delimiter(text: str) -> str:
    """A one-character CSV delimiter ('\\t' is read as a tab)."""
    text = "\t" if text == "\\t" else text
    if len(text) != 1:
        raise argparse.ArgumentTypeError(f"delimiter {text!r} must be one character, e.g. , or ; or a tab")
    return text


def device(text: str) -> str:
    """'cpu', 'cuda' or 'cuda:N', checked against what this machine has."""
    import torch

    try:
        dev = torch.device(text)
    except RuntimeError:
        raise argparse.ArgumentTypeError(f"device {text!r} is not cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise argparse.ArgumentTypeError("no CUDA GPU is visible here; use --device cpu")
    return text


def non_negative_int(text: str) -> int:
    return _int_at_least(text, 0)


def key_values(pairs: list[str] | None) -> dict[str, str]:
    """['size=6', 'pattern=checkerboard'] -> dict; one-line error on a malformed pair."""
    out: dict[str, str] = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise ConfigError(f"parameter {pair!r} must look like key=value")
        k, v = pair.split("=", 1)
        out[k.strip().replace("-", "_")] = v.strip()
    return out


def add_path_options(parser: argparse.ArgumentParser) -> None:
    """--data-root / --allow-outside-paths: where a manifest's image paths may point (untrusted input)."""
    parser.add_argument("--data-root", help="folder the manifest's image paths must lie in (default: the "
                        "manifest's folder); paths outside it are skipped and listed")
    parser.add_argument("--allow-outside-paths", action="store_true",
                        help="allow image paths anywhere (absolute, or climbing out with ..)")


def add_config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="YAML", help="YAML file of option values (keys as the long options, "
                        "with - or _); options given on the command line win")


MAX_CONFIG_BYTES = 1 << 20  # a config is a page of options, not data
_NOT_OPTIONS = ("help", "config", "version")


def read_config(path: str | Path) -> dict[str, Any]:
    """The option mapping in a YAML config file; one-line ConfigErrors for every way it can be wrong
    (missing, not a regular file, too big, not UTF-8, not YAML, code-running tags, not a mapping)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {path} not found (or not a regular file); check the --config path")
    if p.stat().st_size > MAX_CONFIG_BYTES:
        raise ConfigError(f"config file {path} is over {MAX_CONFIG_BYTES >> 20} MiB; a config holds option: value lines")
    try:
        text = p.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path} is not UTF-8 text (UTF-16?); re-save it as UTF-8") from None
    except OSError as e:
        raise ConfigError(f"cannot read config file {path} ({e.strerror or e})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.constructor.ConstructorError as e:
        raise ConfigError(f"config file {path}: {str(e.problem or e).strip()} at line "
                          f"{(e.problem_mark.line + 1) if e.problem_mark else '?'}; tags such as !!python/... are "
                          "refused (a config never runs code): write plain values") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"config file {path} is not valid YAML{where} ({getattr(e, 'problem', None) or e}); "
                          "write one option: value per line") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of option: value, not a {type(data).__name__}")
    bad = [k for k in data if not isinstance(k, str) or not k.strip()]
    if bad:
        raise ConfigError(f"config file {path}: key {bad[0]!r} is not an option name; keys are long option names "
                          "such as batch_size")
    return data


def apply_config(parser: argparse.ArgumentParser, argv_args: argparse.Namespace) -> argparse.Namespace:
    """Re-parse with defaults taken from ``--config`` (unknown keys are an error)."""
    path = getattr(argv_args, "config", None)
    if not path:
        return argv_args
    data = read_config(path)
    options = [a for a in parser._actions if a.dest not in _NOT_OPTIONS and not a.dest.startswith("_")
               and a.option_strings]
    actions = {a.dest: a for a in options}  # a key is a setting's name (warmup_steps) or its long option (warmup)
    spelled = {o[2:].replace("-", "_"): a for a in options for o in a.option_strings if o.startswith("--")}
    values = {k.strip().replace("-", "_"): v for k, v in data.items()}
    unknown = sorted(set(values) - set(actions) - set(spelled))
    if unknown:
        raise ConfigError(f"config file {path} has unknown option(s) {unknown}; see --help for valid names")
    ns = argparse.Namespace(**vars(argv_args))
    for key, v in values.items():
        k = key if key in actions else spelled[key].dest
        if k != key and isinstance(spelled[key], argparse._StoreFalseAction) and isinstance(v, bool):
            v = not v  # no_tf32: true  ==  tf32: false
        current = getattr(ns, k)
        if isinstance(actions[k], argparse._AppendAction):  # repeatable options: config first, CLI after
            if isinstance(v, dict):  # KEY=VALUE options written as a mapping (opt: {tau: 2.15})
                v = [f"{name}={'none' if x is None else x}" for name, x in v.items()]
            items = v if isinstance(v, list) else [v]
            if any(isinstance(x, (dict, list)) for x in items):
                raise ConfigError(f"config file {path}: {k} must be a list of plain values")
            setattr(ns, k, [str(x) for x in items] + [x for x in (current or []) if x not in map(str, items)])
        elif current == parser.get_default(k):
            if isinstance(v, list) and all(not isinstance(x, (dict, list)) for x in v):
                v = ",".join(map(str, v))  # a list-valued option such as --eps 2/255,4/255
            setattr(ns, k, _typed(actions[k], k, v, path))
    return ns


def _typed(action: argparse.Action, key: str, value: Any, path: str) -> Any:
    """Apply the option's own type and choices to a config value (one-line error on a bad one)."""
    if isinstance(value, (dict, list)):
        raise ConfigError(f"config file {path}: {key} must be a single value, not a {type(value).__name__}")
    if action.nargs == 0:  # a flag such as --resume
        if not isinstance(value, bool):
            raise ConfigError(f"config file {path}: {key} is a flag; write {key}: true or {key}: false")
        return value
    if value is None or action.type is None:
        out = value if value is None else str(value)
    else:
        try:
            out = action.type(str(value))
        except (argparse.ArgumentTypeError, ValueError) as e:
            raise ConfigError(f"config file {path}: {key}: {e}") from None
    if action.choices is not None and out not in action.choices:
        raise ConfigError(f"config file {path}: {key} must be one of {list(action.choices)}, not {value!r}")
    return out
