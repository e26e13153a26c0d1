"""The one evaluation on several symbols: significance over symbols, the report's universe sections and ``compare``.

Data: the real daily slices of ``tests/universe/data`` (BTC/ETH/SOL, different start dates, common end
2021-03-31); forecasts from a causal rule and persistence (``tests/universe/eval_helpers.py``), so every number
is out of sample in shape. Test bars start after 120 bars of each symbol: SOL enters about ten weeks after BTC.
"""
from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from backtest import significance as sig
from backtest.atomic import write_text
from backtest.config import Config
from backtest.errors import DataError
from backtest.metrics import classification
from backtest.evaluate import beat_count, evaluate
from backtest.schema import RunMetrics, SchemaError
from backtest.significance import adjust_pvalues
from reports.compare import compare_runs
from reports.figures import heat_matrix
from reports.html import write_report
from tests.universe.eval_helpers import SYMBOLS, universe_bars, universe_predictions

CFG = Config.model_validate({"models": {"persistence": {"type": "persistence"}, "momentum": {"type": "linear"}},
                             "strategies": {"long_flat": {"type": "long_flat"}, "eager": {"type": "long_flat", "threshold": 0.0}},
                             "backtest": {"bootstrap_samples": 100}, "run": {"name": "uni"}})


@pytest.fixture(scope="module")
def uni():
    bars = universe_bars()
    preds = universe_predictions(bars)
    return bars, preds, evaluate(CFG, preds, bars, "1d")


def _holm(p: list[float]) -> list[float]:
    """Holm's step-down adjustment, written out: sorted p_(i) * (m - i), running maximum, capped at 1."""
    m, order = len(p), np.argsort(p, kind="stable")
    out, run = [0.0] * m, 0.0
    for rank, i in enumerate(order):
        run = max(run, min(1.0, p[i] * (m - rank)))
        out[i] = run
    return out


def _bh(p: list[float]) -> list[float]:
    """Benjamini-Hochberg step-up adjustment, written out: p_(i) * m / i, running minimum from the largest."""
    m, order = len(p), np.argsort(p, kind="stable")
    out, run = [0.0] * m, 1.0
    for rank in range(m - 1, -1, -1):
        i = order[rank]
        run = min(run, p[i] * m / (rank + 1))
        out[i] = run
    return out


def test_corrections_and_counts_by_hand() -> None:
    adj = adjust_pvalues([0.001, 0.03, 0.04])
    assert np.allclose(adj["holm"], [0.003, 0.06, 0.06]) and np.allclose(adj["bh"], [0.003, 0.04, 0.04])
    bc = beat_count("t", "h0", ["A", "B", "C"], [1.0, 2.0, 3.0], [0.001, 0.03, 0.04], [True, True, False])
    # a symbol counts only where the (adjusted) two-sided p < level AND the point estimate favours the model:
    # C's p is small but the model is worse there
    assert (bc.point, bc.raw, bc.holm, bc.bh, bc.n_symbols, bc.sided) == (2, 2, 1, 2, 3, "two-sided")
    assert beat_count("t", "h0", ["A", "B", "C"], [1.0, 2.0, 3.0], [0.001, 0.03, 0.04], [True] * 3, level=0.01).raw == 1
    # an undefined test counts as p = 1 and stays in the family
    adj = adjust_pvalues([0.001, 0.03, 0.04, None])
    assert np.allclose(adj["holm"], [0.004, 0.09, 0.09, 1.0])
    assert np.allclose(adj["bh"], [0.004, 0.04 * 4 / 3, 0.04 * 4 / 3, 1.0])


