"""`mmrobust mmr run|score|make-data|make-train|make-tiny-llava`: the MMR leading-question benchmark.

Examples::

    mmrobust mmr run --version v1 --adapter hf --model llava-hf/llava-1.5-7b-hf --out runs/mmr-llava
    mmrobust mmr run --version v1 --adapter openai --model Qwen/Qwen2-VL-7B-Instruct \\
        --adapter-arg base_url=http://127.0.0.1:8000/v1 --adapter-arg concurrency=16 --out runs/mmr-qwen
    mmrobust mmr score runs/mmr-qwen/samples_mmr.jsonl --parser lenient --out runs/mmr-qwen/lenient
    mmrobust mmr run --version v1 ... --pairing reference   # the leaderboard's 300 pairs, by file position
    mmrobust mmr make-train --facts data/facts.jsonl --out data/train_pairs.jsonl   # paired training data
    mmrobust mmr export --format lmms-eval --data data/mmr --out tasks   # lmms-eval --include_path tasks --tasks mmr
    mmrobust mmr score RUNS/model/DATE_samples_mmr.jsonl --format lmms-eval --data data/mmr --out runs/mmr-lmms
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mmrobust.cli.common import (key_values, non_negative_float, non_negative_int, number, positive_int, print_warnings,
                                 run_subaction, seed, with_config)
from mmrobust.errors import ConfigError


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("mmr", help="MMR leading-question benchmark for multimodal LLMs",
                              description="Ask paired POS/leading-NEG questions, score RA and MR per category.")
    sub = p.add_subparsers(dest="mmr_command", metavar="ACTION")
    _add_run(sub)
    _add_score(sub)
    _add_export(sub)
    _add_make_data(sub)
    _add_make_train(sub)
    _add_make_tiny(sub)
    p.set_defaults(func=run, mmr_parser=p)
    for action_parser in sub.choices.values():  # every action takes --config YAML, like train and eval
        with_config(action_parser, "mmr_action")


def _add_run(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="ask a model every question (cached, resumable), score, write the report")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", help="question JSON/JSONL file or folder holding it (images alongside)")
    src.add_argument("--version", choices=("v1", "mmvu"), help="published version from the HF hub (network)")
    p.add_argument("--revision", help="hub revision for --version (default: the pinned one)")
    p.add_argument("--hub-cache", help="download folder for --version (default: the HF cache)")
    p.add_argument("--image-root", help="image folder if not next to the question file")
    p.add_argument("--allow-outside-paths", action="store_true",
                   help="let image paths in the question file be absolute or leave the image folder (../); "
                        "refused by default, since the images are read and sent to the model")
    p.add_argument("--adapter", default="hf", help="hf | openai | scripted (default: hf)")
    p.add_argument("--model", required=True, help="HF id or folder (hf), served model name (openai), rule (scripted)")
    p.add_argument("--out", required=True, help="run directory for results_mmr.json, samples_mmr.jsonl, chart")
    p.add_argument("--cache", help="response cache JSONL (default: OUT/cache.jsonl); reuse it to resume")
    p.add_argument("--prompt", default="official", help="prompt variant: official | normalized | plain | letter-only")
    p.add_argument("--parser", default="official", help="answer parser: official | strict | lenient")
    _add_pairing(p, "ask every question in file order and pair by position")
    p.add_argument("--max-new-tokens", type=positive_int, default=64)
    p.add_argument("--temperature", type=non_negative_float, default=0.0, help="0 = greedy (default)")
    p.add_argument("--top-p", type=number(0.0, 1.0, low_open=True), default=1.0,
                   help="nucleus sampling mass in (0, 1] (default 1: off; used only when temperature > 0)")
    p.add_argument("--limit", type=positive_int,
                   help="only the first N pairs (by id; with --pairing reference, the first 2N rows), for smoke runs")
    p.add_argument("--bootstrap", type=non_negative_int, default=1000, help="bootstrap resamples for CIs (0: none)")
    p.add_argument("--seed", type=seed, default=0, help="bootstrap seed (and scripted replies)")
    p.add_argument("--adapter-arg", action="append", metavar="KEY=VALUE",
                   help="adapter option, repeatable, checked against the adapter's signature: hf takes device, "
                        "dtype, batch_size, revision, trust_remote_code, attn_implementation; openai takes "
                        "base_url, api_key_env, concurrency, timeout_s (total deadline per attempt), max_retries, "
                        "backoff_s, max_backoff_s, max_body_bytes, extra_body; scripted takes seed")
    p.set_defaults(mmr_action=_run)


def _add_score(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("score", help="re-score a saved responses.jsonl under any parser, or score a harness's log "
                                     "(lmms-eval, Inspect, VLMEvalKit) of MMR (no model calls)")
    p.add_argument("responses", help="samples_mmr.jsonl of a run (or a reference-format answer JSONL); with --format: "
                                     "lmms-eval's *_samples_<task>.jsonl, Inspect's .eval/.json log, or VLMEvalKit's "
                                     "prediction file (.xlsx/.tsv/.json)")
    p.add_argument("--format", default="mmrobust", choices=("mmrobust", "lmms-eval", "inspect", "vlmevalkit"),
                   help="what the file is (default: mmrobust's own samples file)")
    p.add_argument("--data", help="with --format: the MMR question file (or folder) the harness was asked from; "
                                  "every question must be answered once")
    p.add_argument("--image-root", help="with --data: image folder if not next to the question file")
    p.add_argument("--allow-outside-paths", action="store_true", help="with --data: let image paths leave the image "
                                                                      "folder (refused by default)")
    p.add_argument("--prompt", default="official", help="with --format lmms-eval / inspect: the MMR prompt variant "
                                                        "the task was exported / run with (checked against the log)")
    p.add_argument("--allow-errors", action="store_true", help="with --format: score a log whose requests partly "
                   "failed (their pairs are left out of RA / MR and counted); refused by default")
    p.add_argument("--parser", default="official", help="official | strict | lenient")
    _add_pairing(p, "pair the file's rows by their order in it")
    p.add_argument("--out", help="output folder (default: next to the file, rescored-<parser>[-reference], or "
                                 "mmrobust-<format>-<parser> with --format)")
    p.add_argument("--bootstrap", type=non_negative_int, default=1000, help="bootstrap resamples (0: none)")
    p.add_argument("--seed", type=seed, default=0)
    p.set_defaults(mmr_action=_score)


def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="write MMR for another harness: an lmms-eval task folder or a VLMEvalKit TSV",
                       description="lmms-eval: OUT/<name>/ with <name>.yaml, utils.py and mmr.jsonl (run with "
                                   "--include_path OUT --tasks <name>); vlmevalkit: OUT/<name>.tsv (set LMUData=OUT, "
                                   "run with --data <name>). Inspect needs no export: inspect eval mmrobust/mmr.")
    p.add_argument("--format", required=True, choices=("lmms-eval", "vlmevalkit"), help="which harness")
    p.add_argument("--data", required=True, help="MMR question JSON/JSONL file or folder holding it (images alongside)")
    p.add_argument("--image-root", help="image folder if not next to the question file")
    p.add_argument("--allow-outside-paths", action="store_true",
                   help="let image paths in the question file leave the image folder (refused by default)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--name", help="task name (lmms-eval; default mmr) or dataset name (vlmevalkit; default "
                                  "MMR_mmrobust)")
    p.add_argument("--prompt", default="official", help="lmms-eval: MMR prompt variant sent (official | normalized | "
                                                        "plain | letter-only | option-text)")
    p.add_argument("--parser", default="official", help="lmms-eval: answer parser its metrics use (official | strict | "
                                                        "lenient)")
    p.add_argument("--max-new-tokens", type=positive_int, default=64,
                   help="lmms-eval: the task's default (its --gen_kwargs max_new_tokens=N overrides it)")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier export in --out (only one this "
                                                            "command wrote)")
    p.set_defaults(mmr_action=_export)


def _add_pairing(p: argparse.ArgumentParser, reference: str) -> None:
    p.add_argument("--pairing", choices=("id", "reference"), default="id",
                   help=f"how questions pair up: id (default; a POS/POS pair is an anomaly, left out) or reference "
                        f"({reference}, as the leaderboard's scorer; corrections are listed in the results)")


def _add_make_data(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("make-data", help="write the offline synthetic MMR set (questions.json + images/)")
    p.add_argument("--out", required=True)
    p.add_argument("--pairs-per-category", type=positive_int, default=6)
    p.add_argument("--image-size", type=positive_int, default=64)
    p.add_argument("--seed", type=seed, default=0)
    p.add_argument("--quirks", action="store_true", help="reproduce the real files' quirks (for testing loaders)")
    p.add_argument("--overwrite", action="store_true", help="replace questions.json, world.json and the images of "
                   "an earlier set in --out (only one make-data wrote)")
    p.set_defaults(mmr_action=_make_data)


def _add_make_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("make-train", help="write MMR-style paired training data (straightforward + leading twins)",
                       description="One source: fresh world scenes (--images), a JSONL of image facts (--facts), "
                                   "or a JSONL of image captions written up by an LLM (--captions, cached).")
    p.add_argument("--out", required=True, help="folder (--images) or .jsonl file beside the input (--facts, --captions)")
    p.add_argument("--images", type=positive_int, help="number of fresh world scenes")
    p.add_argument("--facts", help='JSONL of {"image": ..., "facts": {"shape": ..., "colour": ..., ...}} lines')
    p.add_argument("--captions", help='JSONL of {"image": ..., "caption": ...} lines for the writer LLM')
    p.add_argument("--leading-share", type=number(0.0, 1.0), default=1.0,
                   help="share of straightforward questions that get a leading twin (0 = control set; default 1)")
    p.add_argument("--answer-format", choices=("letter+text", "text"), default="letter+text",
                   help="answers as 'X. text' (default) or the option's text (--images only)")
    p.add_argument("--seed", type=seed, default=0)
    p.add_argument("--adapter", default="openai", help="writer adapter for --captions (default: openai)")
    p.add_argument("--writer-model", default="", help="writer model name for --captions (e.g. gpt-4o)")
    p.add_argument("--adapter-arg", action="append", metavar="KEY=VALUE",
                   help="writer adapter option, repeatable (openai: base_url, api_key_env, ...)")
    p.add_argument("--cache", help="writer reply cache JSONL (default: beside --out); reuse it to rerun offline")
    p.add_argument("--allow-outside-paths", action="store_true",
                   help="let image paths in --facts / --captions be absolute or leave the file's folder (refused by "
                        "default: the images are read, and sent to the writer)")
    p.add_argument("--overwrite", action="store_true", help="with --images: replace train.jsonl, mmr_train.json and "
                   "the images of an earlier set in --out (only one make-train wrote)")
    p.set_defaults(mmr_action=_make_train)


def _add_make_tiny(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("make-tiny-llava", help="save a tiny random LLaVA (loads with AutoModelForImageTextToText)")
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=seed, default=0)
    p.add_argument("--image-size", type=positive_int, default=32)
    p.add_argument("--data", help="MMR question file/folder whose words join the vocabulary")
    p.set_defaults(mmr_action=_make_tiny)


def run(args: argparse.Namespace) -> int:
    return run_subaction(args, "mmr_action", "mmr_parser")


def _run(args: argparse.Namespace) -> int:
    from mmrobust.eval.mmr import RunSettings, format_table
    from mmrobust.models.mllm import GenerationParams
    from mmrobust.pipelines.mmr import MMRJob, MMRSource, run_mmr_job

    source = MMRSource(data=args.data, version=args.version, revision=args.revision, hub_cache=args.hub_cache,
                       image_root=args.image_root, limit=args.limit, allow_outside=args.allow_outside_paths)
    params = GenerationParams(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p)
    settings = RunSettings(prompt=args.prompt, parser=args.parser, n_boot=args.bootstrap, seed=args.seed,
                           cache=args.cache, params=params, pairing=args.pairing)
    job = MMRJob(source=source, adapter=args.adapter, model=args.model, out_dir=args.out, settings=settings,
                 adapter_options=key_values(args.adapter_arg))
    record = run_mmr_job(job, progress=_progress, log=lambda m: print(m, file=sys.stderr))
    _print_summary(record, Path(args.out), format_table)
    return 0


def _progress(done: int, total: int) -> None:
    step = max(1, total // 10)
    if done == total or done % step == 0:
        print(f"mmr: answered {done}/{total} new requests", file=sys.stderr)


def _print_summary(record: dict, out: Path, format_table) -> None:
    m = record["metrics"]
    print(format_table(m))
    calls = record.get("calls")
    if calls:
        print(f"requests {calls['n_requests']}: {calls['n_cached_before']} from cache, "
              f"{calls['n_new_calls']} new, {calls['n_errors']} errors")
    anomalies = record.get("anomalies", []) + m.get("pairing_anomalies", [])
    if anomalies:
        print(f"{len(anomalies)} data anomalies (see results.json), e.g.: {anomalies[0]['detail']}")
    corrections = m.get("reference_corrections", [])
    print(f"pairing {m.get('pairing', 'id')}: {m['overall']['n_pairs']} pairs scored"
          + (f", {len(corrections)} paired by position despite ids/tags, e.g.: {corrections[0]['detail']}"
             if corrections else ""))
    print(f"parser {m['parser']}; other parsers: " + ", ".join(
        f"{k} RA={v['ra']:.3f}" if v["ra"] is not None else f"{k} RA=n/a" for k, v in m["by_parser"].items()))
    files = [out / "results_mmr.json", out / record["files"].get("samples", "samples_mmr.jsonl"),
             *(out / p for p in record["files"]["plots"])]
    print("wrote " + ", ".join(map(str, files)))
    print_warnings(record.get("warnings"))


def _score(args: argparse.Namespace) -> int:
    from mmrobust.eval.mmr import format_table, score_responses

    if args.format != "mmrobust":
        return _score_harness(args, format_table)
    if args.data:
        raise ConfigError("--data goes with --format lmms-eval | inspect | vlmevalkit; a samples_mmr.jsonl carries its "
                          "questions")
    suffix = "" if args.pairing == "id" else f"-{args.pairing}"  # modes never share a folder
    out = Path(args.out) if args.out else Path(args.responses).parent / f"rescored-{args.parser}{suffix}"
    record = score_responses(args.responses, out_dir=out, parser=args.parser, n_boot=args.bootstrap, seed=args.seed,
                             pairing=args.pairing)
    _print_summary(record, out, format_table)
    return 0


def _score_harness(args: argparse.Namespace, format_table) -> int:
    from mmrobust.integrations.score import score_harness_log

    if args.pairing != "id":
        raise ConfigError("--pairing reference needs the file order of a full run; harness logs pair by id")
    if not args.data:
        raise ConfigError(f"--format {args.format} needs --data: the MMR question file the harness was asked from")
    out = Path(args.out) if args.out else Path(args.responses).parent / f"mmrobust-{args.format}-{args.parser}"
    record = score_harness_log(args.responses, harness=args.format, data=args.data, out_dir=out,
                               image_root=args.image_root, allow_outside=args.allow_outside_paths, prompt=args.prompt,
                               parser=args.parser, n_boot=args.bootstrap, seed=args.seed,
                               allow_errors=args.allow_errors)
    _print_summary(record, out, format_table)
    return 0


def _export(args: argparse.Namespace) -> int:
    from mmrobust.eval.mmr import load_mmr

    data = load_mmr(args.data, image_root=args.image_root, allow_outside=args.allow_outside_paths)
    if args.format == "lmms-eval":
        from mmrobust.integrations.lmms_eval import export_lmms_eval

        path = export_lmms_eval(data, out_dir=args.out, task=args.name or "mmr", prompt=args.prompt,
                                parser=args.parser, max_new_tokens=args.max_new_tokens, overwrite=args.overwrite)
        print(f"wrote {path} ({2 * len(data.pairs)} questions); run: lmms-eval --include_path {Path(args.out)} "
              f"--tasks {args.name or 'mmr'} --model openai --model_args model=MODEL,base_url=URL --log_samples "
              "--output_path RUNS")
        return 0
    from mmrobust.integrations.vlmevalkit import export_vlmevalkit

    name = args.name or "MMR_mmrobust"
    path = export_vlmevalkit(data, out_dir=args.out, name=name, overwrite=args.overwrite)
    print(f"wrote {path} ({2 * len(data.pairs)} questions); run VLMEvalKit: LMUData={Path(args.out)} python run.py "
          f"--data {name} --model MODEL; then: mmrobust mmr score MODEL_{name}.xlsx --format vlmevalkit "
          f"--data {args.data}")
    return 0


def _make_data(args: argparse.Namespace) -> int:
    from mmrobust.world.mmr import generate_mmr_world

    qfile = generate_mmr_world(args.out, pairs_per_category=args.pairs_per_category, seed=args.seed,
                               image_size=args.image_size, inject_quirks=args.quirks, overwrite=args.overwrite)
    print(f"wrote {qfile} and {qfile.parent / 'images'}")
    return 0


def _make_train(args: argparse.Namespace) -> int:
    from mmrobust.pipelines.llm_pairs import PairsJob, run_pairs_job

    job = PairsJob(out=args.out, images=args.images or 0, facts=args.facts, captions=args.captions,
                   leading_share=args.leading_share, seed=args.seed, answer_format=args.answer_format,
                   writer=args.adapter, writer_model=args.writer_model, writer_options=key_values(args.adapter_arg),
                   cache=args.cache, allow_outside=args.allow_outside_paths, overwrite=args.overwrite)
    result = run_pairs_job(job)
    print(f"wrote {result['n_rows']} rows to {result['path']}")
    if "calls" in result:
        c = result["calls"]
        print(f"writer: {c['n_requests']} captions, {c['n_cached_before']} from cache, {c['n_new_calls']} new calls, "
              f"{len(result['skipped'])} replies refused" + (f" (first: {result['skipped'][0]['why']})"
                                                           if result["skipped"] else ""))
    return 0


def _make_tiny(args: argparse.Namespace) -> int:
    from mmrobust.pipelines.mmr import make_tiny_llava

    path = make_tiny_llava(args.out, seed=args.seed, image_size=args.image_size, vocabulary_from=args.data)
    print(f"wrote a tiny random LLaVA to {path} (use: --adapter hf --model {path})")
    return 0
