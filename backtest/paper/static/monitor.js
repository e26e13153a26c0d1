// The monitor page: renders /api/state (first from the state embedded in the page, then polled).
"use strict";
let lastBars = {};

function fmt(x, digits) {
  if (x === null || x === undefined) return "n/a";
  return x.toLocaleString("en-US", {minimumFractionDigits: digits, maximumFractionDigits: digits});
}
function pct(x) { return x === null || x === undefined ? "n/a" : (x >= 0 ? "+" : "") + (100 * x).toFixed(2) + "%"; }
function pp(x) { return x === null || x === undefined ? "benchmark" : (x >= 0 ? "+" : "") + (100 * x).toFixed(2) + " pp"; }
function qty(x) { return x === null || x === undefined ? "n/a" : String(Number(x.toPrecision(8))); }
function day(iso) { return iso ? iso.replace("T00:00:00+00:00", "").replace("+00:00", " UTC").replace("T", " ") : "n/a"; }
function el(tag, attrs, children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "text") e.textContent = v; else e.setAttribute(k, v);
  }
  for (const c of children || []) e.appendChild(c);
  return e;
}
function table(headers, rows, numeric) {
  const head = el("tr", {}, headers.map((h, i) => el("th", {text: h, class: numeric.has(i) ? "num" : ""})));
  return el("table", {}, [el("thead", {}, [head]), el("tbody", {}, rows)]);
}

function portfolioTable(a) {
  const rows = a.portfolios.map(p => {
    const d = p.drift;
    const cell = (cls, text, value) => el("td", {class: cls, text: text, "data-value": value === null || value === undefined ? "" : String(value)});
    return el("tr", {"data-portfolio": p.label}, [
      el("td", {text: p.label}),
      cell("signal", p.next_bar + (p.pending_order ? " (" + p.pending_order + " at next open)" : "")),
      cell("num position", qty(p.position), p.position),
      cell("num cash", fmt(p.cash, 2), p.cash),
      cell("num equity", fmt(p.equity, 2), p.equity),
      cell("num return", pct(p["return"]), p["return"]),
      cell("num vsbh", pp(p.vs_buy_hold), p.vs_buy_hold),
      el("td", {class: "drift " + (d ? d.state.replace(" ", "-") : ""), "data-state": d ? d.state : "",
                text: d ? d.message : "no drift monitor"}),
    ]);
  });
  return table(["portfolio", "next bar", "position [" + a.base + "]", "cash [" + a.quote + "]",
                "equity [" + a.quote + "]", "return", "vs buy & hold", "drift (live vs backtest)"], rows,
               new Set([2, 3, 4, 5, 6]));
}

function equityChart(div, s) {
  if (typeof Plotly === "undefined" || !s.equity) return;
  const traces = [];
  for (const [label, ys] of Object.entries(s.equity.portfolios)) {
    traces.push({x: s.equity.time, y: ys, name: label, mode: "lines",
                 line: label === s.equity.buy_and_hold ? {dash: "dot", color: "#444"} : {}});
  }
  Plotly.react(div, traces, {title: "Equity at each close [" + s.account.quote + "]", margin: {t: 40},
                             legend: {orientation: "h"}}, {displaylogo: false, responsive: true});
}

function bandChart(div, band, init) {
  if (typeof Plotly === "undefined" || !band.series || !band.series.time) return;
  const s = band.series;
  const eq = v => v.map(x => init * (1 + x));
  Plotly.react(div, [
    {x: s.time, y: eq(s.upper), name: "band upper", mode: "lines", line: {width: 0}, showlegend: false},
    {x: s.time, y: eq(s.lower), name: "backtest band", mode: "lines", fill: "tonexty", line: {width: 0},
     fillcolor: "rgba(31,119,180,0.18)"},
    {x: s.time, y: eq(s.median), name: "backtest median", mode: "lines", line: {dash: "dash", color: "#1f77b4"}},
    {x: s.time, y: eq(s.cum), name: band.portfolio + " (paper)", mode: "lines", line: {color: "#d62728"}},
  ], {title: band.portfolio + ": paper equity beside the backtest's expectation band", margin: {t: 40},
      legend: {orientation: "h"}}, {displaylogo: false, responsive: true});
}

