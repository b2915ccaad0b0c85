"""Run records (the results contract: Record, Table, Column, write_record), tables, plots, pictures, HTML reports,
Hugging Face model cards (write_model_card)."""
from mmrobust.reports.contract import Column, Picture, Record, Table, record_files, write_record
from mmrobust.reports.records import git_sha, write_results
from mmrobust.jsonio import read_json, write_json, write_jsonl
from mmrobust.reports.model_card import write_model_card

__all__ = ["Column", "Picture", "Record", "Table", "git_sha", "read_json", "record_files", "write_json", "write_jsonl",
           "write_model_card", "write_record", "write_results"]
