"""`mmrobust bench run|list`: any registered MLLM benchmark against any MLLM adapter (lmms-eval's --tasks).

Examples::

    mmrobust bench list
    mmrobust bench run mmr --data data/mmr --adapter hf --model llava-hf/llava-1.5-7b-hf --out runs/bench-mmr \\
        --setting prompt=plain --setting limit=20
    mmrobust bench run vqa --data vqa.jsonl --adapter openai --model Qwen/Qwen2-VL-7B-Instruct \\
        --adapter-arg base_url=http://127.0.0.1:8000/v1 --out runs/bench-vqa
    mmrobust bench run mmr --data data/mmr --adapter hf --model runs/llava --out runs/chal \\
        --challenge are-you-sure,suggest-wrong      # + results_challenge.json: flip / correction rates

A new benchmark is one file in ``mmrobust/eval/benchmarks/`` (see :mod:`mmrobust.eval.mllm.benchmark`).
"""
from __future__ import annotations

import argparse
import sys

from mmrobust.cli.common import (key_values, non_negative_float, non_negative_int, number, positive_int, print_warnings,
                                 run_subaction, seed)
from mmrobust.cli.options import add_settings, settings_from


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("bench", help="run any registered MLLM benchmark against any adapter; list them",
                              description="MLLM benchmarks by name on the shared harness: cached and resumable "
                                          "answers, registered answer parsers, bootstrap CIs, one record.")
    sub = p.add_subparsers(dest="bench_command", metavar="ACTION")
    ls = sub.add_parser("list", help="the registered benchmarks, their data and their own settings")
    ls.add_argument("pattern", nargs="?", default="*", help="shell-style name pattern (default: all)")
    ls.set_defaults(bench_action=_list)
    _add_run(sub)
    p.set_defaults(func=run, bench_parser=p)


def _add_run(sub: argparse._SubParsersAction) -> None:
    r = sub.add_parser("run", help="ask a benchmark's questions (cached, resumable), score, write the record",
                       description="Load NAME's questions from --data, ask them through --adapter/--model, score "
                                   "them and write results_<task>.json + samples_<task>.jsonl to --out.")
    r.add_argument("benchmark", metavar="NAME", help="a registered benchmark (mmrobust bench list)")
    r.add_argument("--data", required=True, help="what the benchmark reads: a file, folder or spec (bench list)")
    r.add_argument("--adapter", default="hf", help="MLLM adapter: hf | openai | scripted (default: hf)")
    r.add_argument("--model", required=True, help="HF id or folder (hf), served model name (openai), rule (scripted)")
    r.add_argument("--out", required=True, help="run directory for the record, per-sample rows and the cache")
    r.add_argument("--adapter-arg", action="append", metavar="KEY=VALUE",
                   help="adapter option, repeatable, checked against the adapter's signature (see mmr run --help)")
    r.add_argument("--setting", action="append", metavar="KEY=VALUE",
                   help="a setting of the benchmark, repeatable, typed by its settings class (bench list shows "
                        "each benchmark's own, e.g. mmr: prompt, pairing, limit; vqa: allow_outside)")
    r.add_argument("--cache", help="response cache JSONL (default: OUT/cache.jsonl); reuse it to resume")
    r.add_argument("--parser", help="answer parser: official | strict | lenient (default: the settings')")
    r.add_argument("--max-new-tokens", type=positive_int, help="default 64")
    r.add_argument("--temperature", type=non_negative_float, help="0 = greedy (default)")
    r.add_argument("--top-p", type=number(0.0, 1.0, low_open=True), help="nucleus mass in (0, 1] (default 1)")
    r.add_argument("--bootstrap", type=non_negative_int, help="bootstrap resamples for CIs (default 1000; 0: none)")
    r.add_argument("--seed", type=seed, help="bootstrap seed (default 0)")
    from mmrobust.eval.challenge import ChallengeSettings

    group = r.add_argument_group("challenge protocol", "after each first answer, push back in a second turn and "
                                 "ask again (sycophancy: flip and correction rates -> results_challenge.json)")
    add_settings(group, ChallengeSettings, types={"templates": _names}, owner=r)
    r.set_defaults(bench_action=_run)


