"""The paper ledger: one SQLite file per account, one transaction per bar.

Every closed bar is written in a single ``BEGIN IMMEDIATE ... COMMIT`` keyed by
``(account, symbol, timeframe, bar_time)`` (the primary key of ``bars``): a crash
at any point leaves all of a bar's records or none of them, and a bar can never
be processed twice. Times are bar **open** times, UTC, stored as ISO 8601 text
(``2024-01-01T00:00:00+00:00``), which sorts chronologically.

Tables (all keyed by ``account, symbol, timeframe`` first):

``account``       the config identity: exchange, symbol, timeframe, portfolios (strategy set),
                  models, fingerprint of everything that shapes a number, the engine window
                  (``origin`` = row 0, ``first_bar`` = row ``history``, the first decision)
``history_bars``  the candles before the first decision (row ``0 .. history-1``): model and
                  indicator warm-up, kept so the ledger alone reproduces every number
``bars``          one row per processed bar (row ``idx`` of the window), its OHLCV
                  (both bar tables: ``synthetic`` 1 = inserted or price-replaced by
                  ``data.repair = "ffill"``, its prices never traded; 0 = real; NULL = not
                  recorded, a bar written before schema version 2)
``forecasts``     per bar and model: predicted log return r̂[t+1] (``y_pred``; ``y_pred_steps``
                  all K steps as JSON), the fold that made it
``signals``       per bar and portfolio: the desired position for bar t+1 (1 long, 0 flat)
``orders``        a change of position decided at the close of ``decision_time``, to be filled
                  at the next bar's open; ``pending`` until that bar is processed
``fills``         per bar and portfolio: the order filled at this bar's open (size, open,
                  exec price, fees, cash and position after); never on a synthetic bar: an
                  order whose next bar is synthetic stays ``pending`` and fills at the open of
                  the next real bar (``bar_time`` later than the bar after ``decision_time``)
``positions``     per bar and portfolio: position (base currency) and cash (quote) after the fills
``equity``        per bar and portfolio: close and value ``cash + position * close`` (quote)
``trainings``     per model and fold: when and on which rows the model was retrained
``sandbox_orders`` orders sent to the exchange sandbox (``paper.sandbox_orders``), outcome

Schema versions (``PRAGMA user_version``): 1 the first; 2 adds ``synthetic`` to
``bars`` and ``history_bars``. :meth:`Ledger.open` migrates an older ledger in one
transaction (:data:`MIGRATIONS`; the bars it already holds get NULL: not recorded).

No API key or secret is ever written here.
"""
from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from backtest.errors import LedgerError
from backtest.paper.fills import Fill
from backtest.paper.hooks import crash_point

SCHEMA_VERSION = 2

#: Statements that take a ledger from version ``v`` to ``v + 1``, run in one transaction by :meth:`Ledger.open`.
MIGRATIONS: dict[int, list[str]] = {
    1: ["ALTER TABLE history_bars ADD COLUMN synthetic INTEGER CHECK (synthetic IN (0, 1))",
        "ALTER TABLE bars ADD COLUMN synthetic INTEGER CHECK (synthetic IN (0, 1))"],
}

_KEY = "account TEXT NOT NULL, symbol TEXT NOT NULL, timeframe TEXT NOT NULL"
_BAR_FK = "FOREIGN KEY (account, symbol, timeframe, bar_time) REFERENCES bars (account, symbol, timeframe, bar_time)"

