"""An lmms-eval task folder bound to one MMR question file (lmms-eval loads tasks offline only from data it
can read: here ``dataset_path: json`` over the folder's ``mmr.jsonl``, resolved next to the YAML).

The folder holds ``<task>.yaml`` and ``utils.py`` (the package's ``lmms_eval/mmr`` template),
``mmr.jsonl`` (one document per question of a valid pair, POS then NEG, with the prompt mmrobust sends,
the image path and the parser) and ``export.json``. Run it with::

    lmms-eval --include_path OUT --tasks mmr --model openai \\
        --model_args model=MODEL,base_url=http://127.0.0.1:8000/v1 --log_samples --output_path RUNS
"""
from __future__ import annotations

import json
import re
from importlib import resources
from pathlib import Path

from mmrobust.errors import ConfigError
from mmrobust.eval.mmr.dataset import MMRDataset
from mmrobust.eval.mmr.prompts import get_prompt
from mmrobust.integrations.exports import start_export, write_text
from mmrobust.integrations.replies import harness_questions
from mmrobust.registry import PARSERS

DATA_FILE = "mmr.jsonl"
_TASK_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}")


def template(name: str) -> str:
    """A file of the shipped task folder (``mmr.yaml`` or ``utils.py``)."""
    return (resources.files("mmrobust.integrations.lmms_eval") / "mmr" / name).read_text(encoding="utf-8")


def documents(data: MMRDataset, *, prompt: str, parser: str) -> list[dict]:
    """One lmms-eval document per question the export asks (see ``functions``)."""
    return [{**{k: q.columns[k] for k in ("id", "question_type", "category", "level")}, "uid": q.uid,
             "ground_truth": q.ground_truth, "options": json.dumps(dict(q.options), sort_keys=True),
             "image": str(Path(q.image).resolve()), "prompt": q.prompt, "prompt_variant": prompt, "parser": parser}
            for q in harness_questions(data, prompt=prompt)]


def export_lmms_eval(data: MMRDataset, *, out_dir: str | Path, task: str = "mmr", prompt: str = "official",
                     parser: str = "official", max_new_tokens: int = 64, overwrite: bool = False) -> Path:
    """Write the task folder ``out_dir/<task>`` for ``data``; returns it (pass ``out_dir`` as ``--include_path``).
    ``max_new_tokens`` is the task's default (lmms-eval's ``--gen_kwargs`` overrides it); decoding is greedy."""
    if not _TASK_NAME.fullmatch(task):
        raise ConfigError(f"task name {task!r}: use letters, digits and '_' (starting with a letter), e.g. mmr_v1")
    get_prompt(prompt)
    PARSERS.get(parser)
    if max_new_tokens < 1:
        raise ConfigError(f"max_new_tokens {max_new_tokens}: give a positive number of tokens")
    root = Path(out_dir) / task
    files = [f"{task}.yaml", "utils.py", DATA_FILE]
    start_export(root, files, overwrite=overwrite, harness="lmms-eval", data=data,
                 settings={"task": task, "prompt": prompt, "parser": parser, "max_new_tokens": max_new_tokens})
    docs = documents(data, prompt=prompt, parser=parser)
    write_text(root / DATA_FILE, "".join(json.dumps(d, ensure_ascii=False) + "\n" for d in docs))
    write_text(root / "utils.py", template("utils.py"))
    yaml_text = template("mmr.yaml").replace("\ntask: mmr\n", f"\ntask: {task}\n", 1)
    yaml_text = yaml_text.replace("max_new_tokens: 64\n", f"max_new_tokens: {max_new_tokens}\n", 1)
    write_text(root / f"{task}.yaml", yaml_text)
    return root
