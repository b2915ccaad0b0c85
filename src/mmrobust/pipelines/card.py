"""`mmrobust card`: every evaluation that fits a model, on one page, in one resumable folder.

The model's kind is detected (:func:`~mmrobust.pipelines.card_model.detect_kind`: an open_clip CLIP or a
LLaVA-family LVLM) and every registered section of that kind (``registry.CARD_SECTIONS``:
:mod:`~mmrobust.pipelines.card_clip`, :mod:`~mmrobust.pipelines.card_lvlm`) runs as an ordinary run directory
``OUT/<section>`` through :func:`~mmrobust.pipelines.stages.run_stage`, keyed by its settings and the model's
identity: a rerun reuses every finished section and reruns only missing or changed ones; an interrupted section
resumes from its partial files. Then ``card.json`` (the summary lines with their verdicts, each section's status
and headline numbers) and ``card.html`` (:mod:`mmrobust.reports.card_page`), and, on request, a Hugging Face
model card (:mod:`mmrobust.reports.model_card`).

The card folder is the tool's: an ``--out`` that holds anything else (no marker file of the card) is refused,
and nothing there that the card did not write is ever deleted. A model that fails to load stops the card with
one line before anything is written but what was already finished.

Example::

    res = run_card(CardJob(model="runs/fare/model", out_dir="runs/card-fare", reference="runs/clip/model"))
    print("\\n".join(v.line for v in res.summary))      # one line per threat, with its verdict
"""
from __future__ import annotations

import importlib.util
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from mmrobust.errors import ConfigError
from mmrobust.jsonio import write_json
from mmrobust.pipelines.card_model import detect_kind, model_identity
from mmrobust.pipelines.card_sections import CardContext, CardSection, Verdict
from mmrobust.pipelines.card_settings import THRESHOLD_KINDS, THRESHOLD_RULES, CardJob
from mmrobust.pipelines.stages import run_stage, stage_done
from mmrobust.registry import CARD_SECTIONS
from mmrobust.safety import is_own_record

MARKER = ".mmrobust-card.json"  # written first into a card folder: the folder is the card's
GENERATOR = "mmrobust card"
MODEL_CARD_MODULE = "mmrobust.reports.model_card"
_DATA_KIND = {"data": "clip", "classes": "clip", "audit_data": "clip", "poison_record": "clip", "vqa": "lvlm",
              "captions": "lvlm", "mmr": "lvlm", "target": "lvlm"}  # which model kind a CardData field is for


def all_sections() -> list[CardSection]:
    """Every registered card section, in page order."""
    return sorted((CARD_SECTIONS.get(n) for n in CARD_SECTIONS.list()), key=lambda s: (s.order, s.name))


def sections_for(kind: str, wanted: Sequence[str] = ()) -> list[CardSection]:
    """The sections of ``kind`` (clip / lvlm) to run: all of them, or those ``wanted`` (one-line errors for an
    unknown name or one of the other kind)."""
    mine = [s for s in all_sections() if s.kind == kind]
    names = ", ".join(s.name for s in mine)
    for name in wanted:
        section = CARD_SECTIONS.get(name)  # unknown: one line with every registered name
        if section.kind != kind:
            raise ConfigError(f"section {name!r} is for {section.kind.upper()} models and this model is a(n) "
                              f"{kind.upper()}; choose among: {names}")
    return [s for s in mine if not wanted or s.name in wanted]


@dataclass(frozen=True)
class SectionResult:
    """What one section did: ran, reused (finished before with the same settings and model) or skipped (why)."""

    name: str
    title: str
    description: str
    status: str
    folder: str
    reason: str = ""
    seconds: float = 0.0
    output: dict[str, Any] = field(default_factory=dict)
    verdicts: tuple[Verdict, ...] = ()


@dataclass(frozen=True)
class CardResult:
    """The card's sections, its summary lines and the files written."""

    kind: str
    sections: tuple[SectionResult, ...]
    summary: tuple[Verdict, ...]
    card_json: Path
    page: Path
    model_card: Path | None = None