SCHEMA = f"""
CREATE TABLE account (
    account TEXT PRIMARY KEY,
    exchange TEXT NOT NULL,
    symbol TEXT NOT NULL,
    timeframe TEXT NOT NULL,
    portfolios TEXT NOT NULL,
    models TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    identity TEXT NOT NULL,
    origin TEXT NOT NULL,
    first_bar TEXT NOT NULL,
    history INTEGER NOT NULL,
    seed INTEGER NOT NULL,
    init_cash REAL NOT NULL,
    fees REAL NOT NULL,
    slippage REAL NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE history_bars (
    {_KEY}, bar_time TEXT NOT NULL, idx INTEGER NOT NULL,
    open REAL NOT NULL, high REAL NOT NULL, low REAL NOT NULL, close REAL NOT NULL, volume REAL,
    synthetic INTEGER CHECK (synthetic IN (0, 1)),
    PRIMARY KEY (account, symbol, timeframe, bar_time)
);
CREATE TABLE bars (
    {_KEY}, bar_time TEXT NOT NULL, idx INTEGER NOT NULL,
    open REAL NOT NULL, high REAL NOT NULL, low REAL NOT NULL, close REAL NOT NULL, volume REAL,
    processed_at TEXT NOT NULL,
    synthetic INTEGER CHECK (synthetic IN (0, 1)),
    PRIMARY KEY (account, symbol, timeframe, bar_time),
    UNIQUE (account, symbol, timeframe, idx)
);
CREATE TABLE forecasts (
    {_KEY}, bar_time TEXT NOT NULL, model TEXT NOT NULL, seed INTEGER NOT NULL, fold INTEGER NOT NULL,
    y_pred REAL NOT NULL, y_pred_steps TEXT NOT NULL, close REAL NOT NULL, pred_close REAL NOT NULL,
    PRIMARY KEY (account, symbol, timeframe, bar_time, model), {_BAR_FK}
);
CREATE TABLE signals (
    {_KEY}, bar_time TEXT NOT NULL, portfolio TEXT NOT NULL, long INTEGER NOT NULL CHECK (long IN (0, 1)),
    PRIMARY KEY (account, symbol, timeframe, bar_time, portfolio), {_BAR_FK}
);
CREATE TABLE orders (
    {_KEY}, decision_time TEXT NOT NULL, portfolio TEXT NOT NULL,
    side TEXT NOT NULL CHECK (side IN ('buy', 'sell')),
    status TEXT NOT NULL CHECK (status IN ('pending', 'filled', 'rejected')),
    fill_time TEXT,
    PRIMARY KEY (account, symbol, timeframe, decision_time, portfolio),
    FOREIGN KEY (account, symbol, timeframe, decision_time) REFERENCES bars (account, symbol, timeframe, bar_time)
);
CREATE TABLE fills (
    {_KEY}, bar_time TEXT NOT NULL, portfolio TEXT NOT NULL, decision_time TEXT NOT NULL,
    side TEXT NOT NULL CHECK (side IN ('buy', 'sell')),
    size REAL NOT NULL, price REAL NOT NULL, exec_price REAL NOT NULL, fees REAL NOT NULL,
    cash_after REAL NOT NULL, position_after REAL NOT NULL,
    PRIMARY KEY (account, symbol, timeframe, bar_time, portfolio), {_BAR_FK}
);
CREATE TABLE positions (
    {_KEY}, bar_time TEXT NOT NULL, portfolio TEXT NOT NULL, position REAL NOT NULL, cash REAL NOT NULL,
    PRIMARY KEY (account, symbol, timeframe, bar_time, portfolio), {_BAR_FK}
);
CREATE TABLE equity (
    {_KEY}, bar_time TEXT NOT NULL, portfolio TEXT NOT NULL, close REAL NOT NULL, equity REAL NOT NULL,
    PRIMARY KEY (account, symbol, timeframe, bar_time, portfolio), {_BAR_FK}
);
CREATE TABLE trainings (
    {_KEY}, bar_time TEXT NOT NULL, model TEXT NOT NULL, fold INTEGER NOT NULL, seed INTEGER NOT NULL,
    train_start INTEGER NOT NULL, train_stop INTEGER NOT NULL, val_start INTEGER NOT NULL,
    val_stop INTEGER NOT NULL, test_start INTEGER NOT NULL,
    first_train_bar TEXT NOT NULL, last_train_bar TEXT NOT NULL, n_train INTEGER NOT NULL, n_val INTEGER NOT NULL,
    best_val_loss REAL, path TEXT NOT NULL, seconds REAL NOT NULL, trained_at TEXT NOT NULL,
    PRIMARY KEY (account, symbol, timeframe, model, fold), {_BAR_FK}
);
CREATE TABLE sandbox_orders (
    {_KEY}, decision_time TEXT NOT NULL, portfolio TEXT NOT NULL, client_order_id TEXT NOT NULL,
    side TEXT NOT NULL, amount REAL NOT NULL, status TEXT NOT NULL, exchange_order_id TEXT, error TEXT,
    sent_at TEXT NOT NULL,
    PRIMARY KEY (account, symbol, timeframe, decision_time, portfolio)
);
"""

