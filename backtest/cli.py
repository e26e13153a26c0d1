"""The ``walkforward`` command line: one subcommand per job (freqtrade style).

Heavy imports (TensorFlow, vectorbt, matplotlib) happen inside the subcommand
that needs them, so ``walkforward --help`` stays fast. Every
:class:`~backtest.errors.WalkforwardError` becomes one line on stderr and exit
status 2; nothing half-written is left behind.
"""
from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from backtest.errors import WalkforwardError
from backtest.quiet import import_tensorflow, quiet_env


# --- data --------------------------------------------------------------------------------
def cmd_data_show(args: argparse.Namespace) -> int:
    from backtest.data.load import format_summary, load_source, summary

    data = load_source(args.source, timeframe=args.timeframe, repair=args.repair, cache_dir=args.cache_dir,
                       max_repair_fraction=args.max_repair_fraction)
    print(format_summary(summary(data)))
    return 0


def cmd_data_fetch(args: argparse.Namespace) -> int:
    import pandas as pd

    from backtest.config import DataConfig
    from backtest.data.load import format_summary, load_data, summary

    symbols = list(dict.fromkeys(args.symbol))  # repeated --symbol: once each, in order
    cfg = DataConfig(source="ccxt", exchange=args.exchange, symbol=symbols[0], timeframe=args.timeframe,
                     start=args.since, end=args.until, repair=args.repair, cache_dir=args.cache_dir,
                     base_url=args.base_url)
    now = pd.Timestamp.now(tz="UTC")
    if len(symbols) == 1:
        print(format_summary(summary(load_data(cfg, now=now, progress=not args.no_progress, hint_style="cli"))))
        return 0
    from backtest.data.load import summary_line
    from backtest.data.universe import load_universe

    data = load_universe(cfg.model_copy(update={"symbols": symbols}), now=now, progress=not args.no_progress)
    for sym in data.symbols:
        print(summary_line(sym, data.bars[sym], data.timeframe, data.reports[sym]))
    return 0


# --- run ---------------------------------------------------------------------------------
def _overrides(args: argparse.Namespace) -> list[str]:
    """``--set`` items, plus ``--executor`` and ``--mlflow`` as the config keys they stand for."""
    sets = list(args.set or [])
    if getattr(args, "executor", None):
        sets.append(f"walkforward.executor={args.executor}")
    if getattr(args, "mlflow", None):
        sets.append(f'tracking.mlflow_uri="{args.mlflow}"')
    return sets


