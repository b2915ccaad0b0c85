"""The published MMR versions on the Hugging Face hub (CC-BY-4.0), fetched at a pinned revision.

Only this module touches the network, and only when a user asks for ``--version``. The question
file and the image zip are downloaded with ``huggingface_hub`` (imported lazily), the zip is
unpacked next to them, and the commit that was actually resolved is recorded with the results.
"""
from __future__ import annotations

import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

from mmrobust.eval.mmr.dataset import MMRDataset, load_mmr
from mmrobust.errors import ConfigError, DataError

REPO_ID = "BAAI/Multimodal-Robustness-Benchmark"


@dataclass(frozen=True)
class HubVersion:
    """Where one task version lives on the hub and how many pairs it should have."""

    name: str
    repo_id: str
    revision: str
    questions: str
    images_zip: str
    expected_pairs: int
    note: str


VERSIONS: dict[str, HubVersion] = {
    # v1: the 300-pair benchmark of the paper (upload of 2024-06-12, README fix of 2024-06-14).
    "v1": HubVersion("v1", REPO_ID, "5ba1c42170b323a0b41ffbf746baad9250da974d",
                     "MMR-benchmark/MMR-benchmark.json", "MMR-benchmark/MMR-benchmark-images.zip", 300,
                     "MMR v1, 300 POS/NEG pairs, 12 categories"),
    # MMVU: the enlarged set that replaced the same two files in hub PR #9 (merged 2024-08-17).
    # "refs/pr/9" is that PR's head; pass --revision <commit sha> to pin a full hash.
    "mmvu": HubVersion("mmvu", REPO_ID, "refs/pr/9",
                       "MMR-benchmark/MMR-benchmark.json", "MMR-benchmark/MMR-benchmark-images.zip", 893,
                       "MMVU, the later 893-pair set"),
}


def load_hub_version(
    version: str, *, revision: str | None = None, cache_dir: str | Path | None = None,
) -> MMRDataset:
    """Download (or reuse the cached copy of) one published version and load it like a local folder."""
    if version not in VERSIONS:
        raise ConfigError(f"unknown MMR version {version!r}; choose one of: {', '.join(VERSIONS)}")
    spec = VERSIONS[version]
    rev = revision or spec.revision
    try:
        from huggingface_hub import hf_hub_download
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ConfigError("loading MMR from the hub needs huggingface_hub; pip install huggingface_hub, "
                          "or pass --data with a local copy") from e
    try:
        qfile = Path(hf_hub_download(spec.repo_id, spec.questions, repo_type="dataset", revision=rev,
                                     cache_dir=cache_dir))
        zfile = Path(hf_hub_download(spec.repo_id, spec.images_zip, repo_type="dataset", revision=rev,
                                     cache_dir=cache_dir))
    except Exception as e:  # network, auth, unknown revision: all user-fixable
        raise DataError(f"could not fetch MMR {version} at {rev} from {spec.repo_id} ({type(e).__name__}: {e}); "
                        "check the network/revision or pass --data with a local copy") from e
    image_root = _unpack(zfile)
    source = {"kind": "hub", "version": version, "repo_id": spec.repo_id, "revision": rev,
              "resolved_commit": _commit_from_path(qfile), "note": spec.note}
    return load_mmr(qfile, image_root=image_root, expected_pairs=spec.expected_pairs, source=source)


def _unpack(zfile: Path) -> Path:
    """Unpack the image zip once, next to it (the hub cache is content-addressed, so this is stable)."""
    target = zfile.parent / (zfile.stem + "-unpacked")
    done = target / ".complete"
    if not done.exists():
        try:
            with zipfile.ZipFile(zfile) as zf:
                zf.extractall(target)
        except zipfile.BadZipFile as e:
            raise DataError(f"{zfile} is not a valid zip ({e}); delete it and download again") from e
        done.write_text("ok\n")
    return target


def _commit_from_path(path: Path) -> str | None:
    """The commit hash in a hub cache path (``.../snapshots/<sha>/...``), if there is one."""
    m = re.search(r"snapshots[/\\]([0-9a-f]{40})[/\\]", str(path))
    return m.group(1) if m else None
