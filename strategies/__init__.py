"""Strategies: turn out-of-sample forecasts into long/flat signals; baselines for every report."""
from __future__ import annotations

#: Strategy types. Baselines (no forecast needed) are in every report.
STRATEGY_TYPES: tuple[str, ...] = ("long_flat", "ensemble", "buy_and_hold", "always_flat", "sma_cross")
BASELINE_STRATEGIES: tuple[str, ...] = ("buy_and_hold", "always_flat", "sma_cross")
