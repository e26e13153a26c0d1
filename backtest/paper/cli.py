"""The ``walkforward paper run|status|report|serve`` subcommands (called from :mod:`backtest.cli`).

``args`` carries ``config``, ``set`` and, per subcommand, ``once``, ``new_account`` or ``out``.
A :class:`~backtest.errors.WalkforwardError` during ``paper run`` is logged as one
line (log file next to the ledger, and stderr) and gives exit status 2; errors
before the ledger is known (a bad config, or for a new account a bad exchange id,
symbol, timeframe or API key: :meth:`PaperTrader.preflight`) are left to the
CLI's one-line handler and create no file.
"""
from __future__ import annotations

import argparse

from backtest.config import load_config
from backtest.errors import ConfigError, WalkforwardError


def paper_run(args: argparse.Namespace) -> int:
    """One cycle (``--once``, for cron) or the loop until SIGINT/SIGTERM."""
    from backtest.paper.alerts import CycleAlerts, notifier_for
    from backtest.paper.engine import PaperTrader, run_loop, stop_on_signals, utc_now
    from backtest.paper.notify import ErrorForwarder
    from backtest.paper.logs import configure_logging
    from backtest.paper.paths import account_paths

    cfg = load_config(args.config, list(getattr(args, "set", None) or []))
    log = configure_logging(None)  # stderr only until the account is known to be valid: no log file yet
    trader = PaperTrader(cfg, new_account=bool(getattr(args, "new_account", False)), logger=log)
    trader.preflight()  # bad exchange id, symbol or API key: one line, exit 2, no ledger, lock or log file
    log = configure_logging(account_paths(cfg).log)
    notifier = notifier_for(cfg, log)  # [paper.notify]: webhooks (a no-op without any)
    forwarder = ErrorForwarder(notifier)
    log.addHandler(forwarder)
    alerts = CycleAlerts(cfg, trader.paths, notifier, log)
    try:
        if not getattr(args, "once", False):
            return run_loop(trader, after_cycle=alerts.after_cycle)
        with stop_on_signals(trader):
            try:
                result = trader.cycle()
            except WalkforwardError as err:
                log.error("%s", err)
                alerts.after_cycle(utc_now(), [])
                return err.exit_status
        alerts.after_cycle(utc_now(), result.processed)
        print(result.summary())
        return 0
    finally:
        log.removeHandler(forwarder)
        notifier.close()  # deliver what is queued, bounded by one retry cycle


def paper_status(args: argparse.Namespace) -> int:
    """Print the account's status (ledger only, no network)."""
    from backtest.paper.status import status_text

    cfg = load_config(args.config, list(getattr(args, "set", None) or []))
    print(status_text(cfg), end="")
    return 0


def paper_report(args: argparse.Namespace) -> int:
    """Write the HTML report (default ``<account folder>/report.html``) and print its path."""
    from backtest.paper.logs import configure_logging
    from backtest.paper.paths import account_paths
    from backtest.paper.report import write_paper_report

    cfg = load_config(args.config, list(getattr(args, "set", None) or []))
    paths = account_paths(cfg)
    if paths.ledger.exists():
        configure_logging(paths.log)
    path = write_paper_report(cfg, out=getattr(args, "out", None))
    print(f"paper report: {path}")
    return 0


def paper_serve(args: argparse.Namespace) -> int:
    """Serve the monitor page and API of the accounts of ``args.config`` (read-only) until SIGINT/SIGTERM."""
    from backtest.paper.monitor import serve

    configs = [load_config(path, list(getattr(args, "set", None) or [])) for path in args.config]
    opts = configs[0].paper.serve
    host = args.host if getattr(args, "host", None) else opts.host
    port = args.port if getattr(args, "port", None) is not None else opts.port
    if not 0 <= port <= 65535:
        raise ConfigError(f"--port {port}: expected 0..65535")
    names = ", ".join(c.paper.account for c in configs)

    def ready(url: str) -> None:
        print(f"paper monitor of {names}: {url} (read-only; Ctrl-C stops it)", flush=True)

    return serve(configs, host, port, on_ready=ready)