#: Per-table primary-key order for dumps and comparisons.
TABLES: dict[str, str] = {
    "account": "account",
    "history_bars": "bar_time",
    "bars": "bar_time",
    "forecasts": "bar_time, model",
    "signals": "bar_time, portfolio",
    "orders": "decision_time, portfolio",
    "fills": "bar_time, portfolio",
    "positions": "bar_time, portfolio",
    "equity": "bar_time, portfolio",
    "trainings": "model, fold",
    "sandbox_orders": "decision_time, portfolio",
}
#: Columns that hold wall-clock facts (when, how long), not results: excluded by ``dump(results_only=True)``.
WALL_CLOCK_COLUMNS = frozenset({"created_at", "processed_at", "trained_at", "seconds", "sent_at"})


def iso(ts: pd.Timestamp) -> str:
    """A UTC timestamp as the ledger's text form."""
    return pd.Timestamp(ts).tz_convert("UTC").isoformat()


def ts(text: str) -> pd.Timestamp:
    """The ledger's text form back to a UTC timestamp."""
    return pd.Timestamp(text).tz_convert("UTC")


def utc_now_iso() -> str:
    return pd.Timestamp.now(tz="UTC").isoformat()


# --------------------------------------------------------------------------- records
@dataclass(frozen=True)
class Portfolio:
    """One paper portfolio: a column of the backtest's signal frame."""

    label: str
    model: str | None
    strategy: str
    strategy_type: str


@dataclass
class Account:
    """The ``account`` row: the config identity of the ledger."""

    account: str
    exchange: str
    symbol: str
    timeframe: str
    portfolios: list[Portfolio]
    models: list[str]
    fingerprint: str
    identity: dict[str, Any]
    origin: pd.Timestamp  # row 0 of the engine window
    first_bar: pd.Timestamp  # row ``history``: the first paper decision
    history: int
    seed: int
    init_cash: float
    fees: float
    slippage: float
    created_at: str = ""

    @property
    def labels(self) -> list[str]:
        return [p.label for p in self.portfolios]

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.account, self.symbol, self.timeframe)


@dataclass
class TrainingRow:
    """A (re)training of one model at the first bar of walk-forward fold ``fold``."""

    model: str
    fold: int
    seed: int
    bar_time: pd.Timestamp
    train_start: int
    train_stop: int
    val_start: int
    val_stop: int
    test_start: int
    first_train_bar: pd.Timestamp
    last_train_bar: pd.Timestamp
    best_val_loss: float | None
    path: str  # model folder, relative to the ledger's folder
    seconds: float
    trained_at: str = ""

    @property
    def n_train(self) -> int:
        return self.train_stop - self.train_start

    @property
    def n_val(self) -> int:
        return self.val_stop - self.val_start


@dataclass
class ForecastRow:
    model: str
    seed: int
    fold: int
    steps: list[float]  # r̂[t+1..t+K], log returns

    @property
    def y_pred(self) -> float:
        return float(self.steps[0])


