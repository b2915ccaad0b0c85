"""The mmrobust command lines that reproduce a results record, for a model card's "How to reproduce" section:
the command of the record's kind with the settings its protocol and metrics hold (attack, eps, samples, seed,
steps, parser, prompt), the model as the card names it and the data by its public name (the embedded world by
the command that regenerates it). Paths of the machine that ran it are never written.

Example::

    reproduce(record, dataset, model="fare-clip")
    # (['mmrobust generate --out world --seed 0 --n-train 12000 --n-test 1000 --image-size 32'],
    #  'mmrobust eval robust --model fare-clip --data world/test.csv --classes world/classes.json --attack apgd-ce
    #   --norm linf --eps 1/255,4/255 --n-samples 32 --seed 0 --out runs/robust')
"""
from __future__ import annotations

import shlex
from typing import Any, Callable, Mapping

from mmrobust.reports.card_data import WORLD_TYPE, public_text

CLASSIFY = ("zeroshot", "robust", "backdoor")


def _d(x: Any) -> Mapping[str, Any]:
    return x if isinstance(x, Mapping) else {}


def _q(value: Any) -> str:
    return shlex.quote(public_text(value))


def _flags(**kw: Any) -> str:
    """``--name value`` for each set value (underscores as dashes)."""
    return "".join(f" --{k.replace('_', '-')} {_q(v)}" for k, v in kw.items() if v not in (None, "", [], {}))


def world_setup(dataset: Mapping[str, Any]) -> str | None:
    """The command that writes the embedded world a dataset is (None for other data)."""
    if dataset.get("type") != WORLD_TYPE:
        return None
    a = _d(dataset.get("args"))
    if dataset.get("config") == "mmr":
        return "mmrobust mmr make-data --out mmr-world" + _flags(seed=a.get("seed"), pairs_per_category=a.get(
            "pairs_per_category"), image_size=a.get("image_size"))
    return "mmrobust generate --out world" + _flags(seed=a.get("seed"), n_train=a.get("n_train"),
                                                    n_test=a.get("n_test"), image_size=a.get("image_size"))


def data_flags(dataset: Mapping[str, Any], kind: str) -> str:
    """``--data ...`` (and ``--classes`` for the CLIP classifications) naming the data as the card shows it."""
    kind_type = str(dataset.get("type"))
    if kind_type == WORLD_TYPE:
        if dataset.get("config") == "mmr":
            return " --data mmr-world"
        split = dataset.get("split") or "test"
        return f" --data world/{split}.csv" + (" --classes world/classes.json" if kind in CLASSIFY else "")
    if str(dataset.get("name", "")).endswith("(clip_benchmark)"):
        return f" --data {_q('clip_benchmark:' + kind_type)} --data-root CLIP_BENCHMARK_ROOT"
    if dataset.get("revision") and "/" in kind_type:  # a hub dataset (MMR): its version and revision
        return _flags(version=dataset.get("config"), revision=dataset.get("revision"))
    data = "DATA" if kind_type == "unknown" else kind_type
    return f" --data {_q(data)}" + (" --classes classes.json" if kind in CLASSIFY else "")


def _open_clip(model: str) -> str:
    """An open_clip model name: a hub id (``org/name``, the card's name for a model on the hub) as ``hf-hub:``."""
    return f"hf-hub:{model}" if model.count("/") == 1 and ":" not in model else model


def _clip(rec: Mapping[str, Any], data: str, model: str) -> str:
    kind, m, p = str(rec.get("kind")), _d(rec.get("metrics")), _d(rec.get("protocol"))
    cmd = f"mmrobust eval {kind} --model {_q(_open_clip(model))}{data}"
    if kind == "robust":
        eps = ",".join(str(k) for k, v in _d(m.get("eps")).items())
        cmd += _flags(attack=m.get("attack"), norm=m.get("norm"), eps=eps, n_samples=m.get("n"), seed=m.get("seed"))
        cmd += "".join(f" --attack-opt {_q(f'{k}={v}')}" for k, v in _d(p.get("attack_options")).items()
                       if isinstance(v, (int, float, str)) and not isinstance(v, bool))
    elif kind == "backdoor":
        cmd += " --poison-record poison.json" + _flags(target=m.get("target_name"))
    return cmd


