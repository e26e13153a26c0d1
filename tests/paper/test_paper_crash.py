"""Crash safety: a paper cycle SIGKILLed inside a bar leaves whole bars only, and a restart finishes the job.

The cycle runs in a subprocess with ``WALKFORWARD_PAPER_CRASH_AT=<point>@<n>`` (the
test hook of :mod:`backtest.paper.hooks`), which SIGKILLs it at the n-th time it
reaches the point: after the download, after a retrained model is on disk, after the
fills, before the orders, before the commit, after a commit. The restarted cycle must end with
exactly the ledger of an uncrashed run: no bar, order or fill lost or duplicated.
"""
from __future__ import annotations

import signal

import pytest

from backtest.paper.engine import PaperTrader
from backtest.paper.ledger import Ledger
from tests.paper.helpers import T0, bar_close, dump, invariants, make_config, no_sleep, spawn_cycle, write_config

STEP = 3  # retrains at T0, T0+3, T0+6: the caught-up span below contains two retrainings
LAST = T0 + 6  # the second cycle catches up bars T0+1 .. T0+6

# point@n -> bars the ledger must hold right after the kill (bar T0 was processed by the first cycle)
CASES = {
    "after_fetch@1": T0 + 1,  # candles cached, no bar of the second cycle begun
    "after_train@1": T0 + 3,  # killed while processing bar T0+3 (fold 1 model on disk): T0..T0+2 committed
    "after_fill@2": T0 + 2,  # killed inside bar T0+2's transaction: T0..T0+1 committed
    "before_order@2": T0 + 2,
    "before_commit@3": T0 + 3,
    "after_commit@2": T0 + 3,  # bar T0+2 committed, T0+3 not begun
}


def _first_cycle(cfg, emu, source):
    emu.now = bar_close(source, T0)
    PaperTrader(cfg, fetch_sleep=no_sleep).cycle(emu.now)


def test_sigkill_at_any_point_then_restart_equals_an_uncrashed_run(emu, source, tmp_path):
    # the reference: no crash
    ref = make_config(emu.url, tmp_path / "ref", step=STEP)
    _first_cycle(ref, emu, source)
    emu.now = bar_close(source, LAST)
    res = PaperTrader(ref, fetch_sleep=no_sleep).cycle(emu.now)
    assert res.processed == list(source.index[T0 + 1: LAST + 1])
    want = dump(tmp_path / "ref" / "acct.sqlite")
    assert invariants(tmp_path / "ref" / "acct.sqlite") == []
    assert len(want["bars"]) == 7 and len(want["trainings"]) == 3 * 2

    # each crash point in its own account, the killed cycles running side by side
    runs = {}
    for point in CASES:
        folder = tmp_path / point.replace("@", "-")
        cfg = make_config(emu.url, folder, step=STEP)
        emu.now = bar_close(source, T0)
        _first_cycle(cfg, emu, source)
        runs[point] = (cfg, folder, write_config(cfg, folder / "config.toml"))
    emu.now = bar_close(source, LAST)
    procs = {p: spawn_cycle(path, emu.now, {"WALKFORWARD_PAPER_CRASH_AT": p}) for p, (_, _, path) in runs.items()}
    for point, proc in procs.items():
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == -signal.SIGKILL, f"{point}: exit {proc.returncode}\n{err[-2000:]}"

    for point, (cfg, folder, _) in runs.items():
        ledger_path = folder / "acct.sqlite"
        # after the kill: whole bars only, and exactly those before the killed one
        with Ledger.open(ledger_path, create=False) as ledger:
            acct = ledger.account()
            assert ledger.check_invariants(acct) == [], point
            n_bars = len(ledger.frame("bars"))
        assert n_bars == CASES[point] - T0, point
        # restart: the same cycle, no crash
        res = PaperTrader(cfg, fetch_sleep=no_sleep).cycle(emu.now)
        assert res.processed == list(source.index[CASES[point]: LAST + 1]), point
        assert invariants(ledger_path) == [], point
        assert dump(ledger_path) == want, point
        # and once more: nothing new, nothing duplicated
        again = PaperTrader(cfg, fetch_sleep=no_sleep).cycle(emu.now)
        assert again.processed == [] and dump(ledger_path) == want, point


def test_a_bar_is_processed_at_most_once(emu, source, tmp_path):
    """The bars primary key refuses a second copy of a bar, whatever the caller does."""
    import sqlite3

    cfg = make_config(emu.url, tmp_path, step=STEP)
    _first_cycle(cfg, emu, source)
    with Ledger.open(tmp_path / "acct.sqlite", create=False) as ledger:
        row = ledger.conn.execute("SELECT * FROM bars").fetchone()
        with pytest.raises(sqlite3.IntegrityError):
            ledger.conn.execute(f"INSERT INTO bars VALUES ({','.join('?' * len(row))})", row)
