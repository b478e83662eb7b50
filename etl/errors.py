"""The ETL's failures, each with a stable message prefix and its own exit code.

A nightly job is judged by its exit status, so every failure an operator can act on
(a database down, nothing to process, bad data) has a distinct code.
"""

from __future__ import annotations


class EtlError(Exception):
    exit_code = 1


class SourceUnavailable(EtlError):
    """MongoDB (the operational store) cannot be reached."""

    exit_code = 2


class DatabaseUnavailable(EtlError):
    """PostgreSQL (staging or warehouse) or the DuckDB file cannot be opened."""

    exit_code = 2


class EmptyRange(EtlError):
    """Nothing to extract or report in the requested days."""

    exit_code = 3


class DataQualityError(EtlError):
    """The data breaks an invariant; nothing was loaded."""

    exit_code = 4


class MissingInput(EtlError):
    """A step's input (the previous step's files) is not there."""

    exit_code = 5
