"""Walk-forward selection: before each test block, choose a grid point from earlier blocks' results only.

A sweep's candidates (grid point x model) each have a per-bar out-of-sample record: a loss (squared error of
the forecast of ``r[t+1]``) or a strategy return (the portfolio's return over bar ``t+1``, decided at the
close of bar ``t``). Bars are grouped into the walk-forward test blocks (fold ``k`` tests bars
``[T_k, T_{k+1})``). The choice for block ``k`` is a function of the rows of blocks ``< k`` only -- the
block's own results, known only when it ends, are never used -- so the chosen candidate's forecasts for
block ``k`` could have been traded at the time (the leakage test in ``tests/test_selection.py`` puts
garbage after block ``k`` and checks that no choice at or before ``k`` moves).

Rules, stated once:

* **criterion** ``mse``: lowest mean squared error over the rows of the last ``lookback`` blocks (all earlier
  blocks when ``lookback = 0``); ``sharpe``: highest mean / standard deviation of the per-bar returns over
  those rows (per bar, not annualised: the ranking is the same). A score that is undefined (no finite rows,
  a constant return series) ranks last.
* **minimum history**: until ``min_history`` earlier blocks exist (and always for block 0), the first
  candidate in grid order is chosen (the grid's first point: the choice a user makes without data).
* **ties**: the candidate earlier in grid order wins.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from backtest.errors import ConfigError

CRITERIA = ("mse", "sharpe")


@dataclass(frozen=True)
class Criterion:
    """How a grid point is chosen: ``name`` (``mse`` | ``sharpe``), ``lookback`` blocks (0 = every earlier
    block) and ``min_history`` earlier blocks before the criterion is used (before: the first grid point)."""

    name: str = "mse"
    lookback: int = 0
    min_history: int = 1

    @property
    def higher_is_better(self) -> bool:
        return self.name == "sharpe"

    def text(self) -> str:
        what = {"mse": "lowest mean squared error", "sharpe": "highest Sharpe ratio of its long/flat portfolio"}[self.name]
        over = "every earlier test block" if self.lookback == 0 else f"the last {self.lookback} earlier test blocks"
        return (f"{what} over {over}; the first grid point until {self.min_history} earlier block(s) exist; "
                f"ties go to the earlier grid point")


def parse_criterion(text: str) -> Criterion:
    """``"mse"``, ``"mse:4"`` (last 4 blocks), ``"sharpe:6:3"`` (last 6 blocks, at least 3 earlier blocks).

    A malformed text is one :class:`ConfigError` line naming the allowed forms."""
    parts = [p.strip() for p in str(text).split(":")]
    name = parts[0].lower()
    form = "--select CRITERION[:LOOKBACK[:MIN_HISTORY]] with CRITERION mse or sharpe, e.g. mse:4:2"
    if name not in CRITERIA or len(parts) > 3:
        raise ConfigError(f"--select {text!r}: expected {form}")
    try:
        nums = [int(p) for p in parts[1:]]
    except ValueError:
        raise ConfigError(f"--select {text!r}: LOOKBACK and MIN_HISTORY are whole numbers ({form})") from None
    lookback = nums[0] if nums else 0
    min_history = nums[1] if len(nums) > 1 else 1
    if lookback < 0 or min_history < 1:
        raise ConfigError(f"--select {text!r}: LOOKBACK >= 0 (0 = every earlier block) and MIN_HISTORY >= 1")
    return Criterion(name, lookback, min_history)


def window_score(values: np.ndarray, criterion: Criterion) -> float:
    """The criterion over one window of per-bar values (rows: bars); NaN when undefined."""
    v = values[np.isfinite(values)]
    if criterion.name == "mse":
        return float(v.mean()) if len(v) else float("nan")
    if len(v) < 2:
        return float("nan")
    sd = float(v.std(ddof=1))
    return float(v.mean() / sd) if sd > 0 else float("nan")


def block_scores(per_bar: pd.DataFrame, blocks: pd.Series, criterion: Criterion) -> pd.DataFrame:
    """Each candidate's criterion score as it stood before each block.

    ``per_bar``: rows = test bars (decision bar t), columns = candidates in grid order; squared errors for
    ``mse``, per-bar strategy returns for ``sharpe``. ``blocks``: the block number of each row (same index,
    non-decreasing). Row ``k`` of the result (indexed by block number) is computed from the rows of blocks
    ``[k - lookback, k)`` alone (all of ``< k`` when ``lookback = 0``): NaN for block 0.
    """
    b = pd.Series(np.asarray(blocks), index=per_bar.index)
    ids = sorted(pd.unique(b))
    values = per_bar.to_numpy(dtype=float)
    out = np.full((len(ids), per_bar.shape[1]), np.nan)
    for i, k in enumerate(ids):
        lo = ids[max(0, i - criterion.lookback)] if criterion.lookback else ids[0]
        rows = ((b >= lo) & (b < k)).to_numpy()
        if not rows.any():
            continue
        for j in range(per_bar.shape[1]):
            out[i, j] = window_score(values[rows, j], criterion)
    return pd.DataFrame(out, index=pd.Index(ids, name="block"), columns=per_bar.columns)


def choose(scores: pd.DataFrame, criterion: Criterion) -> pd.Series:
    """The candidate chosen for each block (index of ``scores``) by the module's rules.

    ``scores``: :func:`block_scores`. Before ``min_history`` earlier blocks exist: the first column.
    Otherwise the best finite score (ties: the earlier column); no finite score: the first column."""
    cols = list(scores.columns)
    chosen = []
    for i, (_, row) in enumerate(scores.iterrows()):
        vals = row.to_numpy(dtype=float)
        if i < criterion.min_history or not np.isfinite(vals).any():
            chosen.append(cols[0])
            continue
        v = np.where(np.isfinite(vals), vals, -np.inf if criterion.higher_is_better else np.inf)
        j = int(np.argmax(v)) if criterion.higher_is_better else int(np.argmin(v))  # first of the ties
        chosen.append(cols[j])
    return pd.Series(chosen, index=scores.index, name="chosen")


def select(per_bar: pd.DataFrame, blocks: pd.Series, criterion: Criterion) -> pd.Series:
    """Walk-forward choices: the candidate traded in each block (index: block number)."""
    return choose(block_scores(per_bar, blocks, criterion), criterion)


def selected_rows(forecasts: dict[str, pd.DataFrame], blocks: pd.Series, chosen: pd.Series) -> pd.DataFrame:
    """The selection's forecasts: for every block, the rows of the candidate chosen for it.

    ``forecasts``: candidate -> its prediction rows (``timestamp`` column, every seed); ``blocks``: block number
    by decision bar (a Series indexed by timestamp). A ``chosen`` column names the candidate each row came from.
    """
    parts = []
    for k, cand in chosen.items():
        bars = blocks.index[blocks.to_numpy() == k]
        f = forecasts[cand]
        part = f[f["timestamp"].isin(bars)].copy()
        part["chosen"] = cand
        parts.append(part)
    return pd.concat(parts, ignore_index=True)


def hindsight_best(per_bar: pd.DataFrame, criterion: Criterion) -> str:
    """The candidate best by the criterion over every test bar (known only after the fact: not tradeable)."""
    vals = np.array([window_score(per_bar[c].to_numpy(dtype=float), criterion) for c in per_bar.columns])
    v = np.where(np.isfinite(vals), vals, -np.inf if criterion.higher_is_better else np.inf)
    return str(per_bar.columns[int(np.argmax(v)) if criterion.higher_is_better else int(np.argmin(v))])


__all__ = ["CRITERIA", "Criterion", "block_scores", "choose", "hindsight_best", "parse_criterion", "select",
           "selected_rows", "window_score"]