function renderAccount(s) {
  const a = s.account, h = s.health;
  const sec = el("section", {class: "account", id: "account-" + a.account, "data-account": a.account});
  if (!a.created) {
    sec.appendChild(el("h2", {text: "account " + a.account}));
    sec.appendChild(el("p", {text: "no paper account yet in " + a.ledger + (h.ledger_error ? " (" + h.ledger_error + ")" : "")}));
    return sec;
  }
  sec.appendChild(el("h2", {text: a.account + ": " + a.exchange + " " + a.symbol + " " + a.timeframe}));
  sec.appendChild(el("p", {class: "sub", text: a.bars + " bars processed, first decision at the close of " +
    day(a.first_bar) + ", newest bar " + day(a.last_bar) + " (close " + fmt(a.last_close, 2) + "); next decision at " +
    day(a.next_decision) + "; fees " + (100 * a.fees).toFixed(3) + "% and slippage " + (100 * a.slippage).toFixed(3) +
    "% per fill; starting cash " + fmt(a.init_cash, 2) + " " + a.quote + " per portfolio."}));
  sec.appendChild(el("h3", {text: "Portfolios at the newest close"}));
  sec.appendChild(portfolioTable(a));
  const eqDiv = el("div", {class: "chart", id: "equity-" + a.account});
  sec.appendChild(eqDiv);

  sec.appendChild(el("h3", {text: "Drift: live against the backtest"}));
  const d = s.drift;
  if (d) {
    for (const n of d.notes) sec.appendChild(el("p", {class: "note", text: n}));
    const alarms = el("ul", {class: "alarms"}, d.alarms.map(t => el("li", {class: "below", text: t})));
    if (d.alarms.length) sec.appendChild(alarms);
    for (const f of d.forecasts) sec.appendChild(el("p", {class: "forecast-test " + (f.state === "worse" ? "bad" : ""),
                                                        "data-model": f.model, "data-state": f.state, text: f.message}));
    for (const b of d.bands) {
      if (!b.series || !b.series.time) continue;
      if (b.series.upper.every((u, i) => u === b.series.lower[i] && b.series.cum[i] === u)) continue;  // never in the market
      const div = el("div", {class: "chart band", id: "band-" + a.account + "-" + b.portfolio});
      sec.appendChild(div);
      setTimeout(() => bandChart(div, b, a.init_cash), 0);
    }
  }

  sec.appendChild(el("h3", {text: "Last forecasts and signals (decided at the close of the bar shown)"}));
  const frows = s.forecasts.map(r => el("tr", {"data-bar": r.bar}, [
    el("td", {text: day(r.bar)}),
    el("td", {text: r.forecasts.map(f => f.model + " " + (f.y_pred >= 0 ? "+" : "") + (100 * f.y_pred).toFixed(3) +
      "% (close " + fmt(f.pred_close, 2) + ", fold " + f.fold + ")").join("; ")}),
    el("td", {text: Object.entries(r.signals).map(([k, v]) => k + " " + v).join(", ")}),
  ]));
  sec.appendChild(table(["bar", "forecast r̂[t+1] (log return)", "signal for the next bar"], frows, new Set()));

  sec.appendChild(el("h3", {text: "Fills (newest first; at the open of the bar shown)"}));
  const rows = s.fills.map(f => el("tr", {}, [
    el("td", {text: day(f.bar)}), el("td", {text: f.portfolio}), el("td", {text: f.side}),
    el("td", {class: "num", text: qty(f.size)}), el("td", {class: "num", text: fmt(f.price, 2)}),
    el("td", {class: "num", text: fmt(f.exec_price, 2)}), el("td", {class: "num", text: fmt(f.fees, 2)}),
    el("td", {class: "num", text: fmt(f.slippage_cost, 2)}),
  ]));
  sec.appendChild(table(["bar", "portfolio", "side", "size [" + a.base + "]", "open", "exec price", "fees [" + a.quote + "]",
                         "slippage [" + a.quote + "]"], rows, new Set([3, 4, 5, 6, 7])));

  sec.appendChild(el("h3", {text: "Ledger and feed health"}));
  const item = (k, v, cls) => [el("dt", {text: k}), el("dd", {text: v, class: cls || ""})];
  sec.appendChild(el("dl", {class: "health"}, [
    ...item("newest bar processed", day(h.last_bar) + (h.last_processed_at ? " (written " + day(h.last_processed_at) + ")" : "")),
    ...item("newest closed candle fetched", day(h.last_candle_cached)),
    ...item("next decision", day(h.next_decision)),
    ...item("late by", h.late_s === null ? "n/a" : (h.late_s / 60).toFixed(1) + " min" + (h.stale ? " (stale feed)" : ""),
            h.stale ? "bad" : "ok"),
    ...item("ledger", h.ledger_readable ? "readable" : h.ledger_error, h.ledger_readable ? "ok" : "bad"),
    ...item("last error in the log", h.last_error || "none"),
  ]));
  setTimeout(() => equityChart(eqDiv, s), 0);
  return sec;
}

function render(state) {
  const main = document.getElementById("accounts");
  main.replaceChildren(...state.accounts.map(renderAccount));
  document.getElementById("updated").textContent = "Updated " + day(state.now) + ".";
  for (const s of state.accounts) lastBars[s.account.account] = s.account.last_bar;
}

async function poll(refresh) {
  try {
    const r = await fetch("/api/state", {cache: "no-store"});
    if (r.ok) render(await r.json());
  } catch (e) { /* the server is restarting: try again at the next tick */ }
  setTimeout(() => poll(refresh), refresh * 1000);
}

const initial = JSON.parse(document.getElementById("initial-state").textContent);
if (initial) {
  render(initial);
  setTimeout(() => poll(initial.refresh_s), initial.refresh_s * 1000);
}