def prepare_out(out: Path) -> None:
    """Make ``out`` the card folder: new, empty, or one a card wrote (its marker); anything else is refused."""
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise ConfigError(f"--out {out} is not a folder; give a new or empty folder for the card")
    marker = out / MARKER
    if out.is_dir() and not is_own_record(marker, GENERATOR):
        found = sorted(p.name for p in out.iterdir())
        if found:
            listed = ", ".join(found[:3]) + (f" (+{len(found) - 3} more)" if len(found) > 3 else "")
            raise ConfigError(f"--out {out} holds files mmrobust card did not write ({listed}); give a new or empty "
                              "folder (the card writes only into a folder it made)")
    out.mkdir(parents=True, exist_ok=True)
    if not marker.is_file():
        write_json(marker, {"generator": GENERATOR, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")})


def check_job(job: CardJob) -> str:
    """Everything refusable before any work: the model's kind, the reference, data flags of the other kind,
    the sections, the model-card writer. Returns the kind."""
    kind = detect_kind(job.model, kind=job.kind, pretrained=job.pretrained)
    given = [f"--{k.replace('_', '-')}" for k, want in _DATA_KIND.items() if getattr(job.data, k) and want != kind]
    if kind == "lvlm" and job.reference:
        given.append("--reference")
    if given:
        other = "LVLM" if kind == "clip" else "CLIP"
        raise ConfigError(f"{', '.join(given)} {'is' if len(given) == 1 else 'are'} for {other} models and "
                          f"{job.model} is a(n) {kind.upper()}; drop {'it' if len(given) == 1 else 'them'}")
    if job.reference and detect_kind(job.reference, pretrained=job.reference_pretrained) != "clip":
        raise ConfigError(f"--reference {job.reference} is not a CLIP; give the original CLIP the model was tuned from")
    sections_for(kind, job.sections)
    if job.model_card and importlib.util.find_spec(MODEL_CARD_MODULE) is None:
        raise ConfigError(f"--model-card needs {MODEL_CARD_MODULE}, which this install lacks; drop --model-card")
    return kind


def run_section(ctx: CardContext, section: CardSection) -> SectionResult:
    """Plan ``section``; reuse its finished stage, or load the model (first: a model that does not load leaves
    nothing behind) and run it as a resumable stage; read its verdicts."""
    start = time.perf_counter()
    folder = ctx.out / section.name
    info = {"name": section.name, "title": section.title, "description": section.description, "folder": str(folder)}
    plan = section.plan(ctx)
    if isinstance(plan, str):
        ctx.log(f"[card] {section.name}: skipped ({plan})")
        return SectionResult(**info, status="skipped", reason=plan)
    config = {"section": section.name, "model": ctx.identity, "settings": plan.config}
    reused = stage_done(folder, config)
    if not reused:
        ctx.load(section.model)
        ctx.log(f"[card] {section.name}: running")
    output = run_stage(folder, config, lambda: plan.run(folder))
    seconds = round(time.perf_counter() - start, 1)
    ctx.log(f"[card] {section.name}: " + ("reused" if reused else f"ran ({seconds} s)"))
    return SectionResult(**info, status="reused" if reused else "ran", seconds=seconds, output=output,
                         verdicts=tuple(section.verdicts(ctx, output)))


def run_card(job: CardJob, *, log: Callable[[str], None] = print) -> CardResult:
    """Run (or reuse) every section of the card, then write ``card.json``, ``card.html`` and, with
    ``job.model_card``, the Hugging Face model card; see the module docstring."""
    kind = check_job(job)
    out = Path(job.out_dir)
    prepare_out(out)
    ctx = CardContext(job, kind=kind, identity=model_identity(job.model, job.pretrained), log=log)
    results = tuple(run_section(ctx, s) for s in sections_for(kind, job.sections))
    summary = tuple(v for r in results for v in r.verdicts)
    card_json = write_json(out / "card.json", card_record(job, kind, ctx.identity, results))
    page = write_page(job, kind, results, out / "card.html")
    model_card = write_hf_model_card(job, results) if job.model_card else None
    return CardResult(kind, results, summary, card_json, page, model_card)


def card_record(job: CardJob, kind: str, identity: dict[str, Any], results: Sequence[SectionResult]
                ) -> dict[str, Any]:
    """What ``card.json`` holds: the model, budget, thresholds, the summary lines and every section's outcome."""
    from mmrobust.reports.protocol import eps_label
    from mmrobust.reports.records import git_sha, package_versions

    sections = [{k: v for k, v in asdict(r).items() if k != "verdicts"} for r in results]
    return {"generator": GENERATOR, "model": job.model, "kind": kind, "identity": identity,
            "headline_eps": job.headline_eps, "headline_eps_label": eps_label(job.headline_eps),
            "budget": asdict(job.budget), "thresholds": asdict(job.thresholds), "threshold_rules": THRESHOLD_RULES,
            "summary": [v.to_dict() for r in results for v in r.verdicts], "sections": sections,
            "data": asdict(job.data), "seed": job.seed, "git_sha": git_sha(),
            "mmrobust": package_versions().get("mmrobust"), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def _facts(job: CardJob, kind: str) -> list[tuple[str, str]]:
    from mmrobust.reports.protocol import eps_label

    b = job.budget
    attack = (f"CLIP: {b.attack}, {b.steps} steps, {b.n_robust} images, l-inf eps {', '.join(map(eps_label, b.eps))}"
              if kind == "clip" else f"LVLM: APGD on the LM loss, {b.lvlm_steps} steps (targeted {b.targeted_steps}), "
                                     f"l-inf {eps_label(job.headline_eps)}")
    facts = [("model", job.model + (f" (pretrained {job.pretrained})" if job.pretrained else "")),
             ("kind", "CLIP (open_clip)" if kind == "clip" else "LVLM (LLaVA family, HF transformers)"),
             ("budget", f"{b.name}: {attack}"), ("headline eps", eps_label(job.headline_eps)),
             ("thresholds", ", ".join(f"{k} {v:g} (FAIL {'below' if THRESHOLD_RULES[k] == 'min' else 'above'})"
                                      for k, v in asdict(job.thresholds).items()
                                      if THRESHOLD_KINDS.get(k, "lvlm") == kind))]
    if job.reference:
        facts.append(("reference", job.reference))
    return facts + [("seed", str(job.seed)), ("created", time.strftime("%Y-%m-%d %H:%M"))]


def write_page(job: CardJob, kind: str, results: Sequence[SectionResult], path: Path) -> Path:
    from mmrobust.reports.card_page import write_card_page

    notes = ["Each section is a run directory of this folder; a rerun of the same command reuses every finished "
             "section. Thresholds: --threshold NAME=VALUE (min: FAIL below, max: FAIL above)."]
    return write_card_page(path, title=f"Robustness card: {job.model}", facts=_facts(job, kind),
                           summary=[v.to_dict() for r in results for v in r.verdicts],
                           sections=[asdict(r) for r in results], notes=notes)


def section_records(results: Sequence[SectionResult]) -> list[dict[str, Any]]:
    """The results*.json records of every section that ran or was reused."""
    from mmrobust.jsonio import read_json

    return [read_json(p) for r in results if r.status != "skipped"
            for p in sorted(Path(r.folder).glob("results*.json"))]


def write_hf_model_card(job: CardJob, results: Sequence[SectionResult]) -> Path:
    """The Hugging Face model card (``OUT/model_card/README.md`` unless ``job.model_card_path``) from the
    sections' records (:func:`mmrobust.reports.model_card.write_model_card`)."""
    from mmrobust.reports.model_card import write_model_card  # type: ignore[import-not-found, unused-ignore]

    path = Path(job.model_card_path) if job.model_card_path else Path(job.out_dir) / "model_card" / "README.md"
    return write_model_card(path, model=job.model, records=section_records(results),
                            summary_lines=[v.line for r in results for v in r.verdicts],
                            base_model=job.base_model or job.reference)
