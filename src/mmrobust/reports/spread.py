"""Numbers over seeds: the spread of each value, tables of ``mean ± spread``, and claims checked at
every seed.

A number from one seed is an anecdote (DESIGN.md, "Seeds and spread"). A multi-seed run keeps every
seed's value; :func:`spread` gives their mean, standard deviation, min-max and a t-interval for the
mean; :func:`aggregate_tables` turns the same declared table of several seeds' records into one table
of ``mean ± sd`` cells; a :class:`Claim` is a story's headline effect with its bar, and
:func:`check_claims` says whether it holds at every seed with a margin larger than the spread.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

# two-sided 95% quantiles of Student's t by degrees of freedom (n - 1); beyond 30 the normal's
_T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
        12: 2.179, 15: 2.131, 20: 2.086, 25: 2.060, 30: 2.042}


def _t95(df: int) -> float:
    if df > 30:
        return 1.96
    return _T95[max(k for k in _T95 if k <= df)]  # the next smaller tabulated df: a slightly wider interval


def spread(values: Sequence[float]) -> dict[str, Any]:
    """Mean, sample standard deviation, min, max and a 95% t-interval of the mean of ``values``
    (one per seed); the values themselves are kept. One value: sd 0 and no interval."""
    vals = [float(v) for v in values]
    if not vals:
        raise ValueError("spread() needs at least one value")
    mean = statistics.fmean(vals)
    sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
    half = _t95(len(vals) - 1) * sd / math.sqrt(len(vals)) if len(vals) > 1 else None
    return {"n": len(vals), "mean": mean, "sd": sd, "min": min(vals), "max": max(vals),
            "ci": [mean - half, mean + half] if half is not None else None, "values": vals}


def _plain(v: float) -> str:
    """A unitless number in three digits, where a fraction near 1 keeps its decimals: 0.9998 -> "1.000" (an
    AUROC just short of 1 is not shown as 1), 0.512 -> "0.512", 0.00254 -> "0.0025", 600 -> "600"."""
    if 0.01 <= abs(v) < 1:
        return f"{v:.3f}"
    return f"{v:.2g}" if 0 < abs(v) < 0.01 else f"{v:.3g}"


def format_spread(stats: Mapping[str, Any], unit: str = "") -> str:
    """``"87.6 ± 1.2 (86.0-89.1)"``: mean ± sd (min-max); unit "%" shows fractions as percentages."""
    k = 100.0 if unit == "%" else 1.0
    fmt = (lambda v: f"{k * v:.1f}") if unit in ("%", "s") else _plain
    if stats["n"] == 1:
        return fmt(stats["mean"])
    return f"{fmt(stats['mean'])} ± {fmt(stats['sd'])} ({fmt(stats['min'])}-{fmt(stats['max'])})"


def _numeric(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v == v


def aggregate_table(tables: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One declared table (``{"title", "columns", "rows", "caption"}``) from the same table of several
    seeds: rows are matched by their first column's value, numeric cells become ``mean ± sd (min-max)``
    text, and each row keeps its statistics under ``"_spread"`` (column key -> :func:`spread`)."""
    first = tables[0]
    cols = list(first["columns"])
    label = cols[0]["key"]
    rows = []
    for row in first["rows"]:
        same = [next((r for r in t["rows"] if r.get(label) == row.get(label)), None) for t in tables]
        out: dict[str, Any] = {label: row.get(label)}
        stats: dict[str, Any] = {}
        for c in cols[1:]:
            vals = [r.get(c["key"]) for r in same if r is not None]
            if vals and all(_numeric(v) for v in vals):
                stats[c["key"]] = spread(vals)
                out[c["key"]] = format_spread(stats[c["key"]], c.get("unit", ""))
            else:
                out[c["key"]] = vals[0] if vals and all(v == vals[0] for v in vals) else "varies"
        out["_spread"] = stats
        rows.append(out)
    # "%" cells are text now ("87.6 ± 1.2 ..."): the unit moves into the heading
    columns = [{**c, "unit": "", "heading": c["heading"] + " (%)"} if c.get("unit") == "%" else dict(c) for c in cols]
    n = f"{len(tables)} seed{'s' if len(tables) != 1 else ''}"
    over = f"Mean ± standard deviation (min-max) over {n}." if len(tables) > 1 else "One seed: no spread."
    caption = f"{over} {first.get('caption', '')}".strip()
    return {"title": f"{first['title']} ({n})", "columns": columns, "rows": rows, "caption": caption}


