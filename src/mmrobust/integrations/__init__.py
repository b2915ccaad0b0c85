"""MMR (Liu et al. 2024, "Seeing Clearly, Answering Incorrectly") inside the evaluation harnesses people
already run: lmms-eval, Inspect and VLMEvalKit.

Each harness asks the questions its own way; mmrobust's parser and RA / MR score the replies
(``mmrobust.eval.mmr``), never a re-implementation:

- ``lmms_eval``: a task folder (YAML + process-results functions) bound to an MMR question file
  (:func:`export_lmms_eval`), and :func:`read_lmms_eval_samples` for its ``--log_samples`` file;
- ``inspect_mmr``: ``@task mmr(data=...)`` with a scorer whose metrics are RA and MR (imports
  ``inspect_ai``; load it by path or through the ``inspect_ai`` entry point), and ``inspect_log`` for its logs;
- ``vlmevalkit``: the questions as a custom multiple-choice TSV, and its prediction files read back.

Every harness log comes back through :func:`rows_for_replies`, which refuses a log that lacks
questions, holds questions the data does not, disagrees on a ground truth, or whose requests failed,
in one line naming what is wrong; :func:`score_replies` writes mmrobust's full record from it.
Nothing here imports a harness at ``import mmrobust.integrations`` time.
"""
from mmrobust.integrations.replies import HarnessReply, harness_questions, rows_for_replies, score_replies

__all__ = ["HarnessReply", "harness_questions", "rows_for_replies", "score_replies"]