def _load_cfg(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from backtest.config import load_config

    return load_config(args.config, _overrides(args))


def cmd_run(args: argparse.Namespace) -> int:
    quiet_env()  # TensorFlow is imported (quietly) where the folds train: see backtest.quiet
    cfg = _load_cfg(args)
    from backtest.pipeline import run_all

    result = run_all(cfg, args.out, progress=not args.no_progress)
    from backtest.evaluate import format_summary

    print(format_summary(result.evaluation.metrics))
    print(f"run directory: {result.run_dir}")
    print(f"report: {result.report_path}")
    if cfg.tracking.mlflow_uri:
        from backtest.tracking import TrackingError, log_run, warn

        try:
            rid = log_run(result.run_dir, cfg.tracking.mlflow_uri, cfg.tracking.experiment, cfg.tracking.timeout_s)
            print(f"mlflow run: {rid}")
        except TrackingError as err:
            warn(err)
    return 0


def cmd_track(args: argparse.Namespace) -> int:
    from backtest.errors import ConfigError
    from backtest.tracking import TrackingError, log_run

    uri = args.mlflow or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        raise ConfigError("track: give the tracking URI with --mlflow URI (or MLFLOW_TRACKING_URI)")
    try:
        rid = log_run(Path(args.run_dir), uri, args.experiment)
    except TrackingError as err:
        raise ConfigError(f"track: {err}") from None
    print(f"mlflow run: {rid}")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from models import BASELINE_TYPES, MODEL_TYPES

    for name in MODEL_TYPES:
        print(f"{name}{'  (baseline)' if name in BASELINE_TYPES else ''}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    import tempfile

    from backtest.tracking import resolve_run, run_source
    from reports.compare import compare_runs

    uri = args.mlflow or os.environ.get("MLFLOW_TRACKING_URI")
    with tempfile.TemporaryDirectory(prefix="wf-compare-") as tmp:  # MLflow run ids are downloaded here
        path = compare_runs([resolve_run(p, uri, Path(tmp)) for p in args.run_dirs], Path(args.out), force=args.force,
                            sources=[run_source(p) for p in args.run_dirs])
    print(f"comparison report: {path}")
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    quiet_env()
    from backtest.sweep import run_sweep

    path = run_sweep(args.config, args.grid or [], seeds=args.seeds, out=Path(args.out), overrides=_overrides(args),
                     progress=not args.no_progress, select=args.select, pbo_blocks=args.pbo_blocks, reps=args.reps)
    print(f"comparison report: {Path(args.out) / 'compare' / 'compare.html'}")
    if path.name == "report.html":
        from backtest.sweep_schema import SweepMetrics

        print(SweepMetrics.read(path.parent / "metrics.json").verdict.text)
        print(f"sweep report: {path}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    import_tensorflow()
    from backtest.predict import format_forecast, predict_next

    result = predict_next(Path(args.run_dir), data_source=args.data, model=args.model)
    for w in result.warnings:
        print(f"walkforward: warning: {w}", file=sys.stderr)
    print(format_forecast(result))
    return 0


def cmd_paper_run(args: argparse.Namespace) -> int:
    import_tensorflow()
    from backtest.paper.cli import paper_run

    return paper_run(args)


def cmd_paper_status(args: argparse.Namespace) -> int:
    from backtest.paper.cli import paper_status

    return paper_status(args)


def cmd_paper_report(args: argparse.Namespace) -> int:
    from backtest.paper.cli import paper_report

    return paper_report(args)


def cmd_paper_serve(args: argparse.Namespace) -> int:
    from backtest.paper.cli import paper_serve

    return paper_serve(args)


# --- parser ------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="walkforward",
        description="Walk-forward backtesting of crypto forecasters: every number out of sample, beside its baselines.",
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    data = sub.add_parser("data", help="show or download market data").add_subparsers(dest="data_command", metavar="ACTION", required=True)
    show = data.add_parser("show", help="summarise a data source (default: the bundled BTC/USDT daily history)")
    show.add_argument("source", nargs="?", default="bundled", help="bundled | PATH (CSV/Parquet) | ccxt:EXCHANGE:SYMBOL:TIMEFRAME (from the cache)")
    show.add_argument("--timeframe", help="bar length of a file, e.g. 1d, 4h (default: inferred)")
    show.add_argument("--repair", choices=["none", "ffill"], default="none", help="documented repair of gaps and bad prices (default: none = error)")
    show.add_argument("--cache-dir", help="candle cache folder (default: the user's cache directory)")
    show.add_argument("--max-repair-fraction", type=float, default=0.01, help="refuse a repair that makes more than this share of the bars synthetic (default 0.01 = 1%%)")
    show.set_defaults(func=cmd_data_show)

    fetch = data.add_parser("fetch", help="download candles through ccxt into the local cache (incremental)")
    fetch.add_argument("--exchange", required=True, help="ccxt exchange id, e.g. binance")
    fetch.add_argument("--symbol", required=True, action="append",
                       help="market symbol, e.g. BTC/USDT; repeat for several (one summary line each)")
    fetch.add_argument("--timeframe", required=True, help="e.g. 1d, 4h, 1h")
    fetch.add_argument("--since", help="first bar, ISO date (default 2017-01-01 when the cache is empty)")
    fetch.add_argument("--until", help="stop before this bar, ISO date (default: now)")
    fetch.add_argument("--repair", choices=["none", "ffill"], default="none")
    fetch.add_argument("--cache-dir", help="candle cache folder (default: the user's cache directory)")
    fetch.add_argument("--base-url", help="override the exchange's REST base URL (testnets, emulators)")
    fetch.add_argument("--no-progress", action="store_true", help="no progress bar")
    fetch.set_defaults(func=cmd_data_fetch)

    def run_opts(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("config", help="TOML config file")
        sp.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE", help="override a config key (repeatable)")
        sp.add_argument("--no-progress", action="store_true", help="no progress bar")
        sp.add_argument("--executor", choices=["sequential", "process", "ray"], help="override walkforward.executor")
        sp.add_argument("--mlflow", metavar="URI", help="track in MLflow at URI (overrides tracking.mlflow_uri)")

    run = sub.add_parser("run", help="walk-forward forecasts, signals, simulation, metrics and report")
    run_opts(run)
    run.add_argument("--out", default="runs", help="output folder; the run goes to OUT/<run.name> (default: runs)")
    run.set_defaults(func=cmd_run)

    models = sub.add_parser("models", help="list the registered forecaster types")
    models.set_defaults(func=cmd_models)

    cmp_ = sub.add_parser("compare", help="comparison report across run directories")
    cmp_.add_argument("run_dirs", nargs="+", help="run directories or MLflow run ids")
    cmp_.add_argument("--out", required=True, help="folder for compare.html")
    cmp_.add_argument("--force", action="store_true",
                      help="compare runs whose test spans, symbols or timeframes differ (the report flags it)")
    cmp_.add_argument("--mlflow", metavar="URI", help="tracking URI for run ids (default: $MLFLOW_TRACKING_URI)")
    cmp_.set_defaults(func=cmd_compare)

    track = sub.add_parser("track", help="upload a finished run directory to MLflow (e.g. after the server was down)")
    track.add_argument("run_dir", help="a finished run directory")
    track.add_argument("--mlflow", metavar="URI", help="tracking URI (default: $MLFLOW_TRACKING_URI)")
    track.add_argument("--experiment", default="walkforward", help="MLflow experiment name (default: walkforward)")
    track.set_defaults(func=cmd_track)

    sweep = sub.add_parser("sweep", help="run a grid of configs (and seeds), then compare them")
    run_opts(sweep)
    sweep.add_argument("--grid", action="append", metavar="SECTION.KEY=V1,V2", help="values to try for a key (repeatable)")
    sweep.add_argument("--seeds", type=int, default=None, help="run each grid point with seeds 0..N-1")
    sweep.add_argument("--out", default="runs/sweep", help="output folder (default: runs/sweep)")
    sweep.add_argument("--select", default="mse", metavar="CRITERION[:LOOKBACK[:MIN_HISTORY]]",
                       help="walk-forward selection: mse or sharpe over the last LOOKBACK test blocks (0 = all "
                            "earlier blocks), after MIN_HISTORY blocks (default: mse = mse:0:1)")
    sweep.add_argument("--pbo-blocks", type=int, default=16, metavar="S",
                       help="blocks of the CSCV for the probability of backtest overfitting (even; default 16)")
    sweep.add_argument("--reps", type=int, default=1000, help="bootstrap replications of SPA, reality check and MCS")
    sweep.set_defaults(func=cmd_sweep)

    pred = sub.add_parser("predict", help="forecast the bar after the data's last closed bar with a run's newest model")
    pred.add_argument("run_dir", help="a finished run directory")
    pred.add_argument("--data", help="data source: bundled | PATH | ccxt:EXCHANGE:SYMBOL:TIMEFRAME (default: the run's own data)")
    pred.add_argument("--model", help="model name (default: every model of the run)")
    pred.set_defaults(func=cmd_predict)

    paper = sub.add_parser("paper", help="paper trading on live ccxt data").add_subparsers(dest="paper_command", metavar="ACTION", required=True)
    prun = paper.add_parser("run", help="process closed candles: retrain on schedule, predict, fill, record")
    prun.add_argument("config", help="TOML config file")
    prun.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE")
    prun.add_argument("--once", action="store_true", help="one cycle, then exit (for cron)")
    prun.add_argument("--new-account", action="store_true", help="start a new account if the config changed")
    prun.set_defaults(func=cmd_paper_run)
    pstat = paper.add_parser("status", help="positions, equity and PnL against buy-and-hold")
    pstat.add_argument("config", help="TOML config file")
    pstat.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE")
    pstat.set_defaults(func=cmd_paper_status)
    prep = paper.add_parser("report", help="HTML report of the paper account")
    prep.add_argument("config", help="TOML config file")
    prep.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE")
    prep.add_argument("--out", help="report path (default: next to the ledger)")
    prep.set_defaults(func=cmd_paper_report)
    pserve = paper.add_parser("serve", help="read-only web page and JSON API of one or more accounts (live)")
    pserve.add_argument("config", nargs="+", help="TOML config file(s), one per account")
    pserve.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE", help="override a key of every config")
    pserve.add_argument("--host", help="address to listen on (default paper.serve.host = 127.0.0.1: this machine only)")
    pserve.add_argument("--port", type=int, help="TCP port (default paper.serve.port = 8765; 0 = any free port)")
    pserve.set_defaults(func=cmd_paper_serve)
    return p


#: Exit status when stdout is closed early (``walkforward data show | head -1``): 128 + SIGPIPE, what a shell
#: reports for a program that SIGPIPE stopped.
EXIT_STDOUT_CLOSED = 141


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: parse, dispatch, map user errors to one line and exit status 2.

    A reader that closes stdout early (``| head -1``) ends the command quietly with status 141, as SIGPIPE
    would: no traceback, no "Exception ignored" at interpreter exit.
    """
    try:
        try:
            return _dispatch(argv)
        finally:
            sys.stdout.flush()  # a closed pipe shows here, not at interpreter exit
    except BrokenPipeError:
        if not _stdout_closed():
            raise  # a broken socket elsewhere is not a reader that went away
        # Python's recipe (docs: signal, "Note on SIGPIPE"): point stdout at devnull so the final flush is silent.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return EXIT_STDOUT_CLOSED


def _stdout_closed() -> bool:
    """Whether stdout's reader has gone (poll reports an error on the pipe); True where poll is unavailable."""
    import select

    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & select.POLLERR for _, events in poller.poll(0))
    except (AttributeError, OSError, ValueError):
        return True


def _dispatch(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except WalkforwardError as err:
        print(f"walkforward: error: {err}", file=sys.stderr)
        return err.exit_status
    except KeyboardInterrupt:
        print("walkforward: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