@dataclass(frozen=True)
class Claim:
    """A headline effect of a story: ``value(metrics)`` must be >= ``at_least`` or <= ``at_most``.

    Example::

        Claim("par-removes", "PAR's ASR", lambda m: row(m, "PAR")["asr"], at_most=0.10)
    """

    name: str
    description: str
    value: Callable[[Mapping[str, Any]], float]
    at_least: float | None = None
    at_most: float | None = None
    unit: str = "%"

    def margin(self, v: float) -> float:
        """How far ``v`` is on the right side of the bar (negative: the claim fails)."""
        return v - self.at_least if self.at_least is not None else self.at_most - v  # type: ignore[operator]

    def bar_text(self) -> str:
        k = 100 if self.unit == "%" else 1
        if self.at_least is not None:
            return f">= {k * self.at_least:g}"
        return f"<= {k * self.at_most:g}"  # type: ignore[operator]


def check_claims(claims: Sequence[Claim], per_seed: Mapping[Any, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Each claim at every seed: the values, the worst seed, its margin to the bar, the spread (sd) and
    a verdict: "holds" (every seed, worst margin > sd), "holds, thin margin" (every seed, margin <= sd),
    or "seed-dependent" (fails at some seed)."""
    out = []
    for c in claims:
        try:
            values = {str(seed): float(c.value(m)) for seed, m in per_seed.items()}
        except (KeyError, TypeError, ValueError):  # a record from before the claim's metric existed
            out.append({"claim": c.name, "description": c.description, "bar": c.bar_text(), "unit": c.unit,
                        "values": {}, "worst_seed": None, "worst": None, "margin": None, "sd": None,
                        "verdict": "not measured"})
            continue
        worst_seed = min(values, key=lambda s: c.margin(values[s]))
        margin = c.margin(values[worst_seed])
        sd = spread(list(values.values()))["sd"]
        verdict = "seed-dependent" if margin < 0 else "holds" if margin > sd else "holds, thin margin"
        out.append({"claim": c.name, "description": c.description, "bar": c.bar_text(), "unit": c.unit,
                    "values": values, "worst_seed": worst_seed, "worst": values[worst_seed], "margin": margin,
                    "sd": sd, "verdict": verdict})
    return out


def claims_table(checked: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The checked claims as a declared table (one row per claim)."""
    k = lambda c: 100.0 if c["unit"] == "%" else 1.0  # noqa: E731
    def num(c: Mapping[str, Any], v: float | None) -> str:  # text, so no table formatter rescales it
        return "n/a" if v is None else f"{k(c) * v:.1f}"

    rows = [{"claim": c["description"], "bar": c["bar"],
             "values": ", ".join(f"{s}: {num(c, v)}" for s, v in c["values"].items()),
             "worst": f"{num(c, c['worst'])} (seed {c['worst_seed']})" if c["worst"] is not None else "n/a",
             "margin": num(c, c["margin"]), "sd": num(c, c["sd"]), "verdict": c["verdict"]} for c in checked]
    cols = [("claim", "headline effect"), ("bar", "bar"), ("values", "per seed"), ("worst", "worst seed"),
            ("margin", "worst margin"), ("sd", "spread (sd)"), ("verdict", "verdict")]
    return {"title": "Headline effects at every seed",
            "columns": [{"key": a, "heading": b, "unit": ""} for a, b in cols],
            "rows": rows, "caption": "An effect holds when every seed meets its bar with a worst-seed margin larger "
                                     "than the spread (standard deviation) across seeds; values in percent."}


def pick(rows: Sequence[Mapping[str, Any]], key: str, label: str) -> Mapping[str, Any]:
    """The row of ``rows`` whose ``key`` is ``label`` (a story's stage, model or tower)."""
    for r in rows:
        if r.get(key) == label:
            return r
    raise KeyError(f"no row with {key}={label!r}")


def wilson(k: int, n: int, z: float = 1.96) -> list[float]:
    """The 95% Wilson score interval of a proportion k/n."""
    if not n:
        return [0.0, 1.0]
    p = k / n
    mid, half = (p + z * z / (2 * n)), z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return [max(0.0, (mid - half) / (1 + z * z / n)), min(1.0, (mid + half) / (1 + z * z / n))]
