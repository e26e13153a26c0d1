"""Logging of the paper trader: a log file next to the ledger plus stderr, with secrets redacted.

Every line written by the ``walkforward.paper`` logger passes through
:class:`RedactingFormatter`, which replaces the values of the API-key
environment variables (:data:`backtest.paper.sandbox.SECRET_ENVS`) by ``***``,
tracebacks included. The code never logs a key on purpose; this is the second
line of defence (e.g. an exchange error message that quotes a request).
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path

LOGGER = "walkforward.paper"
_FORMAT = "%(asctime)s %(levelname)s %(message)s"

_installed: list[logging.Handler] = []


class RedactingFormatter(logging.Formatter):
    """A formatter whose output never contains an API key or secret from the environment."""

    def format(self, record: logging.LogRecord) -> str:
        from backtest.paper.sandbox import redact

        return redact(super().format(record))


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time (pytest swaps it)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property  # type: ignore[override]
    def stream(self):  # noqa: ANN201
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # noqa: ANN001
        pass


def get_logger() -> logging.Logger:
    return logging.getLogger(LOGGER)


def configure_logging(log_file: str | Path | None, *, stderr: bool = True, level: int = logging.INFO) -> logging.Logger:
    """Send the paper logger to ``log_file`` (appended; folder created) and to stderr.

    Calling it again replaces the handlers it installed before (one process, one account).
    """
    log = get_logger()
    for h in _installed:
        log.removeHandler(h)
        h.close()
    _installed.clear()
    if log_file is not None:
        path = Path(log_file)
        path.parent.mkdir(parents=True, exist_ok=True)
        fh = logging.FileHandler(path, encoding="utf-8")
        fh.setFormatter(RedactingFormatter(_FORMAT))
        _installed.append(fh)
    if stderr:
        sh = _StderrHandler()
        sh.setFormatter(RedactingFormatter("walkforward paper: %(levelname)s: %(message)s"))
        _installed.append(sh)
    for h in _installed:
        log.addHandler(h)
    log.setLevel(level)
    return log