def _lvlm(rec: Mapping[str, Any], data: str, model: str) -> str:
    kind, m, p = str(rec.get("kind")), _d(rec.get("metrics")), _d(rec.get("protocol"))
    cfg = _d(rec.get("config"))
    task = str(cfg.get("task") or _d(cfg.get("settings")).get("task") or p.get("task") or kind.split("-")[0])
    action = "targeted" + _flags(target=m.get("target")) if kind == "lvlm-targeted" else "eval"
    attack = cfg.get("attack") if kind != "lvlm-targeted" and cfg.get("attack") not in (None, "apgd") else None
    seed = _d(rec.get("seeds")).get("attack", cfg.get("seed"))
    return (f"mmrobust lvlm {action} --task {_q(task)} --model {_q(model)}{data}"
            + _flags(prompt=cfg.get("prompt") if task == "mmr" else None, eps=m.get("eps_label"), steps=m.get("steps"),
                     seed=seed, max_new_tokens=_tokens(rec), parser=m.get("parser"), attack=attack))


def _tokens(rec: Mapping[str, Any]) -> Any:
    return _d(_d(rec.get("protocol")).get("decoding")).get("max_new_tokens")


def _adapter(rec: Mapping[str, Any]) -> str:
    cfg = _d(rec.get("config"))
    return str(cfg.get("adapter") or _d(cfg.get("model")).get("adapter") or "hf")


def _mllm(rec: Mapping[str, Any], data: str, model: str) -> str:
    kind, m, cfg = str(rec.get("kind")), _d(rec.get("metrics")), _d(rec.get("config"))
    head = f"--adapter {_q(_adapter(rec))} --model {_q(model)}{data}" + _flags(max_new_tokens=_tokens(rec))
    if kind == "mmr":
        s = _d(cfg.get("settings"))
        return f"mmrobust mmr run {head}" + _flags(prompt=s.get("prompt"), parser=m.get("parser"),
                                                     pairing=m.get("pairing"))
    if kind == "challenge":
        bench = cfg.get("benchmark") or cfg.get("task")
        return (f"mmrobust bench run {_q(bench)} {head}" + _flags(parser=m.get("parser"))
                + _flags(challenge=",".join(_d(m.get("per_template"))), challenge_seed=_d(rec.get("seeds")).get(
                    "wrong_option")))
    return f"mmrobust bench run {_q(kind)} {head}" + _flags(parser=m.get("parser"))


def _audit(rec: Mapping[str, Any], data: str, model: str) -> str:
    p = _d(rec.get("protocol"))
    if _d(_d(rec.get("config")).get("data")).get("instructions"):
        data = data.replace(" --data ", " --instructions ", 1)
    return (f"mmrobust audit --model {_q(_open_clip(model))}{data} --poison-record poison.json"
            + _flags(detector=",".join(str(d) for d in p.get("detectors") or []), k=p.get("k"),
                     embedding=p.get("embedding"), reference_size=p.get("reference_size")))


BUILDERS: dict[str, Callable[[Mapping[str, Any], str, str], str]] = {
    "zeroshot": _clip, "robust": _clip, "backdoor": _clip, "retrieval": _clip,
    "vqa-attack": _lvlm, "caption-attack": _lvlm, "mmr-attack": _lvlm, "lvlm-targeted": _lvlm,
    "mmr": _mllm, "vqa": _mllm, "caption": _mllm, "instruction-asr": _mllm, "challenge": _mllm, "audit": _audit,
}


def reproduce(record: Mapping[str, Any], dataset: Mapping[str, Any], *, model: str) -> tuple[list[str], str | None]:
    """``(setup commands, the command)`` that reproduce ``record`` (no command for a kind without a builder)."""
    build = BUILDERS.get(str(record.get("kind")))
    if build is None:
        return [], None
    kind = str(record.get("kind"))
    setup = world_setup(dataset)
    return ([setup] if setup else []), build(record, data_flags(dataset, kind), model) + f" --out runs/{_q(kind)}"
