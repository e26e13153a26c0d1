"""The forecaster interface, in the spirit of scikit-learn's estimators.

* ``__init__`` takes keyword hyper-parameters and only stores them;
* ``fit(X, y, X_val, y_val)`` learns attributes ending in ``_`` and returns ``self``;
* ``predict(X)`` checks that the model was fitted and returns an array of shape
  ``(n, horizon)``;
* ``save(path)`` / ``load(path)`` round-trip a fitted model.

Shapes and alignment: ``X[i]`` is the input window of decision row ``t_i``
(``lookback`` bars ending at bar ``t_i`` inclusive, shape ``(lookback,
n_inputs)``, float32); ``y[i]`` is the target of that row (the next ``horizon``
bars). Learners (``target_space = "encoded"``) get targets encoded by the
engine (scaled with statistics of the fold's training rows only); baselines
that are defined in return space (``target_space = "return"``) get the raw
log returns ``r[t+1..t+K]``.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import numpy as np


class NotFittedError(RuntimeError):
    """``predict`` or ``save`` was called before ``fit``."""


class Forecaster:
    """Base class. Subclasses set :attr:`type_name` and implement ``_fit``/``_predict``."""

    type_name: ClassVar[str] = ""
    #: "encoded": targets scaled by the engine; "return": raw log returns.
    target_space: ClassVar[str] = "encoded"
    #: Hyper-parameters this type reads from its config section.
    param_names: ClassVar[tuple[str, ...]] = ()

    def __init__(self, **params: Any) -> None:
        unknown = set(params) - set(self.param_names) - {"seed", "horizon"}
        if unknown:
            raise TypeError(f"{type(self).__name__} got unknown parameter(s) {sorted(unknown)}")
        self.params = dict(params)
        self.hparams = self._validated(params)
        self.seed: int = int(params.get("seed", 0))
        self.horizon: int = int(params.get("horizon", 1))

    # --- public API -----------------------------------------------------------------
    def fit(
        self,
        X: np.ndarray,
        y: np.ndarray,
        X_val: np.ndarray | None = None,
        y_val: np.ndarray | None = None,
        **fit_options: Any,
    ) -> "Forecaster":
        """Learn from training windows ``X`` and targets ``y`` (shape ``(n, horizon)``)."""
        if len(X) != len(y) or len(X) == 0:
            raise ValueError(f"fit needs equal, non-zero numbers of windows and targets (got {len(X)} and {len(y)})")
        self._fit(np.asarray(X, dtype="float32"), np.asarray(y, dtype="float32").reshape(len(y), -1),
                  None if X_val is None or len(X_val) == 0 else np.asarray(X_val, dtype="float32"),
                  None if y_val is None or len(y_val) == 0 else np.asarray(y_val, dtype="float32").reshape(len(y_val), -1),
                  **fit_options)
        self.fitted_ = True
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Forecasts of shape ``(len(X), horizon)``, in the model's target space."""
        self._check_fitted()
        out = np.asarray(self._predict(np.asarray(X, dtype="float32")), dtype="float64")
        return out.reshape(len(X), self.horizon)

    @property
    def history_(self) -> list[dict[str, float]]:
        """Per-epoch ``{"epoch", "loss", "val_loss"}`` of the last fit (empty for closed-form models)."""
        return getattr(self, "_history", [])

    def save(self, path: str | Path) -> None:
        """Write the fitted model into the folder ``path``."""
        self._check_fitted()
        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "forecaster.json").write_text(json.dumps({"type": self.type_name, "params": self.params}))
        self._save(folder)

    @classmethod
    def load(cls, path: str | Path) -> "Forecaster":
        """Read a model written by :meth:`save` (any registered type)."""
        from models import get_forecaster_class

        folder = Path(path)
        meta = json.loads((folder / "forecaster.json").read_text())
        klass = get_forecaster_class(meta["type"])
        model = klass(**meta["params"])
        model._load(folder)
        model.fitted_ = True
        return model

    def _validated(self, params: dict[str, Any]) -> Any:
        """``params`` validated by the type's schema (:mod:`models.params`): the values, with the
        schema's defaults, that the model reads. A value the type would change is a ``ValueError``."""
        from pydantic import ValidationError

        from models.params import PARAMS_BY_TYPE

        schema = PARAMS_BY_TYPE[self.type_name]
        given = {k: v for k, v in params.items() if k in schema.model_fields and v is not None}
        try:
            return schema(type=self.type_name, **given)
        except ValidationError as err:
            e = err.errors()[0]
            key = ".".join(str(x) for x in e["loc"])
            raise ValueError(f"{self.type_name}: {key}: {e['msg']} (got {e.get('input')!r})") from None

    # --- for subclasses -------------------------------------------------------------
    def _check_fitted(self) -> None:
        if not getattr(self, "fitted_", False):
            raise NotFittedError(f"{type(self).__name__} is not fitted; call fit first")

    def _fit(self, X: np.ndarray, y: np.ndarray, X_val: np.ndarray | None, y_val: np.ndarray | None, **opts: Any) -> None:
        raise NotImplementedError

    def _predict(self, X: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _save(self, folder: Path) -> None:
        raise NotImplementedError

    def _load(self, folder: Path) -> None:
        raise NotImplementedError

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in sorted(self.params.items()))
        return f"{type(self).__name__}({args})"
