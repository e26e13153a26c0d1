"""Forecasters: one registry by type name, one interface for all.

Importing this package does not import Keras: :func:`get_forecaster_class`
imports a network module only when a network type is asked for, so
``walkforward --help`` and config validation stay fast.
"""
from __future__ import annotations

import importlib

from models.base import Forecaster

#: type name -> "module:Class". Baselines first: they are in every report.
_REGISTRY: dict[str, str] = {
    "persistence": "models.baselines:Persistence",
    "mean": "models.baselines:MeanReturn",
    "linear": "models.baselines:Linear",
    "lstm": "models.networks:LSTMForecaster",
    "stacked_lstm": "models.networks:StackedLSTMForecaster",
    "bilstm": "models.networks:BiLSTMForecaster",
    "gru": "models.networks:GRUForecaster",
    "cnn": "models.networks:CNNForecaster",
}
MODEL_TYPES: tuple[str, ...] = tuple(_REGISTRY)
BASELINE_TYPES: tuple[str, ...] = ("persistence", "mean", "linear")


def get_forecaster_class(type_name: str) -> type[Forecaster]:
    """The forecaster class registered under ``type_name`` (imports it on first use)."""
    try:
        target = _REGISTRY[type_name]
    except KeyError:
        raise ValueError(f"unknown model type {type_name!r}; allowed: {', '.join(MODEL_TYPES)}") from None
    module, cls = target.split(":")
    return getattr(importlib.import_module(module), cls)


def make_forecaster(type_name: str, **params: object) -> Forecaster:
    """A fresh, unfitted forecaster of ``type_name`` with hyper-parameters ``params``."""
    return get_forecaster_class(type_name)(**params)


__all__ = ["Forecaster", "MODEL_TYPES", "BASELINE_TYPES", "get_forecaster_class", "make_forecaster"]
