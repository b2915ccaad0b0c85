"""Bookkeeping shared by the harness exports: refuse to write over files mmrobust did not write, mark the
folder as an export (``export.json``: generator, harness, the questions' file and hash, settings), and
write text files atomically (a kill never leaves half a task file)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

from mmrobust.errors import DataError
from mmrobust.eval.mmr.dataset import MMRDataset
from mmrobust.jsonio import write_json
from mmrobust.safety import check_replace

GENERATOR = "mmrobust.integrations"  # export.json's generator in a folder an export wrote
MARKER = "export.json"


def start_export(root: Path, files: Sequence[str], *, overwrite: bool, harness: str, data: MMRDataset,
                 settings: dict[str, Any]) -> None:
    """Check ``root`` may take ``files`` (an earlier export there is replaced only with ``overwrite``), then
    write its marker first, so a later ``--overwrite`` knows the folder is ours."""
    if not data.pairs:
        first = f" (first problem: {data.anomalies[0]['detail']})" if data.anomalies else ""
        raise DataError(f"{data.source.get('questions_file', 'the MMR data')} holds no valid POS/NEG pair to "
                        f"export{first}; check the question file and its images")
    found = [f for f in (*files, MARKER) if (root / f).exists()]
    check_replace(root, found, marker=MARKER, generator=GENERATOR, overwrite=overwrite)
    root.mkdir(parents=True, exist_ok=True)
    write_json(root / MARKER, {"generator": GENERATOR, "harness": harness, "files": list(files),
                               "questions_file": data.source.get("questions_file"),
                               "questions_sha256": data.source.get("questions_sha256"),
                               "n_pairs": len(data.pairs), "n_questions": 2 * len(data.pairs), "settings": settings})


def write_text(path: Path, text: str) -> Path:
    """``text`` to ``path`` through a temp file and a rename."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path
