"""Errors that fedsim raises for problems the user can fix.

The CLI turns every :class:`FedsimError` into one line ``fedsim: error: ...`` and
exit code 2; any other exception is a programming error and keeps its traceback.
"""

from __future__ import annotations


class FedsimError(Exception):
    """Base class of user-facing errors: the message says what to fix."""


class ConfigError(FedsimError):
    """A scenario file or override is invalid."""


class DataError(FedsimError):
    """A dataset file is missing, corrupt or malformed."""


class AggregationError(FedsimError):
    """A round could not be aggregated as asked."""


class SolverError(FedsimError):
    """A convex program did not reach an optimal solution."""


class CheckpointError(FedsimError):
    """A checkpoint is missing, corrupt, edited, or does not fit the run it resumes."""
