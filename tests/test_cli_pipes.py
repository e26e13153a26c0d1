"""A reader that closes stdout early (``walkforward data show | head -1``): exit 141 quietly, as SIGPIPE would."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "backtest.cli"]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}


@pytest.mark.parametrize("args", [["data", "show"], ["models"]])
def test_stdout_closed_before_the_first_write_exits_141_silently(args: list[str]) -> None:
    """The reader is gone before the command writes (``| head -0``, or ``| head -1`` that already has its line):
    deterministic, unlike a race with ``head``."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        res = subprocess.run(CLI + args, stdout=write_end, stderr=subprocess.PIPE, text=True, env=_env(), timeout=120)
    finally:
        os.close(write_end)
    assert res.stderr == ""
    assert res.returncode == 141


def test_data_show_piped_into_head(tmp_path: Path) -> None:
    cmd = " ".join(CLI + ["data", "show"]) + " | head -1; echo \"status=${PIPESTATUS[0]}\" >&2"
    res = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, env=_env(), timeout=120)
    assert res.stdout.startswith("source ") and res.stdout.count("\n") == 1
    status = res.stderr.strip()  # the only thing on stderr: whether the pipe closed before or after the last write
    assert status in ("status=0", "status=141")
