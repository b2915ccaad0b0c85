"""MMR as an lmms-eval task (lmms-eval 0.7): :func:`export_lmms_eval` writes a task folder bound to an MMR
question file; :func:`read_lmms_eval_samples` reads the replies of its ``--log_samples`` file back, so
``mmrobust mmr score --format lmms-eval`` writes mmrobust's full record (per category, CIs) of the same replies.
Nothing here imports lmms-eval."""
from mmrobust.integrations.lmms_eval.export import export_lmms_eval
from mmrobust.integrations.lmms_eval.log import read_lmms_eval_samples

__all__ = ["export_lmms_eval", "read_lmms_eval_samples"]