@dataclass
class BarRecord:
    """Everything one bar writes, computed before its transaction begins."""

    time: pd.Timestamp
    idx: int
    ohlcv: tuple[float, float, float, float, float]
    synthetic: bool = False  # inserted or price-replaced by the repair: no fill at its open
    waiting: dict[str, tuple[pd.Timestamp, str]] = field(default_factory=dict)  # pending orders kept (synthetic bar)
    fills: list[tuple[str, pd.Timestamp, Fill]] = field(default_factory=list)  # portfolio, decision time, fill
    book: dict[str, tuple[float, float]] = field(default_factory=dict)  # portfolio -> (position, cash) after fills
    equity: dict[str, float] = field(default_factory=dict)
    forecasts: list[ForecastRow] = field(default_factory=list)
    signals: dict[str, bool] = field(default_factory=dict)
    orders: dict[str, str] = field(default_factory=dict)  # portfolio -> "buy" | "sell", fill at the next open
    trainings: list[TrainingRow] = field(default_factory=list)

    @property
    def close(self) -> float:
        return self.ohlcv[3]


@dataclass
class LedgerState:
    """What the next bar needs from the ledger."""

    last_time: pd.Timestamp | None
    last_idx: int | None
    book: dict[str, tuple[float, float]]  # portfolio -> (position, cash)
    pending: dict[str, tuple[pd.Timestamp, str]]  # portfolio -> (decision time, side)
    forecasts: list[dict[str, Any]]  # rows: timestamp, model, seed, fold, y_pred, steps
    current: dict[str, TrainingRow]  # model -> its latest training

    def apply(self, rec: BarRecord) -> None:
        """Advance to the state after ``rec`` was committed."""
        self.last_time, self.last_idx = rec.time, rec.idx
        self.book = dict(rec.book)
        self.pending = {**rec.waiting, **{label: (rec.time, side) for label, side in rec.orders.items()}}
        for f in rec.forecasts:
            self.forecasts.append({"timestamp": rec.time, "model": f.model, "seed": f.seed, "fold": f.fold,
                                   "y_pred": f.y_pred, "steps": list(f.steps)})
        for t in rec.trainings:
            self.current[t.model] = t