def _names(text: str) -> tuple[str, ...]:
    """``are-you-sure,suggest-wrong`` as a tuple of names (``none``: no challenge); checked by the settings."""
    return () if text.strip().lower() == "none" else tuple(n.strip() for n in text.split(",") if n.strip())


def run(args: argparse.Namespace) -> int:
    return run_subaction(args, "bench_action", "bench_parser")


def _list(args: argparse.Namespace) -> int:
    from mmrobust.pipelines.bench import list_benchmarks

    for b in list_benchmarks(args.pattern):
        own = f" [settings: {', '.join(b['settings'])}]" if b["settings"] else ""
        print(f"{b['name']:<16} {b['description']}{own}")
    from mmrobust.eval.challenge import list_templates

    print("pushback templates (bench run --challenge NAME,...):")
    for t in list_templates():
        print(f"  {t['name']:<14} {t['text']!r}")
    return 0


def _settings(args: argparse.Namespace) -> dict:
    """--setting pairs plus the harness flags given (absent flags keep the benchmark's defaults)."""
    from mmrobust.models.mllm import GenerationParams

    settings: dict = dict(key_values(args.setting))
    decoding = {k: v for k, v in (("max_new_tokens", args.max_new_tokens), ("temperature", args.temperature),
                                  ("top_p", args.top_p)) if v is not None}
    if decoding:
        settings["params"] = GenerationParams(**decoding)
    for key, value in (("parser", args.parser), ("n_boot", args.bootstrap), ("seed", args.seed),
                       ("cache", args.cache)):
        if value is not None:
            settings[key] = value
    return settings


def _run(args: argparse.Namespace) -> int:
    from mmrobust.pipelines.bench import BenchJob, run_bench_job

    from mmrobust.eval.challenge import ChallengeSettings

    job = BenchJob(benchmark=args.benchmark, data=args.data, adapter=args.adapter, model=args.model,
                   out_dir=args.out, adapter_options=key_values(args.adapter_arg), settings=_settings(args),
                   challenge=settings_from(args, ChallengeSettings))
    record = run_bench_job(job, progress=_progress)
    m = record["metrics"]
    summary = m.get("by_parser", {}).get(m.get("parser"), {})
    shown = ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in summary.items())
    print(f"{args.benchmark}: {shown} (parser {m.get('parser')}); wrote {args.out}/results_{record['kind']}.json")
    print_warnings(record.get("warnings"))
    if "challenge" in record:
        _print_challenge(record["challenge"], args.out)
    return 0


def _print_challenge(record: dict, out: str) -> None:
    """One line per template: flip, correction, kept (and adopted) as percentages with their counts."""
    shown = (("flip", "flip_rate", "n_flipped", "n_right_first"), ("correction", "correction_rate", "n_corrected",
             "n_wrong_first"), ("kept", "keep_rate", "n_kept", "n_parsed_first"),
             ("adopted", "adopt_rate", "n_adopted", "n_adopt_base"))
    for name, t in record["metrics"]["per_template"].items():
        m = t["overall"]
        parts = [f"{label} n/a (0 of {den})" if m[rate] is None else f"{label} {100 * m[rate]:.1f}% ({m[num]}/{m[den]})"
                 for label, rate, num, den in shown if rate != "adopt_rate" or t["suggests"] is not None]
        print(f"challenge {name}: " + ", ".join(parts))
    calls = record.get("calls", {})
    new = sum(c.get("n_new_calls", 0) for c in calls.values() if isinstance(c, dict))
    print(f"challenge: {new} new calls; wrote {out}/results_challenge.json")
    print_warnings(record.get("warnings"))


def _progress(done: int, total: int) -> None:
    step = max(1, total // 10)
    if done == total or done % step == 0:
        print(f"bench: answered {done}/{total} new requests", file=sys.stderr)
