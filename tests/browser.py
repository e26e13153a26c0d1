"""Headless Chromium for the tests that check a page as a user's browser shows it.

Chromium comes from Debian's ``chromium`` package, installed by ``make test`` (``make browser``). The page
is loaded with its scripts run (``--virtual-time-budget``), and the DOM as it then stands is returned: a
test puts what it measures (element boxes, text shown) into the DOM with a script of its own, or reads
what the page's own scripts wrote. No network: the flags keep Chromium from calling home.
"""
from __future__ import annotations

import shutil
import subprocess
import tempfile

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--hide-scrollbars"]


def chromium() -> str:
    """The Chromium binary; a test that needs it fails (not skips) without it: ``make test`` installs it."""
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        raise RuntimeError("chromium not found: run `make browser` (Debian package chromium)")
    return exe


def dump_dom(url: str, width: int = 1400, height: int = 900, budget_ms: int = 3000, timeout_s: float = 60) -> str:
    """The DOM of ``url`` after its scripts ran for ``budget_ms`` of virtual time, in a ``width`` x ``height`` window."""
    with tempfile.TemporaryDirectory(prefix="wf-chromium-") as profile:
        out = subprocess.run([chromium(), *FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}",
                              f"--virtual-time-budget={budget_ms}", "--dump-dom", url],
                             capture_output=True, text=True, timeout=timeout_s)
    if out.returncode != 0 or not out.stdout.strip():
        raise RuntimeError(f"chromium failed on {url} (rc {out.returncode}): {out.stderr.strip()[-500:]}")
    return out.stdout


def screenshot(url: str, path: str, width: int = 1400, height: int = 900, budget_ms: int = 3000,
               timeout_s: float = 60) -> str:
    """A PNG of ``url`` as shown in a ``width`` x ``height`` window (for a person to look at; tests read the DOM)."""
    with tempfile.TemporaryDirectory(prefix="wf-chromium-") as profile:
        out = subprocess.run([chromium(), *FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}",
                              f"--virtual-time-budget={budget_ms}", f"--screenshot={path}", url],
                             capture_output=True, text=True, timeout=timeout_s)
    if out.returncode != 0:
        raise RuntimeError(f"chromium failed on {url} (rc {out.returncode}): {out.stderr.strip()[-500:]}")
    return path
