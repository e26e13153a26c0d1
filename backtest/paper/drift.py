"""The drift monitor: are the live paper results still what the backtest of the same config said to expect?

Two checks, both against a finished ``walkforward run`` directory of the same config
(``paper.drift.run_dir``), using only its **out-of-sample** numbers:

**Return band** (per portfolio). The backtest's per-bar returns of that portfolio,
``r[t] = equity[t] / equity[t-1] - 1`` (``equity.csv``, quote currency at each bar's
close), are resampled with a stationary block bootstrap (Politis & Romano 1994;
``arch.bootstrap.StationaryBootstrap``, mean block length ``paper.drift.block_bars`` or
arch's ``optimal_block_length`` estimate) into ``paper.drift.samples`` paths as long as
the paper period. The band at paper bar ``k`` is the ``level/2`` and ``1 - level/2``
quantiles of those paths' cumulative returns after ``k`` bars; the paper account's
cumulative return since its first decision, ``equity[k] / init_cash - 1``, is then
"inside the band", or "below (above) the band since <bar>" -- the first bar of the
current run of bars outside it. Bar 0 is the first decision: nothing is held yet, the
return is 0 and the band [0, 0].

Assumptions: the backtest's bar returns are a stationary, weakly dependent series (blocks
keep volatility clusters and autocorrelation up to about the block length); the market
and the model behave in the paper period as in the backtest period; the band is
*pointwise* (at each bar 5 % of backtest-like paths fall outside at ``level = 0.05``, and
over a long account a path leaves it now and then by chance). A band needs
``paper.drift.min_backtest_bars`` backtest bars and at least as many as the paper
period; with fewer it is not drawn and says why.

**Forecast test** (per model). Over the ``m`` paper bars whose outcome is known (the
forecast ``r̂[t+1]`` made at the close of ``t``, the realised ``r[t+1] = ln(close[t+1] /
close[t])``), the live error ratio ``MSE(model) / MSE(persistence)`` -- persistence
forecasts a log return of 0, so its MSE is ``mean(r²)`` -- is set against the same
ratio in every window of ``m`` consecutive backtest forecasts (``predictions.csv``,
the paper seed). ``p`` is the share of backtest windows at least as bad as the live
one; the live forecasts are "worse than the backtest" when ``p < level / 2``. The
windows overlap, so ``p`` is an empirical frequency, not an exact test; it needs
``min_backtest_bars`` backtest forecasts and at least 5 live outcomes.

If the backtest's bars overlap the paper period, the comparison says so (the two are then
not independent). Everything here is a function of its inputs: no clock, no files but the
run directory, no global state.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from backtest.config import DriftConfig
from backtest.errors import RunDirError

MIN_LIVE_OUTCOMES = 5


@dataclass
class Backtest:
    """The out-of-sample numbers of a finished run that the drift monitor compares with."""

    run_dir: Path
    returns: pd.DataFrame  # per-bar simple returns, one column per portfolio label (first bar dropped)
    errors: dict[str, pd.DataFrame]  # model -> frame (timestamp, y_true, y_pred) of the paper seed, in time order
    symbol: str
    timeframe: str | None
    last_bar: pd.Timestamp | None  # newest bar of the backtest's equity (open time, UTC)


def read_backtest(run_dir: str | Path, seed: int) -> Backtest:
    """Read ``equity.csv`` and ``predictions.csv`` of a finished run (RunDirError if missing or corrupt)."""
    from backtest.rundir import read_run

    d = Path(run_dir)
    cfg, _meta, preds = read_run(d)
    path = d / "equity.csv"
    if not path.is_file():
        raise RunDirError(f"{d}: not a finished run (equity.csv missing)")
    try:
        eq = pd.read_csv(path, index_col=0)
        eq.index = pd.to_datetime(eq.index, utc=True)
        eq = eq.astype("float64")
    except (ValueError, TypeError) as exc:
        raise RunDirError(f"{d}: corrupt equity.csv ({str(exc).splitlines()[0]})") from None
    returns = eq.pct_change().iloc[1:]
    if "seed" in preds.columns and (preds["seed"] == seed).any():
        preds = preds[preds["seed"] == seed]
    if "symbol" in preds.columns:
        preds = preds[preds["symbol"] == cfg.data.symbol]
    errors = {m: g.sort_values("timestamp")[["timestamp", "y_true", "y_pred"]].reset_index(drop=True)
              for m, g in preds.groupby("model")}
    return Backtest(d, returns, errors, cfg.data.symbol, cfg.data.timeframe, eq.index[-1] if len(eq) else None)


def column_for(label: str, columns: list[str], seed: int) -> str | None:
    """The backtest column of paper portfolio ``label`` (a run with several seeds adds ``/seed=<s>``)."""
    for c in (label, f"{label}/seed={seed}"):
        if c in columns:
            return c
    return None


# --------------------------------------------------------------------------- the return band
@dataclass
class Band:
    """Pointwise band of cumulative return after ``k = 0 .. n-1`` paper bars (fractions: 0.05 = 5 %)."""

    lower: np.ndarray
    median: np.ndarray
    upper: np.ndarray
    level: float
    samples: int
    block_bars: float
    backtest_bars: int


def return_band(returns: np.ndarray, n: int, cfg: DriftConfig) -> Band | str:
    """The band for a paper period of ``n`` bars from backtest bar returns ``returns``, or why there is none."""
    from arch.bootstrap import StationaryBootstrap, optimal_block_length

    r = np.asarray(returns, dtype="float64")
    r = r[np.isfinite(r)]
    need = max(cfg.min_backtest_bars, n - 1)
    if len(r) < need:
        return (f"too little backtest history for a band: {len(r)} out-of-sample bars, {need} needed "
                f"(paper.drift.min_backtest_bars = {cfg.min_backtest_bars}, paper period {n} bars)")
    steps = max(n - 1, 0)
    if cfg.block_bars is not None:
        block = float(cfg.block_bars)
    else:
        est = float(optimal_block_length(r)["stationary"].iloc[0]) if np.std(r) > 0 else 1.0
        block = float(np.clip(est if np.isfinite(est) else 1.0, 1.0, max(1.0, len(r) / 4)))
    paths = np.zeros((cfg.samples, steps))
    if steps:
        bs = StationaryBootstrap(block, r, seed=np.random.default_rng(cfg.seed))
        for i, (pos, _kw) in enumerate(bs.bootstrap(cfg.samples)):
            paths[i] = pos[0][:steps]  # the first `steps` bars of a stationary resample: a path of that length
    cum = np.concatenate([np.zeros((cfg.samples, 1)), np.cumprod(1.0 + paths, axis=1) - 1.0], axis=1)
    lo, mid, hi = np.quantile(cum, [cfg.level / 2, 0.5, 1 - cfg.level / 2], axis=0)
    return Band(lo, mid, hi, cfg.level, cfg.samples, block, len(r))


@dataclass
class BandCheck:
    """Where one portfolio's cumulative return stands against its band."""

    portfolio: str
    state: str  # "inside" | "below" | "above" | "no band"
    since: pd.Timestamp | None  # first bar of the current run outside the band
    cum_return: float | None  # fraction since the first decision, at the newest bar
    lower: float | None
    upper: float | None
    bars: int
    message: str
    series: dict[str, list[Any]] = field(default_factory=dict)  # times, cum, lower, median, upper (for the chart)