def test_symbol_counts_match_per_symbol_tests(uni) -> None:
    bars, preds, ev = uni
    m = RunMetrics.from_json(ev.metrics.to_json())
    assert m == ev.metrics  # the typed definition round-trips through JSON
    assert m.universe is not None and m.run.symbols == list(SYMBOLS) and m.run.periods_per_year == 365.0
    assert m.run.n_symbols == 3 and m.run.symbol == "universe of 3 symbols"
    rows = {r.portfolio: r for r in m.summary}
    assert set(rows) == {"persistence/long_flat", "momentum/long_flat", "persistence/eager", "momentum/eager",
                         "buy_and_hold", "always_flat", "sma_cross"}
    checked = 0
    for label, row in rows.items():
        if row.model is None:
            assert row.beats_buy_and_hold is None and row.beats_persistence is None
            continue
        bc = row.beats_buy_and_hold
        per = [m.universe.symbols[s].portfolios[label] for s in SYMBOLS]
        p = [x.sharpe_vs_buy_and_hold.p_value_two_sided for x in per]
        p1 = [1.0 if v is None else v for v in p]
        better = [(x.sharpe_vs_buy_and_hold.sharpe_diff or 0) > 0 for x in per]
        assert [t.p_value_two_sided for t in bc.per_symbol] == p
        assert [t.verdict for t in bc.per_symbol] == [x.verdict for x in per]  # the single-symbol verdicts
        assert np.allclose([t.p_holm for t in bc.per_symbol], _holm(p1), rtol=0, atol=1e-12)
        assert np.allclose([t.p_bh for t in bc.per_symbol], _bh(p1), rtol=0, atol=1e-12)
        assert bc.holm == sum(v < 0.05 and b for v, b in zip(_holm(p1), better))
        assert bc.bh == sum(v < 0.05 and b for v, b in zip(_bh(p1), better))
        assert bc.raw == sum(v < 0.05 and b for v, b in zip(p1, better))
        if row.model == "persistence":
            assert row.beats_persistence is None  # persistence is not tested against itself
            continue
        # DM vs persistence per symbol, recomputed from that symbol's prediction rows
        for t in row.beats_persistence.per_symbol:
            s = preds[(preds["symbol"] == t.symbol) & (preds["model"] == "momentum")]
            dm = sig.diebold_mariano(s["y_pred"] - s["y_true"], -s["y_true"], h=1)
            assert t.p_value_two_sided == pytest.approx(dm["p_value"], abs=1e-12)
            assert t.point_better == bool(np.mean((s["y_pred"] - s["y_true"]) ** 2) < np.mean(s["y_true"] ** 2))
        checked += 1
    assert checked == 2
    assert rows["momentum/eager"].trades > 10  # the threshold-0 strategy really trades on every symbol


def test_universe_and_pooled_metrics(uni) -> None:
    bars, preds, ev = uni
    m = ev.metrics
    bh = m.row("buy_and_hold")
    eq = ev.equity
    assert bh.verdict.outcome == "benchmark"
    assert bh.total_return == pytest.approx(eq["buy_and_hold"].iloc[-1] / CFG.backtest.init_cash - 1, rel=1e-12)
    # universe Sharpe and drawdown are those of the universe equity (first bar, before any fill, left out);
    # a flat portfolio has Sharpe 0
    for r in m.summary:
        e = eq[r.portfolio]
        ret = e.pct_change().iloc[1:]
        expected = 0.0 if (ret == 0).all() else sig.sharpe_ratio(ret, 365)
        assert r.sharpe == pytest.approx(expected, rel=1e-9, abs=1e-12)
        assert r.max_drawdown == pytest.approx((e / e.cummax() - 1).min(), abs=1e-12)
    assert m.row("always_flat").sharpe == 0.0
    # verdicts as data: "beats" only when the two-sided bootstrap rejects at the level, in the model's favour
    for r in m.summary:
        if r.portfolio == "buy_and_hold":
            continue
        v = r.verdict
        assert v.sided == "two-sided" and v.level == CFG.backtest.significance_level
        assert v.p_value == r.sharpe_diff_p_value_two_sided
        assert (v.outcome == "beats") == (v.p_value is not None and v.p_value < v.level and r.sharpe_diff > 0)
        assert m.portfolios[r.portfolio].verdict == v
    # flags per universe portfolio, from backtest.min_trades / min_exposure
    assert any("low exposure" in f for f in m.row("always_flat").flags)
    for r in m.summary:
        assert any(f.startswith("few trades") for f in r.flags) == (
            r.portfolio != "buy_and_hold" and r.trades is not None and r.trades < CFG.backtest.min_trades)
    # per-symbol columns cover only that symbol's test span; universe columns the whole span
    sol_first = pd.Timestamp(m.universe.symbols["SOL/USDT"].run.first_test_bar)
    assert eq["momentum/long_flat[SOL/USDT]"].loc[: sol_first - pd.Timedelta(days=1)].isna().all()
    assert eq["momentum/long_flat"].notna().all()
    # the universe simulation's per-symbol buy & hold equals the single-symbol simulation over its span
    for s in SYMBOLS:
        single = eq[f"buy_and_hold[{s}]"].dropna()
        assert len(single) == m.universe.symbols[s].run.test_bars + 1
        assert np.allclose(ev.universe_simulation.equity[f"buy_and_hold[{s}]"].loc[single.index], single, rtol=1e-12)
    # pooled direction metrics = classification over every symbol's rows together; no price errors pooled
    mom = preds[preds["model"] == "momentum"]
    pooled = m.models["momentum"].per_seed["0"]
    expected = classification(mom["y_true"].to_numpy(), mom["y_pred"].to_numpy() > 0)
    assert {k: getattr(pooled.classification, k) for k in expected} == pytest.approx(expected)
    assert pooled.significance.diebold_mariano.n == len(mom) and pooled.regression.price_mae is None
    # deflated Sharpe over every symbol x model x strategy tried
    dsr = m.universe.deflated_sharpe_symbols
    assert dsr.n_trials == len(SYMBOLS) * 4 and len(dsr.trials) == 12
    sharpes = {f"{s}|{lab}": m.universe.symbols[s].portfolios[lab].portfolio.sharpe
               for s in SYMBOLS for lab in ("persistence/long_flat", "momentum/long_flat", "persistence/eager", "momentum/eager")}
    assert dsr.selected == max((k for k in sharpes if sharpes[k] is not None), key=lambda k: sharpes[k])
    assert m.deflated_sharpe.n_trials == 4


