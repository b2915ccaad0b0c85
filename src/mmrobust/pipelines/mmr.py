"""`mmrobust mmr run` and `make-tiny-llava` as typed library functions (the CLI only parses into these)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from mmrobust.errors import ConfigError


@dataclass(frozen=True)
class MMRSource:
    """Where the questions come from: a local file or folder (``data``), or a published ``version``
    from the Hugging Face hub (``v1``, ``mmvu``) at ``revision``; ``limit`` keeps the first N pairs;
    ``allow_outside`` lets image paths leave the image folder (refused by default)."""

    data: str | None = None
    version: str | None = None
    revision: str | None = None
    hub_cache: str | None = None
    image_root: str | None = None
    limit: int | None = None
    allow_outside: bool = False  # image paths outside the image root (absolute, ../): refused unless True

    def load(self, *, pairing: str = "id") -> Any:
        """The dataset, cut to ``limit`` pairs as ``pairing`` counts them (by id, or by file position)."""
        from mmrobust.eval.mmr import load_hub_version, load_mmr

        if (self.data is None) == (self.version is None):
            raise ConfigError("give exactly one of --data (a local question file) or --version (v1, mmvu)")
        if self.limit is not None and (isinstance(self.limit, bool) or not isinstance(self.limit, int)
                                       or self.limit <= 0):
            raise ConfigError(f"--limit must be a positive integer, got {self.limit!r}")
        if self.version:
            data = load_hub_version(self.version, revision=self.revision, cache_dir=self.hub_cache)
        else:
            data = load_mmr(self.data, image_root=self.image_root, allow_outside=self.allow_outside)
        return data.select(self.limit, pairing=pairing)


@dataclass(frozen=True)
class MMRJob:
    """One MMR run: questions, adapter (name, model, options checked against its signature), settings."""

    source: MMRSource
    adapter: str
    model: str
    out_dir: str
    adapter_options: dict[str, Any] = field(default_factory=dict)
    settings: Any = None  # eval.mmr.RunSettings; None: the defaults


def public_options(options: dict[str, Any]) -> dict[str, Any]:
    """Adapter options safe to record: anything named like a key or secret is left out."""
    return {k: v for k, v in options.items()
            if k == "api_key_env" or not any(s in k.lower() for s in ("key", "secret", "token", "password"))}


def run_mmr_job(job: MMRJob, *, progress: Callable[[int, int], None] | None = None,
                log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Load the questions, build the adapter, ask, score and write the record; returns it."""
    from mmrobust.eval.mmr import RunSettings, run_mmr
    from mmrobust.models.mllm import adapter_options, build_adapter

    settings = job.settings or RunSettings()
    data = job.source.load(pairing=settings.pairing)
    options = adapter_options(job.adapter, job.adapter_options)
    adapter = build_adapter(job.adapter, model=job.model, options=options)
    if log is not None:
        log(f"mmr: {len(data.pairs)} pairs by id, {len(data.items)} items ({len(data.anomalies)} anomalies), "
            f"pairing {settings.pairing} -> {job.adapter}:{job.model}")
    return run_mmr(data, adapter, out_dir=job.out_dir, settings=settings, progress=progress,
                   config={"adapter": job.adapter, "adapter_args": public_options(options)})


def make_tiny_llava(out_dir: str | Path, *, seed: int = 0, image_size: int = 32, vocabulary_from: str | None = None
                    ) -> Path:
    """A tiny random LLaVA saved like a hub checkpoint; words of an MMR question file join its vocabulary.
    ``out_dir`` must be new or empty: its files are never written over."""
    from mmrobust.world.llava import build_tiny_llava

    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"--out {out} exists and is not an empty folder; choose a new --out (make-tiny-llava "
                          "never writes over files)")

    words: list[str] = []
    if vocabulary_from:
        from mmrobust.eval.mmr import load_mmr

        words = [i.question for i in load_mmr(vocabulary_from, check_images=False).items]
    return build_tiny_llava(out_dir, seed=seed, image_size=image_size, extra_words=words)
