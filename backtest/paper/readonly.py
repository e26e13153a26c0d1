"""Read-only access to a paper ledger, for the monitor, the drift monitor and notifications.

:func:`connect_readonly` opens the SQLite file with ``mode=ro`` (the operating system is asked
for read access only) and ``PRAGMA query_only``, so nothing this module does can write to the
ledger -- not even the rollback journal that a killed ``paper run`` leaves beside it. A transaction
killed before its commit began is invisible to readers (they see the last committed bar); one killed
while its commit was being written leaves a *hot* journal that only a writer may roll back: the read
then fails with "readonly" until the next ``paper run`` does, and the monitor says so.

:func:`read_snapshot` reads everything in **one read transaction**: the tables agree with each
other (one committed bar is all there or all absent). The read holds SQLite's shared lock for the
few milliseconds the ``SELECT`` statements take; a ``paper run`` that wants to commit meanwhile
waits for it (its busy timeout is 30 s), and a reader that meets the writer's commit waits up to
``timeout_s`` -- neither fails, and the writer is never blocked for longer than one read.

Times are bar **open** times, UTC (the ledger's convention); money in the quote currency.
"""
from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pandas as pd

from backtest.errors import LedgerError
from backtest.paper.ledger import SCHEMA_VERSION, Account, Ledger, TrainingRow


def connect_readonly(path: str | Path, *, timeout_s: float = 5.0) -> sqlite3.Connection:
    """A connection to the ledger at ``path`` that cannot write (``mode=ro`` and ``query_only``).

    Raises LedgerError: no such file, not an SQLite file, or a crashed write awaits rollback.
    """
    p = Path(path).resolve()
    if not p.exists():
        raise LedgerError(f"{p}: no paper ledger here; run 'walkforward paper run CONFIG' first")
    try:
        conn = sqlite3.connect(f"file:{quote(str(p))}?mode=ro", uri=True, timeout=timeout_s, isolation_level=None,
                               check_same_thread=False)
        conn.execute("PRAGMA query_only = ON")
        version = conn.execute("PRAGMA user_version").fetchone()[0]
    except sqlite3.DatabaseError as exc:
        raise LedgerError(f"{p}: not readable now ({_why(exc)})") from None
    if version != SCHEMA_VERSION:
        conn.close()
        raise LedgerError(f"{p}: not a paper ledger of schema version {SCHEMA_VERSION} (found {version})")
    return conn


def _why(exc: sqlite3.DatabaseError) -> str:
    text = str(exc)
    if "readonly" in text or "read-only" in text:
        return "a paper run was killed inside a bar; its next run rolls the bar back"
    return text


@dataclass
class Snapshot:
    """The ledger as of one committed state. Frames are in primary-key order, times are ledger text (UTC)."""

    path: Path
    account: Account | None
    bars: pd.DataFrame  # bar_time, idx, open, high, low, close, volume, processed_at
    equity: pd.DataFrame  # wide: index bar open time, one column per portfolio, value at the close
    positions: pd.DataFrame  # bar_time, portfolio, position, cash (the last bar only)
    signals: pd.DataFrame  # bar_time, portfolio, long
    forecasts: pd.DataFrame  # bar_time, model, fold, y_pred, close, pred_close
    fills: pd.DataFrame  # bar_time, portfolio, decision_time, side, size, price, exec_price, fees, ...
    orders: pd.DataFrame  # pending orders: decision_time, portfolio, side
    trainings: list[TrainingRow]

    @property
    def last_bar(self) -> pd.Timestamp | None:
        """Open time of the newest processed bar (UTC), or None."""
        return None if self.bars.empty else pd.Timestamp(self.bars["bar_time"].iloc[-1]).tz_convert("UTC")


def read_snapshot(path: str | Path, *, timeout_s: float = 5.0) -> Snapshot:
    """Everything the monitor shows, read in one read transaction (see the module docstring)."""
    conn = connect_readonly(path, timeout_s=timeout_s)
    try:
        ledger = Ledger(Path(path), conn)
        conn.execute("BEGIN")  # deferred: a shared lock from the first SELECT to COMMIT, one consistent state
        try:
            acct = ledger.account()
            if acct is None:
                empty = pd.DataFrame()
                return Snapshot(Path(path), None, empty, empty, empty, empty, empty, empty, empty, [])
            bars = pd.read_sql_query("SELECT bar_time, idx, open, high, low, close, volume, processed_at FROM bars "
                                     "ORDER BY bar_time", conn)
            equity = ledger.equity_frame(acct)
            last = bars["bar_time"].iloc[-1] if len(bars) else ""
            positions = pd.read_sql_query("SELECT bar_time, portfolio, position, cash FROM positions WHERE bar_time=? "
                                          "ORDER BY portfolio", conn, params=(last,))
            signals = pd.read_sql_query("SELECT bar_time, portfolio, long FROM signals ORDER BY bar_time, portfolio",
                                        conn)
            forecasts = pd.read_sql_query("SELECT bar_time, model, fold, y_pred, close, pred_close FROM forecasts "
                                          "ORDER BY bar_time, model", conn)
            fills = pd.read_sql_query("SELECT bar_time, portfolio, decision_time, side, size, price, exec_price, fees, "
                                      "cash_after, position_after FROM fills ORDER BY bar_time, portfolio", conn)
            orders = pd.read_sql_query("SELECT decision_time, portfolio, side FROM orders WHERE status='pending' "
                                       "ORDER BY portfolio", conn)
            trainings = ledger.trainings(acct)
        finally:
            conn.execute("COMMIT")
    except sqlite3.DatabaseError as exc:
        raise LedgerError(f"{Path(path)}: not readable now ({_why(exc)})") from None
    finally:
        conn.close()
    return Snapshot(Path(path), acct, bars, equity, positions, signals, forecasts, fills, orders, trainings)


def last_log_error(log_file: str | Path, *, tail_bytes: int = 65536) -> str | None:
    """The newest ``ERROR`` line of the account's log file (already redacted by the logger), or None."""
    p = Path(log_file)
    if not p.exists():
        return None
    with open(p, "rb") as fh:
        fh.seek(0, 2)
        size = fh.tell()
        fh.seek(max(0, size - tail_bytes))
        lines = fh.read().decode("utf-8", errors="replace").splitlines()
    for line in reversed(lines):
        if " ERROR " in line:
            return line.strip()
    return None
