"""One evaluation, one ``metrics.json`` schema and one report for a run of one symbol or several.

Data: the bundled daily BTC/USDT candles (2020-05-01 .. 2021-02-01, linear + persistence, 3 folds), run
once as ``symbol = "BTC/USDT"`` and once as ``symbols = ["BTC/USDT"]``; the session's tiny real run
(``tests/conftest.py``) against ``data/tiny_real_metrics_v2.json``, the metrics.json the code before the one
path wrote for the same config; the three-symbol universe of ``tests/universe/eval_helpers.py`` (real
daily BTC/ETH/SOL slices, causal forecasts).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from backtest.config import Config, load_config
from backtest.evaluate import evaluate
from backtest.metrics import classification
from backtest.schema import RunMetrics
from reports.figures import heat_matrix
from reports.html import fmt_num, plural, render_report
from tests.browser import dump_dom
from tests.universe.eval_helpers import universe_bars, universe_predictions

GOLDEN = Path(__file__).parent / "data" / "tiny_real_metrics_v2.json"

ONE = """
[data]
source = "bundled"
{data}
start = "2020-05-01"
end = "2021-02-01"
[features]
lookback = 8
[walkforward]
initial_train = 120
step = 40
max_folds = 3
[models.lin]
type = "linear"
[models.persistence]
type = "persistence"
[strategies.long_flat]
type = "long_flat"
threshold = 0.0
[backtest]
bootstrap_samples = 100
[run]
name = "one"
"""

CFG = Config.model_validate({"models": {"persistence": {"type": "persistence"}, "momentum": {"type": "linear"}},
                             "strategies": {"long_flat": {"type": "long_flat"}, "eager": {"type": "long_flat", "threshold": 0.0}},
                             "backtest": {"bootstrap_samples": 100}, "run": {"name": "uni"}})


@pytest.fixture(scope="module")
def uni():
    bars = universe_bars()
    preds = universe_predictions(bars)
    return bars, preds, evaluate(CFG, preds, bars, "1d")


# --------------------------------------------------------------------------- a run is a universe of one


def _leaves(x, path=()):
    if isinstance(x, dict):
        for k, v in x.items():
            yield from _leaves(v, (*path, str(k)))
    elif isinstance(x, list):
        for i, v in enumerate(x):
            yield from _leaves(v, (*path, i))
    else:
        yield path, x


def _get(d, path):
    for k in path:
        d = d[k]
    return d


def test_default_test_run_gives_the_metrics_it_gave_before(tiny_real_run) -> None:
    """Every value the code before the one path wrote for the session's tiny run, to 1e-12; the only
    change allowed is a precision / F1 of 0 turned undefined (None) where nothing was predicted up."""
    old = json.loads(GOLDEN.read_text())
    new = json.loads((tiny_real_run.run_dir / "metrics.json").read_text())
    assert old["schema_version"] == 2 and new["schema_version"] == 3 and new["universe"] is None
    undefined = []
    n = 0
    for path, v in _leaves({k: v for k, v in old.items() if k != "schema_version"}):
        w = _get(new, path)
        n += 1
        if isinstance(v, float) and w is None and v == 0.0 and path[-1] in ("precision", "f1"):
            undefined.append(path)
        elif isinstance(v, (int, float)) and not isinstance(v, bool) and v is not None:
            assert w == pytest.approx(v, rel=1e-12, abs=1e-12), path
        else:
            assert w == v, path
    assert n > 500
    # those are exactly the blocks with no "up" call: tp + fp = 0 (a never-long portfolio, a zero forecast)
    for path in undefined:
        if path[0] == "summary":
            p = new["portfolios"][new["summary"][path[1]]["portfolio"]]["classification"]
        else:
            p = _get(new, path[:-1])
        assert p["tp"] + p["fp"] == 0, path
    assert {p[-1] for p in undefined} == {"precision", "f1"}


def test_one_symbol_as_symbol_or_as_a_universe_of_one_is_the_same_run(tmp_path: Path) -> None:
    from backtest.pipeline import run_all

    results = []
    for name, line in (("single", 'symbol = "BTC/USDT"'), ("one", 'symbols = ["BTC/USDT"]')):
        conf = tmp_path / f"{name}.toml"
        conf.write_text(ONE.format(data=line))
        results.append(run_all(load_config(conf, []), tmp_path / name))
    a, b = (r.run_dir for r in results)
    assert (a / "predictions.csv").read_bytes() == (b / "predictions.csv").read_bytes()
    ma, mb = RunMetrics.read(a / "metrics.json"), RunMetrics.read(b / "metrics.json")
    assert ma == mb and ma.universe is None and ma.run.symbol == "BTC/USDT" and ma.run.n_symbols == 1
    assert (a / "equity.csv").read_bytes() == (b / "equity.csv").read_bytes()
    # a one-symbol run does not call itself a universe, in its report or its meta.json
    for d in (a, b):
        text = (d / "report.html").read_text()
        assert 'id="summary"' in text and "symbols-beaten" not in text and "universe" not in text.lower()
        meta = json.loads((d / "meta.json").read_text())
        assert "universe" not in meta and meta["data"]["synthetic_bars"] == 0


# --------------------------------------------------------------------------- the layout at 1,400 px

MEASURE = """<script>
window.addEventListener('load', () => {
  const answer = /^(Verdict|Boot\\. p|Flags|DM p \\(two-sided\\)|PT p|MSE \\/ persistence|.*point|raw p|Holm|BH)/;
  let total = 0, outside = [];
  for (const id of ['summary', 'models', 'symbols-beaten']) {
    const t = document.getElementById(id);
    if (!t) continue;
    const cols = [...t.querySelectorAll('thead th')].map((th, i) => answer.test(th.textContent) ? i : -1)
                                                    .filter(i => i >= 0);
    for (const tr of t.querySelectorAll('tbody tr')) {
      for (const i of cols) {
        const r = tr.children[i].getBoundingClientRect();
        total += 1;
        if (r.right > window.innerWidth || r.left < 0) outside.push(id + ':' + t.querySelectorAll('thead th')[i].textContent);
      }
    }
  }
  const out = document.createElement('div');
  out.id = 'measured';
  out.dataset.total = total;
  out.dataset.width = window.innerWidth;
  out.textContent = [...new Set(outside)].join('|');
  document.body.appendChild(out);
});
</script>"""


def _measure(html_text: str, path: Path) -> tuple[int, int, str]:
    path.write_text(html_text.replace("</body>", MEASURE + "</body>"))
    dom = dump_dom(path.as_uri(), width=1400, height=900)
    import re

    m = re.search(r'<div id="measured" data-total="(\d+)" data-width="(\d+)">(.*?)</div>', dom)
    assert m, "the measuring script did not run"
    return int(m.group(1)), int(m.group(2)), m.group(3)


def test_answer_columns_are_on_screen_at_1400_px(tiny_real_run, uni, tmp_path: Path) -> None:
    one = RunMetrics.read(tiny_real_run.run_dir / "metrics.json")
    total, width, outside = _measure(render_report(one, {}, title="one"), tmp_path / "one.html")
    assert width == 1400 and total == 3 * len(one.summary) + 4 * len(one.models) and outside == ""
    total, width, outside = _measure(render_report(uni[2].metrics, {}, title="uni"), tmp_path / "uni.html")
    assert total >= 10 * len(uni[2].metrics.summary) and outside == ""


# --------------------------------------------------------------------------- numbers that say what they mean


def test_never_long_has_no_precision_and_shows_n_a(tiny_real_run) -> None:
    y = np.array([0.01, -0.02, 0.03, -0.01])
    c = classification(y, np.zeros(4, bool))
    assert c["precision"] is None and c["f1"] is None and c["recall"] == 0.0 and c["tp"] + c["fp"] == 0
    assert classification(-np.abs(y), y > 0)["recall"] is None  # no bar went up: recall is 0/0
    m = RunMetrics.read(tiny_real_run.run_dir / "metrics.json")
    flat = m.row("persistence/lf")
    assert flat.exposure == 0 and flat.precision is None and flat.f1 is None
    text = (tiny_real_run.run_dir / "report.html").read_text()
    row = text.split('<table id="summary-more">')[1].split("persistence/lf</td>")[1].split("</tr>")[0]
    assert row.count(">n/a<") >= 2  # precision and F1


def test_persistence_is_not_red_against_itself(tiny_real_run) -> None:
    text = (tiny_real_run.run_dir / "report.html").read_text()
    models = text.split('<table id="models">')[1].split("</table>")[0]
    row = models.split(">persistence</td>")[1].split("</tr>")[0]
    assert 'class="bad' not in row and "bad ans" not in row and "(benchmark)" in row
    bench = text.split('<table id="summary">')[1].split(">buy_and_hold</td>")[1].split("</tr>")[0]
    assert "good" not in bench and "bad" not in bench


def test_one_number_format_per_column() -> None:
    assert fmt_num(-0.00137) == "-0.00" and fmt_num(0.17) == "0.17" and fmt_num(1.5e-7, 5) == "0.00000"
    assert fmt_num(None) == "n/a"


def test_heat_map_agrees_with_the_caption_for_a_portfolio_that_never_trades(uni) -> None:
    m = uni[2].metrics
    hm = heat_matrix(m, "sharpe_diff")
    for s, info in m.universe.symbols.items():
        flat = info.portfolios["persistence/long_flat"]
        assert flat.portfolio.trades == 0 and flat.portfolio.sharpe == 0.0
        assert hm.loc["persistence/long_flat", s] == pytest.approx(-info.benchmark.sharpe, abs=1e-12)
    text = render_report(m, {"heatmap": b"\x89PNG"}, title="uni")
    assert "a portfolio that never trades has Sharpe 0, so its cell shows 0 minus buy &amp; hold" in text


def test_deflated_sharpe_n_a_says_why(uni) -> None:
    """Two trials, one of which never trades: the variance of the trials' Sharpe ratios is undefined."""
    bars, preds, _ = uni
    cfg = CFG.model_copy(update={"strategies": {k: v for k, v in CFG.strategies.items() if k != "eager"}})
    one = {"BTC/USDT": bars["BTC/USDT"]}
    m = evaluate(cfg, preds[preds["symbol"] == "BTC/USDT"], one, "1d").metrics
    d = m.deflated_sharpe
    assert d.n_trials == 2 and d.dsr is None
    text = render_report(m, {}, title="one")
    assert "DSR = n/a, because SR0 undefined: too few trials with a defined Sharpe ratio" in text