def check_band(portfolio: str, times: pd.DatetimeIndex, cum: np.ndarray, band: Band | str) -> BandCheck:
    """Compare cumulative returns ``cum`` (one per paper bar, ``times`` = bar open times) with ``band``."""
    n = len(cum)
    if isinstance(band, str):
        return BandCheck(portfolio, "no band", None, float(cum[-1]) if n else None, None, None, n, band)
    below, above = cum < band.lower - 1e-12, cum > band.upper + 1e-12
    state, outside = ("below", below) if below[-1] else ("above", above) if above[-1] else ("inside", None)
    since = None
    if outside is not None:
        k = n - 1
        while k > 0 and outside[k - 1]:
            k -= 1
        since = times[k]
    pct = f"{1 - band.level:.0%}"
    nums = (f"cumulative return {cum[-1]:+.2%} after {n} bars; {pct} band {band.lower[-1]:+.2%} .. "
            f"{band.upper[-1]:+.2%} from {band.backtest_bars} backtest bars")
    if state == "inside":
        msg = f"inside the band ({nums})"
    else:
        msg = f"{state} the band since {_day(since)} ({nums})"
    series = {"time": [t.isoformat() for t in times], "cum": cum.tolist(), "lower": band.lower.tolist(),
              "median": band.median.tolist(), "upper": band.upper.tolist()}
    return BandCheck(portfolio, state, since, float(cum[-1]), float(band.lower[-1]), float(band.upper[-1]), n, msg,
                     series)