# --------------------------------------------------------------------------- the ledger
class Ledger:
    """An open ledger file. Use :meth:`open`; close it with :meth:`close` (or as a context manager)."""

    def __init__(self, path: Path, conn: sqlite3.Connection) -> None:
        self.path = path
        self.conn = conn

    @classmethod
    def open(cls, path: str | Path, *, create: bool = True) -> "Ledger":
        """Open (and with ``create``, make) the ledger at ``path``; a file that is not a ledger is a LedgerError."""
        p = Path(path)
        if not p.exists():
            if not create:
                raise LedgerError(f"{p}: no paper ledger here; run 'walkforward paper run CONFIG' first")
            p.parent.mkdir(parents=True, exist_ok=True)
        try:
            conn = sqlite3.connect(p, isolation_level=None, timeout=30.0)
            conn.execute("PRAGMA foreign_keys = ON")
            conn.execute("PRAGMA synchronous = FULL")
            version = conn.execute("PRAGMA user_version").fetchone()[0]
        except sqlite3.DatabaseError as exc:
            raise LedgerError(f"{p}: not a readable paper ledger ({exc})") from None
        ledger = cls(p, conn)
        if version == 0:
            if not create:
                conn.close()
                raise LedgerError(f"{p}: not a paper ledger (no schema)")
            ledger._create_schema()
        elif version in MIGRATIONS:
            ledger._migrate(version)
        elif version != SCHEMA_VERSION:
            conn.close()
            raise LedgerError(f"{p}: ledger schema version {version} is not supported (expected {SCHEMA_VERSION})")
        return ledger

    def _create_schema(self) -> None:
        with self.transaction():
            tables = [r[0] for r in self.conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
            if tables:
                raise LedgerError(f"{self.path}: an SQLite file that is not a paper ledger (tables {', '.join(tables)})")
            for stmt in SCHEMA.split(";"):
                if stmt.strip():
                    self.conn.execute(stmt)
            self.conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def _migrate(self, version: int) -> None:
        """Bring a ledger of an older schema ``version`` to :data:`SCHEMA_VERSION`, all steps in one transaction."""
        with self.transaction() as c:
            if c.execute("PRAGMA user_version").fetchone()[0] != version:  # another process migrated it
                return
            for v in range(version, SCHEMA_VERSION):
                for stmt in MIGRATIONS[v]:
                    c.execute(stmt)
            c.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> "Ledger":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT``; any exception rolls everything back."""
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    # ----------------------------------------------------------------- account
    def account(self) -> Account | None:
        """The account row, or None for a new ledger."""
        cur = self.conn.execute("SELECT * FROM account")
        row = cur.fetchone()
        if row is None:
            return None
        d = dict(zip([c[0] for c in cur.description], row))
        return Account(
            account=d["account"], exchange=d["exchange"], symbol=d["symbol"], timeframe=d["timeframe"],
            portfolios=[Portfolio(**p) for p in json.loads(d["portfolios"])], models=json.loads(d["models"]),
            fingerprint=d["fingerprint"], identity=json.loads(d["identity"]), origin=ts(d["origin"]),
            first_bar=ts(d["first_bar"]), history=int(d["history"]), seed=int(d["seed"]),
            init_cash=float(d["init_cash"]), fees=float(d["fees"]), slippage=float(d["slippage"]),
            created_at=d["created_at"],
        )

    def create_account(self, acct: Account, history: pd.DataFrame, synthetic: pd.Series | None = None) -> None:
        """Write the account row and the warm-up candles (rows ``0 .. history-1``) in one transaction;
        ``synthetic``: the repair's mask (True = synthetic bar; bars missing from it, or None, are real)."""
        if len(history) != acct.history or (len(history) and history.index[0] != acct.origin):
            raise LedgerError(f"{self.path}: {len(history)} history bars given for history = {acct.history}")
        with self.transaction() as c:
            if c.execute("SELECT COUNT(*) FROM account").fetchone()[0]:
                raise LedgerError(f"{self.path}: the ledger already has an account")
            c.execute(
                "INSERT INTO account VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (acct.account, acct.exchange, acct.symbol, acct.timeframe,
                 json.dumps([p.__dict__ for p in acct.portfolios]), json.dumps(acct.models), acct.fingerprint,
                 json.dumps(acct.identity, sort_keys=True), iso(acct.origin), iso(acct.first_bar), acct.history,
                 acct.seed, acct.init_cash, acct.fees, acct.slippage, acct.created_at or utc_now_iso()),
            )
            fake = (np.zeros(len(history), bool) if synthetic is None
                    else synthetic.reindex(history.index, fill_value=False).astype(bool).to_numpy())
            c.executemany(
                "INSERT INTO history_bars (account, symbol, timeframe, bar_time, idx, open, high, low, close, volume, "
                "synthetic) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                [(*acct.key, iso(t), i, *map(float, row), int(f)) for i, (t, row, f) in
                 enumerate(zip(history.index, history[["open", "high", "low", "close", "volume"]].to_numpy(), fake))],
            )

    # ----------------------------------------------------------------- state
    def last_bar(self, acct: Account) -> tuple[pd.Timestamp, int] | None:
        row = self.conn.execute(
            "SELECT bar_time, idx FROM bars WHERE account=? AND symbol=? AND timeframe=? ORDER BY bar_time DESC LIMIT 1",
            acct.key).fetchone()
        return None if row is None else (ts(row[0]), int(row[1]))

    def load_state(self, acct: Account) -> LedgerState:
        """The book after the last processed bar, its pending orders, all forecasts, the latest model per name."""
        c, key = self.conn, acct.key
        last = self.last_bar(acct)
        if last is None:
            book = {label: (0.0, acct.init_cash) for label in acct.labels}
        else:
            rows = c.execute("SELECT portfolio, position, cash FROM positions WHERE account=? AND symbol=? AND "
                             "timeframe=? AND bar_time=?", (*key, iso(last[0]))).fetchall()
            book = {p: (float(pos), float(cash)) for p, pos, cash in rows}
            if set(book) != set(acct.labels):
                raise LedgerError(f"{self.path}: positions of {iso(last[0])} do not match the account's portfolios")
        pending = {p: (ts(t), side) for t, p, side in c.execute(
            "SELECT decision_time, portfolio, side FROM orders WHERE account=? AND symbol=? AND timeframe=? "
            "AND status='pending'", key)}
        forecasts = [
            {"timestamp": ts(t), "model": m, "seed": int(s), "fold": int(k), "y_pred": float(y), "steps": json.loads(st)}
            for t, m, s, k, y, st in c.execute(
                "SELECT bar_time, model, seed, fold, y_pred, y_pred_steps FROM forecasts WHERE account=? AND symbol=? "
                "AND timeframe=? ORDER BY bar_time, rowid", key)
        ]
        current: dict[str, TrainingRow] = {}
        for t in self.trainings(acct):
            if t.model not in current or t.fold > current[t.model].fold:
                current[t.model] = t
        return LedgerState(last[0] if last else None, last[1] if last else None, book, pending, forecasts, current)

    def trainings(self, acct: Account) -> list[TrainingRow]:
        rows = self.conn.execute(
            "SELECT bar_time, model, fold, seed, train_start, train_stop, val_start, val_stop, test_start, "
            "first_train_bar, last_train_bar, best_val_loss, path, seconds, trained_at FROM trainings "
            "WHERE account=? AND symbol=? AND timeframe=? ORDER BY bar_time, model", acct.key).fetchall()
        return [TrainingRow(model=m, fold=int(k), seed=int(s), bar_time=ts(t), train_start=a, train_stop=b,
                            val_start=vs, val_stop=ve, test_start=te, first_train_bar=ts(f0), last_train_bar=ts(f1),
                            best_val_loss=loss, path=path, seconds=sec, trained_at=at)
                for t, m, k, s, a, b, vs, ve, te, f0, f1, loss, path, sec, at in rows]

    def write_bar(self, acct: Account, rec: BarRecord, *, expect_last: pd.Timestamp | None) -> None:
        """Write one processed bar in one transaction (see :mod:`backtest.paper.hooks` for the crash points).

        ``expect_last`` is the last processed bar the record was computed from: if another
        process wrote a bar in between, nothing is written and a LedgerError is raised.
        """
        key, t = acct.key, iso(rec.time)
        now = utc_now_iso()
        with self.transaction() as c:
            last = c.execute("SELECT MAX(bar_time) FROM bars WHERE account=? AND symbol=? AND timeframe=?",
                             key).fetchone()[0]
            if (last is None) != (expect_last is None) or (last is not None and ts(last) != expect_last):
                raise LedgerError(f"{self.path}: the ledger changed while bar {t} was computed "
                                  f"(last bar {last}, expected {expect_last}); is another paper process running?")
            c.execute("INSERT INTO bars (account, symbol, timeframe, bar_time, idx, open, high, low, close, volume, "
                      "processed_at, synthetic) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                      (*key, t, rec.idx, *rec.ohlcv, now, int(rec.synthetic)))
            for label, decided, fill in rec.fills:
                n = c.execute("UPDATE orders SET status='filled', fill_time=? WHERE account=? AND symbol=? AND "
                              "timeframe=? AND decision_time=? AND portfolio=? AND status='pending' AND side=?",
                              (t, *key, iso(decided), label, fill.side)).rowcount
                if n != 1:
                    raise LedgerError(f"{self.path}: no pending {fill.side} order of {label} decided at {iso(decided)}")
                c.execute("INSERT INTO fills VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                          (*key, t, label, iso(decided), fill.side, fill.size, fill.price, fill.exec_price, fill.fees,
                           fill.cash_after, fill.position_after))
            # an order that could not be filled (no cash / nothing to sell) is closed as rejected; on a synthetic
            # bar no order is filled or rejected: every pending one waits for the next real bar's open
            if not rec.synthetic:
                c.execute("UPDATE orders SET status='rejected', fill_time=? WHERE account=? AND symbol=? AND "
                          "timeframe=? AND status='pending' AND decision_time < ?", (t, *key, t))
            crash_point("after_fill")
            c.executemany("INSERT INTO positions VALUES (?,?,?,?,?,?,?)",
                          [(*key, t, label, pos, cash) for label, (pos, cash) in rec.book.items()])
            c.executemany("INSERT INTO equity VALUES (?,?,?,?,?,?,?)",
                          [(*key, t, label, rec.close, eq) for label, eq in rec.equity.items()])
            for tr in rec.trainings:
                c.execute("INSERT INTO trainings VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                          (*key, t, tr.model, tr.fold, tr.seed, tr.train_start, tr.train_stop, tr.val_start,
                           tr.val_stop, tr.test_start, iso(tr.first_train_bar), iso(tr.last_train_bar), tr.n_train,
                           tr.n_val, tr.best_val_loss, tr.path, tr.seconds, tr.trained_at or now))
            c.executemany("INSERT INTO forecasts VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                          [(*key, t, f.model, f.seed, f.fold, f.y_pred, json.dumps(f.steps), rec.close,
                            rec.close * float(np.exp(f.y_pred))) for f in rec.forecasts])
            c.executemany("INSERT INTO signals VALUES (?,?,?,?,?,?)",
                          [(*key, t, label, int(bool(v))) for label, v in rec.signals.items()])
            crash_point("before_order")
            c.executemany("INSERT INTO orders VALUES (?,?,?,?,?,?,?,?)",
                          [(*key, t, label, side, "pending", None) for label, side in rec.orders.items()])
            crash_point("before_commit")
        crash_point("after_commit")

    def record_sandbox_order(self, acct: Account, decision: pd.Timestamp, portfolio: str, client_order_id: str,
                             side: str, amount: float, status: str, exchange_order_id: str | None,
                             error: str | None) -> None:
        """Record a sandbox order's outcome (its own small transaction, after the bar's)."""
        with self.transaction() as c:
            c.execute("INSERT OR REPLACE INTO sandbox_orders VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                      (*acct.key, iso(decision), portfolio, client_order_id, side, float(amount), status,
                       exchange_order_id, error, utc_now_iso()))

    # ----------------------------------------------------------------- readers
    def frame(self, table: str) -> pd.DataFrame:
        """A whole table as a DataFrame, in primary-key order."""
        if table not in TABLES:
            raise ValueError(f"unknown ledger table {table!r}")
        return pd.read_sql_query(f"SELECT * FROM {table} ORDER BY {TABLES[table]}", self.conn)

    def dump(self, *, results_only: bool = False) -> dict[str, list[tuple[Any, ...]]]:
        """Every table's rows in primary-key order; ``results_only`` drops wall-clock columns."""
        out: dict[str, list[tuple[Any, ...]]] = {}
        for table, order in TABLES.items():
            cur = self.conn.execute(f"SELECT * FROM {table} ORDER BY {order}")
            cols = [d[0] for d in cur.description]
            keep = [i for i, name in enumerate(cols) if not (results_only and name in WALL_CLOCK_COLUMNS)]
            out[table] = [tuple(row[i] for i in keep) for row in cur.fetchall()]
        return out

    def window_bars(self, acct: Account) -> pd.DataFrame:
        """The engine window: warm-up candles plus every processed bar (frame convention)."""
        cols = "bar_time, open, high, low, close, volume"
        rows = self.conn.execute(f"SELECT {cols} FROM history_bars WHERE account=? AND symbol=? AND timeframe=? "
                                 f"UNION ALL SELECT {cols} FROM bars WHERE account=? AND symbol=? AND timeframe=? "
                                 "ORDER BY bar_time", (*acct.key, *acct.key)).fetchall()
        index = pd.DatetimeIndex([ts(r[0]) for r in rows], name="timestamp")
        return pd.DataFrame([r[1:] for r in rows], index=index,
                            columns=["open", "high", "low", "close", "volume"]).astype("float64")

    def window_synthetic(self, acct: Account) -> pd.Series:
        """The engine window's synthetic-bar flags (index as :meth:`window_bars`): True = inserted or
        price-replaced by the repair; a bar written before schema version 2 (NULL) counts as real, as the
        engine of that version traded it."""
        rows = self.conn.execute("SELECT bar_time, synthetic FROM history_bars WHERE account=? AND symbol=? AND "
                                 "timeframe=? UNION ALL SELECT bar_time, synthetic FROM bars WHERE account=? AND "
                                 "symbol=? AND timeframe=? ORDER BY bar_time", (*acct.key, *acct.key)).fetchall()
        index = pd.DatetimeIndex([ts(r[0]) for r in rows], name="timestamp")
        return pd.Series([bool(r[1]) for r in rows], index=index, dtype=bool, name="synthetic")

    def equity_frame(self, acct: Account) -> pd.DataFrame:
        """Wide equity: index bar open time (UTC), one column per portfolio label, value at the close (quote)."""
        eq = self.frame("equity")
        if eq.empty:
            return pd.DataFrame(columns=acct.labels, index=pd.DatetimeIndex([], tz="UTC", name="timestamp"))
        wide = eq.pivot(index="bar_time", columns="portfolio", values="equity")
        wide.index = pd.DatetimeIndex([ts(t) for t in wide.index], name="timestamp")
        wide.columns.name = None
        return wide[[c for c in acct.labels if c in wide.columns]]

    def check_invariants(self, acct: Account, *, rtol: float = 1e-12) -> list[str]:
        """Problems found (empty = consistent): one row per bar per portfolio, contiguous bars,
        ``cash + position * close = equity``, every order filled (or rejected) at the next bar."""
        problems: list[str] = []
        bars = self.frame("bars")
        if len(bars):
            idx = bars["idx"].to_numpy()
            if not (np.diff(idx) == 1).all() or idx[0] != acct.history:
                problems.append(f"bar rows are not contiguous from row {acct.history}: {idx.tolist()[:10]}...")
            times = pd.DatetimeIndex([ts(t) for t in bars["bar_time"]])
            from backtest.data.frame import timeframe_delta

            if len(times) > 1 and not ((times[1:] - times[:-1]) == timeframe_delta(acct.timeframe)).all():
                problems.append("bar times are not one timeframe apart")
        n, labels = len(bars), set(acct.labels)
        for table in ("positions", "equity", "signals"):
            f = self.frame(table)
            counts = f.groupby("bar_time")["portfolio"].apply(lambda s: (len(s), set(s)))
            if len(counts) != n or any(c != (len(labels), labels) for c in counts):
                problems.append(f"{table}: not exactly one row per bar and portfolio")
        fc = self.frame("forecasts")
        if len(fc) != n * len(acct.models):
            problems.append(f"forecasts: {len(fc)} rows for {n} bars x {len(acct.models)} models")
        pos, eq = self.frame("positions"), self.frame("equity")
        if len(pos) and len(eq):
            m = pos.merge(eq, on=["account", "symbol", "timeframe", "bar_time", "portfolio"])
            lhs = m["cash"] + m["position"] * m["close"]
            bad = ~np.isclose(lhs, m["equity"], rtol=rtol, atol=0.0)
            if bad.any():
                problems.append(f"cash + position * close != equity in {int(bad.sum())} rows")
        orders, fills = self.frame("orders"), self.frame("fills")
        # the bar each order fills at: the first real (not synthetic) bar after its decision bar
        times = bars["bar_time"].tolist()
        fake = bars["synthetic"].fillna(0).astype(bool).tolist() if n else []
        due: dict[str, str | None] = {}
        upcoming: str | None = None
        for k in range(n - 1, -1, -1):
            due[times[k]] = upcoming
            if not fake[k]:
                upcoming = times[k]
        stale = orders[(orders["status"] == "pending") & orders["decision_time"].map(due).notna()]
        if len(stale):
            problems.append(f"{len(stale)} orders still pending after their fill bar")
        filled = orders[orders["status"] == "filled"]
        if len(filled) != len(fills):
            problems.append(f"{len(filled)} filled orders but {len(fills)} fills")
        if any(due.get(d) != f for d, f in zip(fills["decision_time"], fills["bar_time"])):
            problems.append("a fill is not at the first real bar after its decision")
        return problems
