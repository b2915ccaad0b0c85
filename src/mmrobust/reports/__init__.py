"""Run records, tables, plots and HTML reports."""
from mmrobust.reports.records import git_sha, read_json, write_json, write_jsonl, write_results

__all__ = ["git_sha", "read_json", "write_json", "write_jsonl", "write_results"]
