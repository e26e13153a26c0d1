"""Where a paper account lives on disk.

``paper.ledger`` names the SQLite ledger; by default it is
``<root>/<account>.sqlite`` with ``root`` = ``$WALKFORWARD_PAPER_DIR`` if set,
else ``./paper`` (relative to the current directory). Next to the ledger:

* ``<account>.log`` -- the log file;
* ``<account>/`` -- the account folder: trained models
  (``folds/<model>/<k>/seed-<seed>/``, the run-directory layout) and ``report.html``;
* ``<account>.lock`` -- held while a cycle runs, so two processes never trade one account.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from backtest.config import Config

#: Environment variable that moves the default ledger folder (tests, deployments).
PAPER_DIR_ENV = "WALKFORWARD_PAPER_DIR"


@dataclass(frozen=True)
class AccountPaths:
    """The files of one paper account."""

    ledger: Path  # SQLite ledger
    log: Path  # log file next to the ledger
    folder: Path  # models and report
    lock: Path  # cycle lock file

    @property
    def report(self) -> Path:
        """Default HTML report path."""
        return self.folder / "report.html"


def default_root() -> Path:
    """Default folder of ledgers: ``$WALKFORWARD_PAPER_DIR`` or ``./paper``."""
    env = os.environ.get(PAPER_DIR_ENV)
    return Path(env) if env else Path("paper")


def account_paths(cfg: Config, *, ledger_path: str | os.PathLike[str] | None = None,
                  root: str | os.PathLike[str] | None = None) -> AccountPaths:
    """The account's files: ``ledger_path`` if given, else ``paper.ledger``, else ``<root>/<account>.sqlite``."""
    if ledger_path is not None:
        ledger = Path(ledger_path)
    elif cfg.paper.ledger:
        ledger = Path(cfg.paper.ledger)
    else:
        ledger = Path(root) if root is not None else default_root()
        ledger = ledger / f"{_safe(cfg.paper.account)}.sqlite"
    stem = ledger.name[: -len(ledger.suffix)] if ledger.suffix else ledger.name + ".d"
    return AccountPaths(ledger=ledger, log=ledger.with_name(stem + ".log"), folder=ledger.with_name(stem),
                        lock=ledger.with_name(stem + ".lock"))


def _safe(name: str) -> str:
    out = "".join(c if c.isalnum() or c in "._-" else "-" for c in name).strip(".-")
    return out or "account"