# --------------------------------------------------------------------------- the forecast test
@dataclass
class ForecastCheck:
    """The live error ratio of one model against equally long backtest windows."""

    model: str
    state: str  # "in line" | "worse" | "better" | "not enough data"
    live_ratio: float | None  # MSE(model) / MSE(persistence) over the live outcomes
    p_worse: float | None  # share of backtest windows with a ratio >= the live one
    window_median: float | None
    window_upper: float | None  # the 1 - level/2 quantile of the backtest windows' ratio
    outcomes: int
    message: str


def live_errors(forecasts: pd.DataFrame, bars: pd.DataFrame, model: str) -> pd.DataFrame:
    """Live (timestamp, y_true, y_pred) of ``model``: the forecast at bar t against r[t+1] from the ledger's closes."""
    f = forecasts[forecasts["model"] == model][["bar_time", "y_pred"]].set_index("bar_time")["y_pred"]
    close = bars.set_index("bar_time")["close"]
    y_true = np.log(close.shift(-1) / close).dropna()
    both = pd.concat([y_true.rename("y_true"), f.rename("y_pred")], axis=1, join="inner").dropna()
    return both.reset_index(names="timestamp")


def check_forecasts(model: str, live: pd.DataFrame, backtest: pd.DataFrame | None, cfg: DriftConfig) -> ForecastCheck:
    """``live`` and ``backtest``: frames of (y_true, y_pred) log returns in time order."""
    m = len(live)
    if backtest is None or backtest.empty:
        return ForecastCheck(model, "not enough data", None, None, None, None, m,
                             f"no backtest forecasts of {model} in the run")
    need = max(cfg.min_backtest_bars, m)
    if m < MIN_LIVE_OUTCOMES or len(backtest) < need:
        return ForecastCheck(model, "not enough data", None, None, None, None, m,
                             f"not enough data for the forecast test: {m} live outcomes ({MIN_LIVE_OUTCOMES} needed), "
                             f"{len(backtest)} backtest forecasts ({need} needed)")
    se_live = float(((live["y_true"] - live["y_pred"]) ** 2).sum())
    base_live = float((live["y_true"] ** 2).sum())
    ratio = se_live / base_live if base_live > 0 else np.inf
    se = ((backtest["y_true"] - backtest["y_pred"]) ** 2).rolling(m).sum().to_numpy()[m - 1:]
    base = (backtest["y_true"] ** 2).rolling(m).sum().to_numpy()[m - 1:]
    with np.errstate(divide="ignore", invalid="ignore"):
        windows = np.where(base > 0, se / base, np.inf)
    p = float(np.mean(windows >= ratio))
    med, hi = (float(x) for x in np.quantile(windows, [0.5, 1 - cfg.level / 2]))
    p_better = float(np.mean(windows <= ratio))
    state = "worse" if p < cfg.level / 2 else "better" if p_better < cfg.level / 2 else "in line"
    word = {"worse": "worse than the backtest", "better": "better than the backtest", "in line": "in line with the backtest"}
    msg = (f"{model} forecasts {word[state]}: MSE / persistence {ratio:.3f} over {m} live bars; backtest windows "
           f"of {m} bars: median {med:.3f}, {1 - cfg.level / 2:.1%} quantile {hi:.3f}, {p:.1%} at least as bad "
           f"({len(windows)} windows)")
    return ForecastCheck(model, state, ratio, p, med, hi, m, msg)


