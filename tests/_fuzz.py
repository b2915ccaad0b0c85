"""Helpers of the fuzz suites: run the CLI in process and check how it failed."""
from __future__ import annotations

import contextlib
import hashlib
import io
import os
import re
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from mmrobust.cli.main import main

# derandomized: CI sees the same examples every run; no example database written into the tree
FUZZ = settings(max_examples=25, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
ERROR_LINE = re.compile(r"^mmrobust[\w -]*: error: .{10,}$")

# values a careless or hostile user types: signs, zeros, overflow, non-finite, fractions, junk
HOSTILE = st.one_of(
    st.sampled_from(["-1", "0", "-0.5", "1e309", "nan", "inf", "-inf", "abc", "", " ", "4/0", "4/255", "1e-3",
                     "99999999999999999999999", str(2**64), "0x10", "1,2", ",", "'", '"', "1.5", "-4/255", "true",
                     "../../etc/passwd", "/etc/passwd", "{a: 1}", "[1, 2]", "\t", ";;", "é"]),
    st.text(alphabet=st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), max_size=12),
)


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of ``mmrobust ARGV`` in this process; argparse exits become codes."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main(argv)
        except SystemExit as e:  # argparse: usage + one error line, exit 2
            rc = e.code if isinstance(e.code, int) else 2
    return rc, out.getvalue(), err.getvalue()


def assert_clean_failure(rc: int, err: str) -> None:
    """Succeeded, or failed with exit 2 and exactly one error line (no traceback)."""
    assert "Traceback" not in err, err[-3000:]
    assert rc in (0, 2), (rc, err[-2000:])
    if rc == 2:
        errors = [ln for ln in err.splitlines() if ": error:" in ln]
        assert len(errors) == 1 and ERROR_LINE.match(errors[0]), err[-2000:]


def snapshot(root: Path) -> dict[str, str]:
    """Relative path -> sha256 of every regular file under ``root``."""
    out = {}
    for dirpath, _, files in os.walk(root):
        for name in files:
            p = Path(dirpath) / name
            if p.is_file() and not p.is_symlink():
                out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out