def test_synthetic_bars_are_not_traded_per_symbol(uni) -> None:
    """A repaired (synthetic) bar of one symbol takes no decision there, in its own and the universe portfolio."""
    bars, preds, ev = uni
    eth = bars["ETH/USDT"]
    mask = pd.Series(False, index=eth.index)
    tests = preds[(preds["symbol"] == "ETH/USDT") & (preds["model"] == "momentum")]["timestamp"]
    mask.loc[tests.iloc[5:60]] = True  # a long stretch of ETH's test bars marked synthetic
    held = evaluate(CFG, preds, bars, "1d", synthetic={"ETH/USDT": mask})
    lab = "momentum/eager"
    a, b = ev.metrics.universe.symbols["ETH/USDT"].portfolios[lab], held.metrics.universe.symbols["ETH/USDT"].portfolios[lab]
    assert b.portfolio.trades < a.portfolio.trades  # no order decided on the synthetic stretch
    # BTC and SOL are untouched; the universe portfolio changes
    for s in ("BTC/USDT", "SOL/USDT"):
        assert held.metrics.universe.symbols[s].portfolios[lab] == ev.metrics.universe.symbols[s].portfolios[lab]
    assert held.metrics.row(lab).total_return != ev.metrics.row(lab).total_return
    pos = held.universe_simulation.positions[lab]["ETH/USDT"]
    window = mask[mask].index  # no fill at a synthetic open: the position of the bar before is kept there
    at = pos.index.get_indexer(window)
    assert (pos.iloc[at].to_numpy() == pos.iloc[at - 1].to_numpy()).all()
    # ... and the first real bar after the stretch executes the last real decision (at the bar before the
    # stretch; without the mask it was executed at the stretch's first open, which is synthetic now)
    assert pos.index.equals(ev.universe_simulation.positions[lab].index)
    assert pos.iloc[at[-1] + 1] == ev.universe_simulation.positions[lab]["ETH/USDT"].iloc[at[0]]


def test_universe_metrics_json_is_the_one_schema(uni, tmp_path: Path) -> None:
    bars, preds, ev = uni
    path = ev.metrics.write(tmp_path / "metrics.json")
    assert RunMetrics.read(path) == ev.metrics
    d = json.loads(path.read_text())
    assert d["schema_version"] == 3 and set(d["universe"]) == {"symbols", "deflated_sharpe_symbols"}
    d["summary"][0]["sharpe"] = "high"
    with pytest.raises(SchemaError, match=r"^metrics.json: metrics.summary\[0\].sharpe should be a number$"):
        RunMetrics.from_dict(d)
    d = json.loads(path.read_text())
    d["schema_version"] = 2
    with pytest.raises(SchemaError, match=r"^metrics.json: schema_version 2, this version reads 3"):
        RunMetrics.from_dict(d)


