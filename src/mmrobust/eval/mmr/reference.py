"""Reference-compatible MMR pairing: rows paired by file position, as the leaderboard was scored.

The reference scorer (BAAI-DCAI/Multimodal-Robustness-Benchmark, ``calculation_mmr.py`` and
``models/calculation.py``, ``calculate_mc``) walks the answer list two rows at a time, in the
question file's order, and never checks that the two rows share an id. For rows ``a, b``:

- both right: counted in RA (``pos_rht_neg_rht``);
- misled: ``a`` right, ``b`` wrong and ``a`` tagged POS, or ``a`` wrong, ``b`` right and ``b``
  tagged POS (so NEG-first pairs, 155 of the 300 in v1, read the same as POS-first ones);
- MR = misled / (both right + misled); the pair counts in the category of ``a``'s id.

The published v1 file holds one pair whose two questions are both tagged POS
(``attribute/number/04``, rows 272-273; the second is really the leading question): the
reference counts it among its 300 pairs, misled when exactly one of the two is right.
``pair_by_position`` reproduces that, and lists every pair it scored despite its ids or tags as
a correction (what was done to it), never silently; the default pairing stays by id
(``pairing.pair_by_id``), which leaves that pair out as an anomaly.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Generic, Sequence, TypeVar

from mmrobust.eval.mmr.pairing import Pair

T = TypeVar("T")

# SHA-256 of published question files -> what is known about them. To add one: hash the exact
# bytes (``sha256sum MMR-benchmark.json``, or ``questions_sha256`` in a run's results), check its
# rows and position pairs, and add an entry with where the file came from.
KNOWN_FILES: dict[str, dict] = {
    "e55290e603f41c7444cb8a8a6f355dab6a521a4fa845ca8757b40b817e5f7dc3": {
        "name": "v1", "n_rows": 600, "n_position_pairs": 300, "n_id_pairs": 299, "n_neg_first": 155,
        "quirks": ["attribute/number/04: rows 272 and 273 are both tagged POS (the second is the leading one)"],
        "source": "github:BAAI-DCAI/Multimodal-Robustness-Benchmark evaluation/MMR-benchmark.json at 22276d8 "
                  "(same bytes at MMR-benchmark/ in 0b20568 and mmr_benchmark/ in dd25b6a, 2024-06-15); "
                  "the HF hub copy was not hashed here",
    },
}


def known_file(sha256: str | None) -> dict[str, Any]:
    """Whether a question file with this SHA-256 is a known published one, and what it is."""
    entry = KNOWN_FILES.get(sha256 or "")
    return {"questions_sha256": sha256, "recognised": entry is not None,
            "known_as": entry["name"] if entry else None, **({"known": dict(entry)} if entry else {})}


@dataclass(frozen=True)
class PositionPairs(Generic[T]):
    """Pairs by file position; ``corrections``: pairs scored despite their ids or tags (and how);
    ``anomalies``: rows left out (an odd last row); ``n_neg_first``: NEG-then-POS pairs (normal)."""

    pairs: list[Pair[T]]
    corrections: list[dict] = field(default_factory=list)
    anomalies: list[dict] = field(default_factory=list)
    n_neg_first: int = 0


def pair_by_position(rows: Sequence[T], *, id_of: Callable[[T], str], type_of: Callable[[T], str]
                     ) -> PositionPairs[T]:
    """Rows ``2i, 2i+1`` form pair ``i``, whatever their ids and tags (the reference's pairing).

    A same-id POS/NEG pair in either order becomes ``Pair(id, pos, neg)``; any other pair keeps
    file order (``pos`` = first row, ``neg`` = second) and is listed in ``corrections``; scoring
    reads its roles from the tags (``scoring._outcomes``), which is the reference's rule."""
    pairs: list[Pair[T]] = []
    corrections: list[dict] = []
    n_neg_first = 0
    for start in range(0, len(rows) - 1, 2):
        a, b = rows[start], rows[start + 1]
        same_id, types = id_of(a) == id_of(b), (type_of(a), type_of(b))
        if same_id and types == ("NEG", "POS"):
            n_neg_first += 1
            pairs.append(Pair(id_of(a), b, a))
            continue
        pairs.append(Pair(id_of(a), a, b))
        if not same_id or types != ("POS", "NEG"):
            corrections.append(_correction(start, (id_of(a), id_of(b)), types))
    anomalies = []
    if len(rows) % 2:
        last = rows[-1]
        anomalies.append({"kind": "odd_row", "id": id_of(last), "position": len(rows) - 1,
                          "detail": f"{len(rows)} rows: the last ({id_of(last)} {type_of(last)}) has no partner "
                                    "by position; left out (the reference would fail on it)"})
    return PositionPairs(pairs, corrections, anomalies, n_neg_first)


def _correction(start: int, ids: tuple[str, str], types: tuple[str, str]) -> dict:
    """What reference pairing did with a pair whose ids differ or whose tags are not one POS, one NEG."""
    n_pos = types.count("POS")
    roles = ("misled if the POS-tagged row is right and the other wrong" if n_pos == 1 else
             "misled if exactly one is right (both rows tagged POS, each can play the straightforward role)"
             if n_pos == 2 else "never misled (neither row tagged POS)")
    kind = "id_mismatch" if ids[0] != ids[1] else "pair_types"
    action = (f"counted as one pair under {ids[0]!r} (the first row's id and category, as the reference): "
              f"RA if both right; {roles}")
    return {"kind": kind, "id": ids[0], "ids": list(ids), "types": list(types), "positions": [start, start + 1],
            "action": action,
            "detail": f"rows {start}-{start + 1} ({ids[0]} {types[0]}, {ids[1]} {types[1]}) paired by position; "
                      f"{action}"}
