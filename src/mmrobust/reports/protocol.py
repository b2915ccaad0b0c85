"""What two runs must share to be compared, as plain values for ``Record.protocol``: hashes of the texts a
number depends on (zero-shot templates and class names, prompts), decoding parameters, and eps both as a
fraction of 1 and as ``k/255``. Package versions and the machine are added when a record is written
(:func:`mmrobust.reports.records.write_results`); ``mmrobust compare`` lists the fields that differ.
"""
from __future__ import annotations

import hashlib
import json
from fractions import Fraction
from typing import Any, Iterable


def digest(obj: Any) -> str:
    """A short, stable hash of a JSON-able value (sha256 of its sorted JSON, first 16 hex digits)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def eps_label(eps: float) -> str:
    """``4/255`` when eps is a whole number of 1/255 steps, else the number (``0.01``): the one eps label of
    tables, metric keys and records."""
    k = Fraction(float(eps) * 255).limit_denominator(1000)
    return f"{k.numerator}/255" if k.denominator == 1 else f"{float(eps):g}"


def eps_fields(eps: float | Iterable[float]) -> dict[str, Any]:
    """``{"eps": fraction(s) of 1, "eps_255": "k/255" form(s), "eps_units": ...}`` of one eps or a list."""
    if isinstance(eps, (int, float)):
        return {"eps": float(eps), "eps_255": eps_label(eps), "eps_units": "fraction of 1 (images in [0, 1])"}
    values = [float(e) for e in eps]
    return {"eps": values, "eps_255": [eps_label(e) for e in values], "eps_units": "fraction of 1 (images in [0, 1])"}


def templates_protocol(classnames: Iterable[str], templates: Iterable[str], classifier: str) -> dict[str, Any]:
    """Hash of a zero-shot classifier's class names and templates (what its weights are built from)."""
    names, temps = list(classnames), list(templates)
    return {"classifier": classifier, "n_classes": len(names), "n_templates": len(temps),
            "classnames_sha": digest(names), "templates_sha": digest(temps)}


def decoding_protocol(*, max_new_tokens: int, temperature: float = 0.0, top_p: float = 1.0,
                      **other: Any) -> dict[str, Any]:
    """Decoding parameters (temperature 0 = greedy), plus any ``other`` the decoder takes."""
    return {"max_new_tokens": max_new_tokens, "temperature": temperature, "top_p": top_p,
            "greedy": temperature == 0, **other}
