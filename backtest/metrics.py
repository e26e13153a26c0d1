"""Out-of-sample metrics: direction, error, portfolio and significance, per model and per model x strategy.

Every number here is computed on walk-forward test bars only. Units: returns and
drawdowns are fractions (0.05 = 5%), Sharpe/Sortino/Calmar are annualised with
the timeframe's bars per year (365 for ``1d``, 8,760 for ``1h``), durations in days.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import (
    accuracy_score, balanced_accuracy_score, confusion_matrix, f1_score, matthews_corrcoef, precision_score, recall_score,
)

from backtest import significance as sig
from backtest.schema import finite as _f


def classification(y_true: np.ndarray, predicted_up: np.ndarray) -> dict[str, Any]:
    """Direction metrics: positive = up (``r[t+1] > 0``), predicted up = the long signal (or ``r̂ > 0``).

    Computed with scikit-learn. A ratio whose denominator is 0 is undefined (None), never 0:
    ``precision`` = tp / (tp + fp) is None when nothing is predicted up (a portfolio that is never
    long), ``recall`` = tp / (tp + fn) is None when no bar went up, and ``f1`` (their harmonic mean)
    is None when either is.
    """
    actual = np.asarray(y_true) > 0
    pred = np.asarray(predicted_up, dtype=bool)
    tn, fp, fn, tp = confusion_matrix(actual, pred, labels=[False, True]).ravel()
    nan = float("nan")
    has_p, has_r = tp + fp > 0, tp + fn > 0
    return {
        "precision": _f(precision_score(actual, pred, zero_division=nan)) if has_p else None,
        "recall": _f(recall_score(actual, pred, zero_division=nan)) if has_r else None,
        "f1": _f(f1_score(actual, pred, zero_division=0)) if has_p and has_r else None,
        "accuracy": _f(accuracy_score(actual, pred)),
        "balanced_accuracy": _f(balanced_accuracy_score(actual, pred)) if len(set(actual)) > 1 else None,
        "mcc": _f(matthews_corrcoef(actual, pred)) if len(set(actual)) > 1 and len(set(pred)) > 1 else 0.0,
        "tp": int(tp), "fp": int(fp), "tn": int(tn), "fn": int(fn),
        "support": int(len(actual)),
        "base_rate": _f(actual.mean()) if len(actual) else None,
    }


def regression(y_true: np.ndarray, y_pred: np.ndarray, close: np.ndarray) -> dict[str, Any]:
    """Errors of the log-return forecasts and of the implied next close (quote currency).

    The ``*_ratio`` entries divide by the persistence forecast's error (r̂ = 0,
    next close = close): below 1 beats "no change" (Theil's U style).
    """
    y_true, y_pred, close = (np.asarray(a, dtype="float64") for a in (y_true, y_pred, close))
    err = y_pred - y_true
    actual_close = close * np.exp(y_true)
    price_err = close * np.exp(y_pred) - actual_close
    pers_err = -y_true
    pers_price = close - actual_close
    out = {
        "mse": float(np.mean(err**2)),
        "rmse": float(np.sqrt(np.mean(err**2))),
        "mae": float(np.mean(np.abs(err))),
        "price_mae": float(np.mean(np.abs(price_err))),
        "price_rmse": float(np.sqrt(np.mean(price_err**2))),
    }
    pers = {
        "mse": np.mean(pers_err**2), "rmse": np.sqrt(np.mean(pers_err**2)), "mae": np.mean(np.abs(pers_err)),
        "price_mae": np.mean(np.abs(pers_price)), "price_rmse": np.sqrt(np.mean(pers_price**2)),
    }
    for k in list(out):
        out[f"{k}_ratio"] = _f(out[k] / pers[k]) if pers[k] > 0 else None
    return {k: _f(v) for k, v in out.items()}


def model_significance(y_true: np.ndarray, y_pred: np.ndarray, horizon: int = 1) -> dict[str, Any]:
    """Diebold-Mariano (HLN-corrected, squared error) against persistence, and Pesaran-Timmermann on direction."""
    return {
        "diebold_mariano": sig.diebold_mariano(np.asarray(y_pred) - np.asarray(y_true), -np.asarray(y_true), h=horizon),
        "pesaran_timmermann": sig.pesaran_timmermann(y_true, y_pred),
    }


def portfolio_stats(pf: Any, column: str, periods_per_year: float, positions: pd.Series) -> dict[str, Any]:
    """Portfolio statistics of one vectorbt column, from vectorbt's own accessors.

    ``total_return``, ``cagr``, ``volatility`` (annualised std of bar returns),
    ``max_drawdown`` (fraction, negative), ``max_drawdown_duration_days``,
    ``exposure`` (share of bars held long), ``trades``, ``win_rate``,
    ``profit_factor``, ``fees_paid`` (quote currency).
    """
    col = pf[column]
    rets = col.returns()
    # A crypto year is 365 days of 24/7 trading; the bar length comes from the portfolio's freq,
    # so 1d bars annualise with 365 and 1h bars with 8,760. Never vectorbt's global default.
    # The first simulation bar is the first decision bar: nothing has been executed yet, so its
    # return (0) is left out, as in the bootstrap of the Sharpe difference.
    year = pd.Timedelta(days=365)
    acc = rets.iloc[1:].vbt.returns(freq=year / periods_per_year, year_freq=year)
    bars_per_day = periods_per_year / 365.0
    total = float(col.total_return())
    trades = col.trades
    dd = col.drawdowns
    max_dd_dur = dd.max_duration() if dd.count() else pd.Timedelta(0)
    if isinstance(max_dd_dur, pd.Timedelta):
        dur_days = max_dd_dur.total_seconds() / 86400
    else:
        dur_days = float(max_dd_dur) / bars_per_day if max_dd_dur == max_dd_dur else 0.0
    return {
        "total_return": _f(total),
        "cagr": _f(acc.annualized()),
        "volatility": _f(acc.annualized_volatility()),
        # A portfolio whose value never moves (always flat) has Sharpe 0, not "undefined": it ranks
        # above losing strategies and below winning ones, as it should.
        "sharpe": 0.0 if _never_moves(rets.iloc[1:]) else _f(acc.sharpe_ratio()),
        "sortino": _f(acc.sortino_ratio()),
        "calmar": _f(acc.calmar_ratio()),
        "max_drawdown": _f(col.max_drawdown()),
        "max_drawdown_duration_days": _f(dur_days),
        "exposure": _f(positions.mean()),
        "trades": int(trades.count()),
        "win_rate": _f(trades.win_rate()) if trades.count() else None,
        "profit_factor": _f(trades.profit_factor()) if trades.count() else None,
        "fees_paid": _f(col.orders.fees.sum()) if col.orders.count() else 0.0,
        "final_value": _f(col.final_value()),
    }


def _never_moves(returns: pd.Series) -> bool:
    r = returns.to_numpy(dtype="float64")
    return bool(len(r)) and bool(np.all(r == 0.0))


def mean_std(blocks: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Element-wise mean and standard deviation (ddof=1) of nested dicts of numbers (across seeds)."""
    mean: dict[str, Any] = {}
    std: dict[str, Any] = {}
    for key in blocks[0]:
        vals = [b.get(key) for b in blocks]
        if isinstance(vals[0], dict):
            mean[key], std[key] = mean_std([v for v in vals if isinstance(v, dict)])
        elif all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals if v is not None):
            nums = np.array([v for v in vals if v is not None], dtype="float64")
            mean[key] = _f(nums.mean()) if len(nums) else None
            std[key] = _f(nums.std(ddof=1)) if len(nums) > 1 else None
    return mean, std
