"""Fixed prompt texts that the benchmarks and the synthetic world share (below both, so neither copies them)."""
from __future__ import annotations

# MMR's official instruction after each multiple-choice question (Liu et al. 2024, the benchmark's own prompt)
OFFICIAL_SUFFIX = "\nAnswer with the option's letter from the given choices directly."
# the "option-text" prompt variant: answer with the option's text instead of its letter
TEXT_SUFFIX = "\nAnswer with the text of the right option."
