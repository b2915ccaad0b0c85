"""Errors that reach users as one line (the CLI prints them without a traceback)."""
from __future__ import annotations


class MMRobustError(Exception):
    """A problem the user can fix; the message names the problem and the fix."""


class ConfigError(MMRobustError, ValueError):
    """Bad argument or configuration value."""


class DataError(MMRobustError):
    """Unreadable, missing or malformed input data."""


class TrainingError(MMRobustError):
    """Training stopped (e.g. a NaN loss); the last good checkpoint is kept."""
