"""lmms-eval's entry points of the MMR task: mmrobust's functions (``mmrobust.integrations.lmms_eval``)."""
from mmrobust.integrations.lmms_eval.functions import (  # noqa: F401
    mmr_aggregate_mr, mmr_aggregate_pairs, mmr_aggregate_pairs_error, mmr_aggregate_ra, mmr_doc_to_target,
    mmr_doc_to_text, mmr_doc_to_visual, mmr_process_results,
)