# --------------------------------------------------------------------------- both, for one account
@dataclass
class DriftReport:
    """The drift monitor's answer for one paper account."""

    bands: list[BandCheck]
    forecasts: list[ForecastCheck]
    notes: list[str]  # e.g. no run configured, overlap with the backtest, a portfolio the run lacks

    def alarms(self) -> list[str]:
        """Messages of the portfolios below their band and the models worse than the backtest."""
        return ([f"{b.portfolio}: {b.message}" for b in self.bands if b.state == "below"]
                + [f.message for f in self.forecasts if f.state == "worse"])

    def to_json(self) -> dict[str, Any]:
        return {
            "notes": self.notes,
            "bands": [{"portfolio": b.portfolio, "state": b.state, "since": b.since.isoformat() if b.since else None,
                       "cum_return": b.cum_return, "lower": b.lower, "upper": b.upper, "bars": b.bars,
                       "message": b.message, "series": b.series} for b in self.bands],
            "forecasts": [f.__dict__ for f in self.forecasts],
            "alarms": self.alarms(),
        }


def drift_report(snapshot: Any, cfg: DriftConfig, *, backtest: Backtest | None = None) -> DriftReport:
    """Both checks for the account in ``snapshot`` (:class:`~backtest.paper.readonly.Snapshot`).

    ``backtest`` defaults to ``read_backtest(cfg.run_dir, seed)``; a missing or corrupt run is a note, not an error.
    """
    acct = snapshot.account
    if acct is None or snapshot.bars.empty:
        return DriftReport([], [], ["no bar processed yet"])
    if backtest is None:
        if not cfg.run_dir:
            return DriftReport([], [], ["no backtest to compare with: set paper.drift.run_dir to a finished "
                                        "`walkforward run` directory of this config"])
        try:
            backtest = read_backtest(cfg.run_dir, acct.seed)
        except RunDirError as err:
            return DriftReport([], [], [f"drift monitor off: {err}"])
    notes = []
    if backtest.symbol != acct.symbol or (backtest.timeframe and backtest.timeframe != acct.timeframe):
        notes.append(f"the backtest is of {backtest.symbol} {backtest.timeframe}, the account of {acct.symbol} "
                     f"{acct.timeframe}")
    first = pd.Timestamp(snapshot.bars["bar_time"].iloc[0]).tz_convert("UTC")
    if backtest.last_bar is not None and backtest.last_bar >= first:
        notes.append(f"the backtest's bars overlap the paper period (backtest to {_day(backtest.last_bar)}, paper "
                     f"from {_day(first)}): the two are not independent")
    eq = snapshot.equity
    times = pd.DatetimeIndex(eq.index)
    bands = []
    for label in acct.labels:
        if label not in eq.columns:
            continue
        cum = eq[label].to_numpy() / acct.init_cash - 1.0
        col = column_for(label, list(backtest.returns.columns), acct.seed)
        band: Band | str = (f"the backtest run has no portfolio {label!r}" if col is None
                            else return_band(backtest.returns[col].to_numpy(), len(cum), cfg))
        bands.append(check_band(label, times, cum, band))
    kinds = {m: acct.identity.get("models", {}).get(m, {}).get("type") for m in acct.models}
    checks = [check_forecasts(m, live_errors(snapshot.forecasts, snapshot.bars, m), backtest.errors.get(m), cfg)
              for m in acct.models if kinds[m] != "persistence"]  # persistence is the reference: its ratio is 1
    return DriftReport(bands, checks, notes)


def _day(t: pd.Timestamp) -> str:
    t = pd.Timestamp(t)
    return t.strftime("%Y-%m-%d") if t == t.normalize() else t.strftime("%Y-%m-%d %H:%M")