def test_plural_and_repairs_line(uni) -> None:
    assert plural(1, "symbol") == "1 symbol" and plural(3, "symbol") == "3 symbols"
    bars, preds, _ = uni
    mask = pd.Series(False, index=bars["ETH/USDT"].index)
    tests = preds[(preds["symbol"] == "ETH/USDT") & (preds["model"] == "momentum")]["timestamp"]
    mask.loc[tests.iloc[5:8]] = True
    mask.iloc[0] = True  # a repaired bar before the test span: repaired, but no decision on it
    ev = evaluate(CFG, preds, bars, "1d", synthetic={"ETH/USDT": mask})
    m = ev.metrics
    moved = ev.simulations["ETH/USDT"].fills_moved  # orders due at the stretch's synthetic opens
    assert ev.simulations["BTC/USDT"].fills_moved == 0 and moved > 0
    assert (m.run.synthetic_bars, m.run.signals_held, m.run.fills_moved) == (4, 3, moved)
    assert m.run.bars_per_symbol["ETH/USDT"].signals_held == 3 and m.run.bars_per_symbol["BTC/USDT"].synthetic_bars == 0
    text = render_report(m, {}, title="uni")
    assert f"4 bars repaired; 3 signals held, {plural(moved, 'fill')} moved to the next real bar&#x27;s open" in text
