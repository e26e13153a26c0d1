"""The project's error classes: one line for the user, exit status 2 at the CLI.

Every error raised for bad *user input* (a config key, a data file, an exchange
answer, a run directory) is a :class:`WalkforwardError`. The CLI maps it to one
line on stderr and exit status 2 (see :mod:`backtest.cli`); anything else that
escapes is a bug in the project, not in the input.
"""
from __future__ import annotations


class WalkforwardError(Exception):
    """Base class of every user-facing error. ``str(err)`` is the whole message."""

    exit_status = 2


class ConfigError(WalkforwardError, ValueError):
    """A config key is unknown, of the wrong type or has an impossible value."""


class DataError(WalkforwardError, ValueError):
    """Market data is malformed, has gaps, duplicates or impossible prices."""


class ExchangeError(WalkforwardError):
    """The exchange timed out, failed or answered garbage after all retries."""


class RunDirError(WalkforwardError):
    """A run directory is missing, corrupt, or was made by a different config."""


class LedgerError(WalkforwardError):
    """The paper-trading ledger refuses an operation (e.g. an inconsistent config)."""
