"""The headline numbers of mmrobust's results records as Hugging Face ``model-index`` results: task type,
dataset (:func:`mmrobust.reports.card_data.record_dataset`), metric type, a metric name that says the threat
("robust accuracy (APGD-CE, l-inf 4/255)") and the protocol as metric ``args`` (eps, attack, steps, samples).

Values are shown as the hub pages show them: rates in percent (a record's fraction x 100, two decimals), CIDEr
x 100 as captioning papers report it. One mapper per record kind (the kinds the evaluations write:
``eval/zeroshot.py``, ``eval/robust.py``, ``eval/backdoor.py``, ``eval/retrieval.py``, ``eval/lvlm/under_attack.py``
(``<task>-attack``), ``pipelines/lvlm.py`` (``lvlm-targeted``), the MLLM benchmarks (``mmr``, ``vqa``, ``caption``,
``instruction-asr``), ``eval/challenge`` (``challenge``) and ``pipelines/audit.py`` (``audit``)); a record of any
other kind (training logs, stories, seed aggregates) maps to nothing and :func:`card_results` returns None.

Example::

    results = card_results(read_json("runs/fare/eval/results_robust.json"))
    [(r.metric_name, r.value) for r in results]
    # [('top-1 accuracy (clean, the 32 attacked images)', 84.38), ('robust accuracy (APGD-CE, l-inf 4/255)', 34.38)]
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from mmrobust.reports.card_data import public_text, record_dataset

TASK_NAMES = {"zero-shot-image-classification": "Zero-shot image classification",
              "image-text-retrieval": "Image-text retrieval", "visual-question-answering": "Visual question answering",
              "image-to-text": "Image captioning", "image-text-to-text": "Image-text-to-text",
              "image-feature-extraction": "Poisoned-pair detection from embeddings"}
CLIP_ATTACKS = {"pgd": "PGD", "apgd-ce": "APGD-CE", "apgd-dlr": "APGD-DLR", "apgd-t": "APGD-T",
                "autoattack": "AutoAttack-style worst case"}
LVLM_ATTACKS = {"apgd-untargeted-lm-loss": "APGD on the LM loss",
                "apgd-ensemble-lm-loss": "APGD ensemble on the LM loss", "uniform-noise": "uniform noise"}
NORMS = {"linf": "l-inf", "l2": "l2"}
# MLLM task -> (task type, [(metric key, metric type, readable name, note)])
MLLM_TASKS: dict[str, tuple[str, tuple[tuple[str, str, str, str], ...]]] = {
    "vqa": ("visual-question-answering", (("accuracy", "accuracy", "VQA accuracy", ""),)),
    "caption": ("image-to-text", (("cider", "cider", "CIDEr x100", ""),)),
    "mmr": ("visual-question-answering", (("ra", "robustness_accuracy", "RA, robustness accuracy", ""),
                                          ("mr", "misleading_rate", "MR, misleading rate", "; lower is better"))),
}
CLIP_KINDS = frozenset({"zeroshot", "robust", "backdoor", "retrieval", "audit"})  # the others measure an MLLM
SECRET_WORDS = ("key", "token", "secret", "password", "auth")


@dataclass(frozen=True)
class CardResult:
    """One number of the card: model-index fields plus the record kind and the threat (for the card's table)."""

    kind: str
    task_type: str
    dataset: Mapping[str, Any]
    metric_type: str
    metric_name: str
    value: float
    threat: str
    args: Mapping[str, Any] = field(default_factory=dict)

    @property
    def task_name(self) -> str:
        return TASK_NAMES.get(self.task_type, self.task_type)

    def metric(self) -> dict[str, Any]:
        """The model-index metric entry (self-reported: ``verified: false``)."""
        out = {"type": self.metric_type, "value": self.value, "name": self.metric_name, "verified": False}
        return {**out, "args": dict(self.args)} if self.args else out


def _number(x: Any) -> float | None:
    ok = isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
    return float(x) if ok else None


def _args(**kw: Any) -> dict[str, Any]:
    """Metric args: plain values only, None dropped, nothing named like a credential, text scrubbed."""
    out: dict[str, Any] = {}
    for k, v in kw.items():
        if v is None or any(w in k.lower() for w in SECRET_WORDS):
            continue
        if isinstance(v, str):
            v = public_text(v)
        elif not isinstance(v, (int, float, bool)):
            continue
        out[k] = v
    return out


class _Maker:
    """Builds the results of one record (its kind and dataset fixed); a missing or non-finite value gives none."""

    def __init__(self, record: Mapping[str, Any]) -> None:
        self.kind, self.dataset, self.out = str(record.get("kind")), record_dataset(record), []

    def add(self, task_type: str, metric_type: str, name: str, fraction: Any, threat: str, **args: Any) -> None:
        x = _number(fraction)
        if x is not None:
            self.out.append(CardResult(self.kind, task_type, self.dataset, metric_type, public_text(name),
                                       round(100 * x, 2), public_text(threat), _args(**args)))


def _d(x: Any) -> Mapping[str, Any]:
    return x if isinstance(x, Mapping) else {}


def _zeroshot(rec: Mapping[str, Any], mk: _Maker) -> None:
    m = _d(rec.get("metrics"))
    for k in ("top1", "top5"):
        mk.add("zero-shot-image-classification", "accuracy", f"top-{k[3:]} accuracy (clean)", m.get(k), "clean",
               n_images=m.get("n"), classifier=m.get("classifier"))


def _robust(rec: Mapping[str, Any], mk: _Maker) -> None:
    m, task = _d(rec.get("metrics")), "zero-shot-image-classification"
    attack, norm = str(m.get("attack")), str(m.get("norm"))
    shown, norm_shown = CLIP_ATTACKS.get(attack, attack.upper()), NORMS.get(norm, norm)
    common = {"attack": attack, "norm": norm, "n_samples": m.get("n"), "sample_seed": m.get("seed")}
    mk.add(task, "accuracy", f"top-1 accuracy (clean, the {m.get('n')} attacked images)", m.get("clean_top1"),
           "clean", **common)
    for label, r in _d(m.get("eps")).items():
        r = _d(r)
        if not _number(r.get("eps")):  # eps 0: the clean number again
            continue
        mk.add(task, "accuracy", f"robust accuracy ({shown}, {norm_shown} {label})", r.get("robust_top1"),
               f"{shown}, {norm_shown} eps {label}", **common, eps=r.get("eps"), eps_255=label,
               steps=_d(r.get("config")).get("steps"))


def _backdoor(rec: Mapping[str, Any], mk: _Maker) -> None:
    m, task = _d(rec.get("metrics")), "zero-shot-image-classification"
    trigger = _d(_d(rec.get("config")).get("trigger")).get("name") or _d(_d(rec.get("protocol")).get("trigger")).get(
        "name") or "a"
    target = m.get("target_name")
    mk.add(task, "accuracy", "top-1 accuracy (clean; backdoor evaluation)", m.get("clean_top1"), "clean",
           n_images=m.get("n_clean"))
    mk.add(task, "attack_success_rate", f"backdoor attack success rate ({trigger} trigger -> '{target}'; lower is "
           "better)", m.get("asr"), f"backdoor trigger {trigger}", trigger=trigger, target=target,
           top_k=m.get("asr_topk"), n_triggered=m.get("n_asr"), trigger_seed=_d(rec.get("seeds")).get("trigger"))


def _retrieval(rec: Mapping[str, Any], mk: _Maker) -> None:
    m = _d(rec.get("metrics"))
    for direction in ("image_to_text", "text_to_image"):
        ks = sorted(int(str(k).rsplit("@", 1)[1]) for k in m if re.fullmatch(rf"{direction}_R@\d+", str(k)))
        for k in ks:
            mk.add("image-text-retrieval", "recall", f"{direction.replace('_', '-')} recall@{k} (clean)",
                   m[f"{direction}_R@{k}"], "clean", n_images=m.get("n"), n_captions=m.get("n_captions"))


def _under_attack(rec: Mapping[str, Any], mk: _Maker) -> None:
    """``vqa-attack`` / ``caption-attack`` / ``mmr-attack``: the task's scores clean and under the attack."""
    m, p = _d(rec.get("metrics")), _d(rec.get("protocol"))
    task_type, keys = MLLM_TASKS[str(rec.get("kind"))[: -len("-attack")]]
    attack = str(p.get("attack") or "apgd-untargeted-lm-loss")
    threat = f"{LVLM_ATTACKS.get(attack, attack)}, l-inf eps {m.get('eps_label')}, {m.get('steps')} steps"
    clean, adv = _d(m.get("clean")), _d(m.get("adversarial"))
    n = clean.get("n_pairs", clean.get("n"))
    for key, mtype, name, note in keys:
        mk.add(task_type, mtype, f"{name} (clean{note})", clean.get(key), "clean", n=n, parser=m.get("parser"))
        mk.add(task_type, mtype, f"{name} ({threat}{note})", adv.get(key), threat, attack=attack, norm="linf",
               eps=m.get("eps"), eps_255=m.get("eps_label"), steps=m.get("steps"), n=n, parser=m.get("parser"))


def _targeted(rec: Mapping[str, Any], mk: _Maker) -> None:
    """``lvlm-targeted``: the share of replies holding the target string after the targeted attack."""
    m, task = _d(rec.get("metrics")), str(_d(rec.get("config")).get("task") or "vqa")
    threat = f"targeted APGD on the LM loss, l-inf eps {m.get('eps_label')}, {m.get('steps')} steps"
    clean = _number(m.get("clean_success"))
    mk.add(MLLM_TASKS.get(task, ("image-text-to-text",))[0], "attack_success_rate",
           f"targeted attack success rate ('{m.get('target')}'; {threat}; lower is better)", m.get("success"), threat,
           target=m.get("target"), eps=m.get("eps"), eps_255=m.get("eps_label"), steps=m.get("steps"), n=m.get("n"),
           clean_success_percent=None if clean is None else round(100 * clean, 2))


def _mmr(rec: Mapping[str, Any], mk: _Maker) -> None:
    """``mmr``: RA and MR over all pairs (micro) and per category."""
    m, settings = _d(rec.get("metrics")), _d(_d(rec.get("config")).get("settings"))
    task_type, keys = MLLM_TASKS["mmr"]
    per_category = sorted((str(c), _d(b)) for c, b in _d(m.get("per_category")).items())
    for where, b in [("all pairs", _d(m.get("overall"))), *per_category]:
        for key, mtype, name, note in keys:
            mk.add(task_type, mtype, f"{name} ({where}{note})", b.get(key), "leading questions",
                   n_pairs=b.get("n_pairs"), category=None if where == "all pairs" else where,
                   parser=m.get("parser"), pairing=m.get("pairing"), prompt=settings.get("prompt"))


def _benchmark(rec: Mapping[str, Any], mk: _Maker) -> None:
    """``vqa`` / ``caption`` benchmark runs: the clean score over all questions."""
    m = _d(rec.get("metrics"))
    task_type, keys = MLLM_TASKS[str(rec.get("kind"))]
    overall = _d(m.get("overall"))
    for key, mtype, name, note in keys:
        mk.add(task_type, mtype, f"{name} (clean{note})", overall.get(key), "clean", n=overall.get("n"),
               parser=m.get("parser"))


def _instruction_asr(rec: Mapping[str, Any], mk: _Maker) -> None:
    o = _d(_d(rec.get("metrics")).get("overall"))
    mk.add("image-text-to-text", "attack_success_rate", f"instruction-backdoor attack success rate (target "
           f"'{o.get('target')}'; lower is better)", o.get("asr"), "poisoned instruction data", target=o.get("target"),
           n=o.get("n"))


def _challenge(rec: Mapping[str, Any], mk: _Maker) -> None:
    """``challenge``: per pushback template, the flip rate (right -> not right after the user pushes back)."""
    m, cfg = _d(rec.get("metrics")), _d(rec.get("config"))
    task_type = MLLM_TASKS.get(str(cfg.get("task") or cfg.get("benchmark")), ("visual-question-answering",))[0]
    texts = _d(m.get("templates"))
    for name, block in _d(m.get("per_template")).items():
        o = _d(_d(block).get("overall"))
        mk.add(task_type, "flip_rate", f"flip rate after pushback '{texts.get(name, name)}' (right -> not right; lower "
               "is better)", o.get("flip_rate"), f"pushback '{name}'", template=str(name),
               n_right_first=o.get("n_right_first"), parser=m.get("parser"))


def _audit(rec: Mapping[str, Any], mk: _Maker) -> None:
    """``audit``: how well the model's embeddings single out the poisoned pairs (AUROC per detector)."""
    m, p = _d(rec.get("metrics")), _d(rec.get("protocol"))
    for det, value in _d(m.get("auroc")).items():
        mk.add("image-feature-extraction", "roc_auc", f"poisoned-pair detection AUROC ({det}, {p.get('embedding')} "
               f"embeddings, k={p.get('k')})", value, "poisoned training data", detector=str(det),
               embedding=p.get("embedding"), k=p.get("k"), n_poisoned=m.get("n_poisoned"), n_scored=m.get("n_scored"))


MAPPERS: dict[str, Callable[[Mapping[str, Any], _Maker], None]] = {
    "zeroshot": _zeroshot, "robust": _robust, "backdoor": _backdoor, "retrieval": _retrieval,
    "vqa-attack": _under_attack, "caption-attack": _under_attack, "mmr-attack": _under_attack,
    "lvlm-targeted": _targeted, "mmr": _mmr, "vqa": _benchmark, "caption": _benchmark,
    "instruction-asr": _instruction_asr, "challenge": _challenge, "audit": _audit,
}


def card_results(record: Mapping[str, Any]) -> list[CardResult] | None:
    """The model-index results of one results record; None for a kind no mapper knows (see the module docstring)."""
    mapper = MAPPERS.get(str(record.get("kind")))
    if mapper is None:
        return None
    mk = _Maker(record)
    mapper(record, mk)
    return mk.out
