"""The parameters of each strategy type (``[strategies.NAME]``): one validated schema, the keys each type
reads, and the checks that need the rest of the config (models, costs) passed in as data.

Units: thresholds are log returns of the next bar (``r̂[t+1]``; 0.002 = about 0.2%), windows are bars.
Importing this module imports neither Keras nor vectorbt (config validation stays fast).
"""
from __future__ import annotations

import difflib
from typing import Any, Literal, Mapping

from pydantic import BaseModel, ConfigDict, Field, field_validator

from strategies import STRATEGY_TYPES


def _did_you_mean(word: str, choices: Any) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


class StrategyConfig(BaseModel):
    """``[strategies.NAME]``: turns forecasts into long/flat signals."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)

    type: str = Field(..., description="long_flat, ensemble, buy_and_hold, always_flat, sma_cross")
    threshold: float | None = Field(None, description="long when forecast > threshold (log return); default: round-trip cost")
    entry_threshold: float | None = Field(None, description="hysteresis: enter when forecast > this")
    exit_threshold: float | None = Field(None, description="hysteresis: exit when forecast < this")
    models: list[str] | None = Field(None, description="ensemble: models to combine; default all")
    method: Literal["vote", "mean"] = Field("mean", description="ensemble: majority vote of signals, or mean forecast")
    fast: int = Field(10, ge=1, description="sma_cross fast window in bars")
    slow: int = Field(30, ge=2, description="sma_cross slow window in bars")

    @field_validator("type")
    @classmethod
    def _known_type(cls, v: str) -> str:
        if v not in STRATEGY_TYPES:
            raise ValueError(f"unknown strategy type {v!r}{_did_you_mean(v, STRATEGY_TYPES)}; allowed: {', '.join(STRATEGY_TYPES)}")
        return v


#: Keys each strategy type reads (``type`` aside); any other key set in its table is an error.
STRATEGY_KEYS: dict[str, tuple[str, ...]] = {
    "long_flat": ("threshold", "entry_threshold", "exit_threshold"),
    "ensemble": ("threshold", "entry_threshold", "exit_threshold", "models", "method"),
    "buy_and_hold": (),
    "always_flat": (),
    "sma_cross": ("fast", "slow"),
}


def check_strategy(name: str, s: StrategyConfig, models: Mapping[str, Any], fees: float, slippage: float) -> None:
    """Every parameter of ``[strategies.NAME]`` is used by its type and consistent, before any training.

    ``models``: model name -> its params (anything with ``.type``); ``fees``/``slippage``: fractions per
    fill, for the default threshold (the round-trip cost). Raises ``ValueError`` with one line."""
    used = STRATEGY_KEYS.get(s.type, ())
    ignored = sorted(k for k in s.model_fields_set if k != "type" and k not in used)
    if ignored:
        raise ValueError(f"strategies.{name}: {', '.join(map(repr, ignored))} is not a parameter of type {s.type!r}; "
                         f"allowed: {', '.join(used) or 'no keys besides type'}")
    if s.type == "sma_cross" and s.fast >= s.slow:
        raise ValueError(f"strategies.{name}.fast ({s.fast}) must be smaller than slow ({s.slow})")
    if s.type in ("long_flat", "ensemble") and (s.entry_threshold is not None or s.exit_threshold is not None):
        from strategies.signals import round_trip_cost

        default = s.threshold if s.threshold is not None else round_trip_cost(fees, slippage)
        enter = default if s.entry_threshold is None else s.entry_threshold
        leave = default if s.exit_threshold is None else s.exit_threshold
        if leave > enter:
            raise ValueError(f"strategies.{name}: exit_threshold ({leave:g}) must not exceed entry_threshold ({enter:g}); "
                             "an unset one is threshold or the round-trip cost")
    if s.type == "ensemble":
        skip = ("persistence", "mean")  # the default ensemble leaves out models with no forecast of their own
        names = s.models if s.models else [m for m, mc in models.items() if mc.type not in skip]
        if not names or all(models[m].type in skip for m in names):
            raise ValueError(f"strategies.{name}: an ensemble needs at least one forecasting model besides "
                             f"{' and '.join(skip)} (models: {', '.join(names) or 'none'})")


__all__ = ["STRATEGY_KEYS", "StrategyConfig", "check_strategy"]