def test_data_errors_name_the_symbol(uni) -> None:
    bars, preds, _ = uni
    with pytest.raises(DataError, match=r"^DOGE/USDT: in the predictions but no bars were loaded for it$"):
        evaluate(CFG, pd.concat([preds, preds.head(1).assign(symbol="DOGE/USDT")]), bars, "1d")
    short = dict(bars, **{"ETH/USDT": bars["ETH/USDT"].iloc[:-1]})
    with pytest.raises(DataError, match=r"^ETH/USDT: the bar after the last decision bar 2021-03-30\S* is missing: "
                                        r"cannot execute the last signal$"):
        evaluate(CFG, preds, short, "1d")
    holed = dict(bars, **{"SOL/USDT": bars["SOL/USDT"].drop(pd.Timestamp("2021-01-05", tz="UTC"))})
    with pytest.raises(DataError, match=r"^SOL/USDT: forecast at 2021-01-05\S* has no bar in the loaded data$"):
        evaluate(CFG, preds, holed, "1d")


class _Tables(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.rows: dict[str, list[list[str]]] = {}
        self.details = 0
        self._table: str | None = None
        self._row: list[str] | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list) -> None:
        a = dict(attrs)
        if tag == "table":
            self._table = a.get("id") or ""
            self.rows.setdefault(self._table, [])
        elif tag == "tr" and self._table is not None:
            self._row = []
        elif tag == "td" and self._row is not None:
            self._cell = []
        elif tag == "details":
            self.details += 1

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "td" and self._cell is not None and self._row is not None:
            self._row.append("".join(self._cell))
            self._cell = None
        elif tag == "tr" and self._row is not None and self._table is not None:
            if self._row:
                self.rows[self._table].append(self._row)
            self._row = None
        elif tag == "table":
            self._table = None


def test_report_and_compare(uni, tmp_path: Path) -> None:
    bars, preds, ev = uni
    run_dir = tmp_path / "uni"
    ev.metrics.write(run_dir / "metrics.json")
    write_text(run_dir / "equity.csv", ev.equity.to_csv())
    write_text(run_dir / "config.toml", CFG.to_toml())
    metrics = json.loads((run_dir / "metrics.json").read_text())
    path = write_report(run_dir, RunMetrics.from_dict(metrics), preds, pd.DataFrame(), ev.equity)
    text = path.read_text()
    assert not re.search(r"(src|href)=\"(https?:)?//", text)  # self-contained
    parser = _Tables()
    parser.feed(text)
    beaten = parser.rows["symbols-beaten"]
    assert [r[0] for r in beaten] == [r["portfolio"] for r in metrics["summary"]]
    mom = next(r for r in beaten if r[0] == "momentum/long_flat")
    bc = next(r for r in metrics["summary"] if r["portfolio"] == "momentum/long_flat")["beats_buy_and_hold"]
    assert mom[2:6] == [f"{bc[k]}/3" for k in ("point", "raw", "holm", "bh")]  # the answer, first
    m = RunMetrics.from_dict(metrics)
    # the verdict column shows the verdict data (reports.html.verdict_cell colours it by its outcome)
    assert [r[1] for r in beaten] == [r.verdict.short() for r in m.summary]
    assert text.count("<details id=\"symbol-") == len(SYMBOLS)  # one folded section per symbol
    assert 'id="fig-heatmap"' in text and text.count("data:image/png;base64,") == 3 + len(SYMBOLS)
    assert "365 bars/yr" in text and (run_dir / "figures" / "heatmap.png").stat().st_size > 1000
    hm = heat_matrix(m, "sharpe_diff")
    sol = metrics["universe"]["symbols"]["SOL/USDT"]["portfolios"]
    assert hm.loc["momentum/eager", "SOL/USDT"] == pytest.approx(
        sol["momentum/eager"]["portfolio"]["sharpe"] - sol["buy_and_hold"]["portfolio"]["sharpe"], abs=1e-12)
    with pytest.raises(ValueError, match="heat map metric 'f2' is not one of"):
        heat_matrix(m, "f2")
    # compare reads a universe run like any other and says which symbols and how many were beaten
    compare_runs([run_dir], tmp_path / "cmp")
    ranked = json.loads((tmp_path / "cmp" / "compare.json").read_text())["ranked"]
    assert {r["portfolio"] for r in ranked} == {r["portfolio"] for r in metrics["summary"]}
    row = next(r for r in ranked if r["portfolio"] == "momentum/long_flat")
    assert row["symbols"] == "universe: BTC/USDT, ETH/USDT, SOL/USDT"
    assert row["symbols_beaten"] == f"buy & hold {bc['holm']}/3, persistence " \
        f"{next(r for r in metrics['summary'] if r['portfolio'] == 'momentum/long_flat')['beats_persistence']['holm']}/3 (Holm)"
