"""The walk-forward engine: fold plan, the fold task, and executors.

Alignment (see DESIGN.md): bars are labelled by open time; decision row ``t``
sees bars ``<= t`` and forecasts ``r[t+1..t+K]``. A fold that tests rows
``[T, T+step)`` trains only on rows ``t <= T - 1 - K`` (a gap of ``K = horizon``
rows, so every training target is known before ``T``), and the validation rows
for early stopping are the chronological tail of those, again with a gap of
``K`` rows after the rows the model is fit on. ``window = "expanding"`` trains
on every earlier row; ``"rolling"`` on the last ``train_length`` rows.

A fold is a pure, picklable task ``(config, bars up to the end of its test
block, fold spec, seed) -> fold result on disk``: the task is *given* no bar
after its test block, so it cannot read one. The sequential and process
executors therefore give identical results; a distributed executor only has to
ship the same task.
"""
from __future__ import annotations

import os
import pickle
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from backtest.config import Config, FeaturesConfig, ModelConfig, WalkForwardConfig
from backtest.errors import ConfigError
from backtest.features import FoldTransform, feature_matrix, first_valid_row, target_returns
from backtest.quiet import import_tensorflow


@dataclass(frozen=True)
class FoldSpec:
    """Row positions (into the bar index) of one fold; ``stop`` is exclusive."""

    k: int
    train_start: int
    train_stop: int  # rows the model is fit on: [train_start, train_stop)
    val_start: int
    val_stop: int  # validation rows: [val_start, val_stop); empty when val_fraction = 0
    test_start: int
    test_stop: int

    @property
    def n_train(self) -> int:
        return self.train_stop - self.train_start


def plan_folds(n_bars: int, first_row: int, wf: WalkForwardConfig, horizon: int) -> list[FoldSpec]:
    """The fold plan, from the data length and the config alone.

    ``first_row``: the first decision row with a full input window. Test rows
    run from ``initial_train`` to the last row whose target is known
    (``n_bars - 1 - horizon``), in blocks of ``step``.
    """
    last_row = n_bars - 1 - horizon  # last row whose r[t+1..t+K] is known
    folds: list[FoldSpec] = []
    T = wf.initial_train
    k = 0
    while T <= last_row:
        test_stop = min(T + wf.step, last_row + 1)
        end = T - horizon  # training rows t <= T - 1 - horizon  ->  stop = T - horizon
        start = first_row if wf.window == "expanding" else max(first_row, end - int(wf.train_length or 0))
        n = end - start
        n_val = int(np.floor(n * wf.val_fraction))
        if n_val > 0:
            val_start, val_stop = end - n_val, end
            fit_stop = val_start - horizon
        else:
            val_start = val_stop = fit_stop = end
        if fit_stop - start < 10 and wf.window == "rolling" and end - int(wf.train_length or 0) >= first_row:
            raise ConfigError(
                f"walkforward.train_length = {wf.train_length}: fold {k} would train on {fit_stop - start} rows "
                f"after validation ({n_val}) and horizon gap ({horizon}); it needs at least 10: raise walkforward.train_length"
            )
        if fit_stop - start < 10:
            raise ConfigError(
                f"walkforward.initial_train = {wf.initial_train}: fold {k} would train on {fit_stop - start} rows; "
                f"it needs at least 10 after lookback, warm-up, horizon and validation"
            )
        folds.append(FoldSpec(k, start, fit_stop, val_start, val_stop, T, test_stop))
        T = test_stop
        k += 1
        if wf.max_folds is not None and k >= wf.max_folds:
            break
    return folds


@dataclass
class FoldTask:
    """Everything one fold needs: picklable, and blind to bars after its test block."""

    model_name: str
    model_cfg: ModelConfig
    features: FeaturesConfig
    fold: FoldSpec
    n_folds: int
    seed: int
    bars: pd.DataFrame  # bars [0, fold.test_stop): nothing later
    out_dir: Path  # folds/<model>/<k>/seed-<seed>
    warm_from: Path | None = None  # previous fold's folder, for warm start
    warm_epochs: int | None = None
    deterministic: bool = True
    grouped: bool = False  # train with the grouped trainer (alone: a group of one) when the model allows it
    group_slots: int = 1  # models training at once in a grouped unit of this model (see group_cap)


@dataclass
class FoldResult:
    """What a fold wrote: forecasts (one row per test bar) and the training history."""

    task_key: tuple[str, int, int]
    forecasts: pd.DataFrame
    history: pd.DataFrame
    seconds: float
    skipped: bool = False
    best_val_loss: float = float("nan")
    train_rows: int = 0


def fold_dir(run_dir: Path, model: str, k: int, seed: int) -> Path:
    """``runs/<name>/folds/<model>/<k>/seed-<seed>``."""
    return Path(run_dir) / "folds" / model / str(k) / f"seed-{seed}"


def model_params(cfg: ModelConfig, features: FeaturesConfig, seed: int) -> dict[str, Any]:
    """Hyper-parameters for the forecaster constructor: every validated key of the type's schema
    (:mod:`models.params`, defaults included). A key the forecaster does not take is an error, never dropped."""
    from models import get_forecaster_class

    klass = get_forecaster_class(cfg.type)
    params = cfg.model_dump(exclude={"type"}, exclude_none=True)
    unused = [k for k in params if k not in klass.param_names]
    if unused:
        raise ConfigError(f"models: {', '.join(unused)} is not a parameter of type {cfg.type!r}; "
                          f"allowed: {', '.join(klass.param_names)}")
    params.update(seed=seed, horizon=features.horizon)
    if "deterministic" in klass.param_names:
        params["deterministic"] = True
    return params


def _configure_backend(deterministic: bool) -> None:
    """Deterministic TensorFlow ops when TF is the Keras backend (no effect on JAX/PyTorch)."""
    if not deterministic:
        return
    import keras

    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()


@dataclass
class PreparedFold:
    """A fold's model inputs, fit on its training rows only: what any trainer (single or grouped) needs.

    ``X_*`` are windows ``(n, lookback, n_inputs)`` (float32) of decision rows; ``y_*`` the targets in the
    model's space (``(n, horizon)``): raw log returns ``r[t+1..t+K]`` for return-space baselines, encoded
    by ``transform`` otherwise. ``model`` is a fresh, unfitted forecaster seeded for this fold.
    """

    task: FoldTask
    transform: FoldTransform
    model: Any
    X_fit: np.ndarray
    y_fit: np.ndarray
    X_val: np.ndarray | None
    y_val: np.ndarray | None
    X_test: np.ndarray
    test_rows: np.ndarray
    close: np.ndarray
    started: float

    @property
    def raw_space(self) -> bool:
        return self.model.target_space == "return"


@dataclass
class FoldOutput:
    """A computed fold as data, before anything is written: ``files`` maps paths relative to the fold
    folder (``forecasts.csv``, ``history.csv``, ``transform.pkl``, ``training_log.csv``, ``model/...``) to
    their bytes. Workers without the run directory return this; the driver writes it with :func:`write_fold`.
    """

    task_key: tuple[str, int, int]
    forecasts: pd.DataFrame
    history: pd.DataFrame
    files: dict[str, bytes]
    seconds: float
    train_rows: int

    def result(self) -> "FoldResult":
        best = float(self.history["val_loss"].min()) if len(self.history) else float("nan")
        return FoldResult(self.task_key, self.forecasts, self.history, self.seconds, False, best, self.train_rows)


def prepare_fold(task: FoldTask) -> PreparedFold:
    """Features, the fold's fitted transform, windows and targets of its fit/validation/test rows, and a fresh model."""
    t0 = time.perf_counter()
    from models import make_forecaster

    f, fc = task.fold, task.features
    feats_df = feature_matrix(task.bars, fc.inputs)
    feats = feats_df.to_numpy()
    close = task.bars["close"].to_numpy()
    y_all = target_returns(close, fc.horizon)  # rows >= test_start are NaN or unused: bars stop at test_stop
    fit_rows = np.arange(f.train_start, f.train_stop)
    val_rows = np.arange(f.val_start, f.val_stop)
    test_rows = np.arange(f.test_start, f.test_stop)
    tr = FoldTransform.fit(fc, feats, close, fit_rows, y_all[fit_rows], list(feats_df.columns))
    model = make_forecaster(task.model_cfg.type, **model_params(task.model_cfg, fc, _fold_seed(task.seed, f.k)))
    raw_space = model.target_space == "return"

    def y_for(rows: np.ndarray) -> np.ndarray:
        return y_all[rows] if raw_space else tr.encode_y(y_all[rows], close, rows)

    has_val = len(val_rows) > 0
    return PreparedFold(
        task=task, transform=tr, model=model,
        X_fit=tr.transform_X(feats, fit_rows), y_fit=y_for(fit_rows),
        X_val=tr.transform_X(feats, val_rows) if has_val else None, y_val=y_for(val_rows) if has_val else None,
        X_test=tr.transform_X(feats, test_rows), test_rows=test_rows, close=close, started=t0,
    )


def finish_fold(prep: PreparedFold, log_csv: bytes | None = None) -> FoldOutput:
    """Predict the fold's test rows with its fitted model and collect every file of the fold folder as bytes."""
    task, model, fc = prep.task, prep.model, prep.task.features
    z = model.predict(prep.X_test)
    y_pred = z if prep.raw_space else prep.transform.decode_y(z, prep.close, prep.test_rows)
    forecasts = pd.DataFrame({"timestamp": task.bars.index[prep.test_rows], "fold": task.fold.k})
    for h in range(fc.horizon):
        forecasts[f"y_pred_h{h + 1}"] = y_pred[:, h]
    history = pd.DataFrame(model.history_, columns=["epoch", "loss", "val_loss"])
    files: dict[str, bytes] = {}
    with tempfile.TemporaryDirectory(prefix=".fold-") as tmp:
        model.save(Path(tmp) / "model")
        for path in sorted((Path(tmp) / "model").rglob("*")):
            if path.is_file():
                files[path.relative_to(tmp).as_posix()] = path.read_bytes()
    files["transform.pkl"] = pickle.dumps(prep.transform)  # to forecast the next bar later (walkforward predict)
    files["history.csv"] = history.to_csv(index=False).encode()
    files["forecasts.csv"] = forecasts.to_csv(index=False).encode()
    if log_csv is not None:
        files["training_log.csv"] = log_csv
    key = (task.model_name, task.seed, task.fold.k)
    return FoldOutput(key, forecasts, history, files, time.perf_counter() - prep.started, len(prep.X_fit))


def compute_fold(task: FoldTask, trainer_cache: dict | None = None,
                 warm_weights: list[np.ndarray] | None = None) -> FoldOutput:
    """Train one fold on its training rows and predict its test rows; returns the fold as data (writes nothing).

    Warm start: ``warm_weights`` (the previous fold's fitted weights, in memory) or else the model saved
    under ``task.warm_from``. ``trainer_cache`` is a speed-up only (compiled Keras trainers reused across
    folds); the result is the same with or without it.
    """
    if task.grouped and group_key(task) is not None:  # the grouped trainer, as a group of one
        return train_group([prepare_fold(task)], trainer_cache)[0]
    prep = prepare_fold(task)
    model = prep.model
    fit_opts: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix=".fold-log-") as tmp:
        log = Path(tmp) / "training_log.csv"
        if hasattr(model, "build"):
            _configure_backend(task.deterministic)
            fit_opts["log_csv"] = log
            fit_opts["trainer_cache"] = trainer_cache
            if task.warm_from is not None:
                if warm_weights is None:
                    from models.base import Forecaster

                    warm_weights = Forecaster.load(task.warm_from / "model").get_weights()
                fit_opts["initial_weights"] = warm_weights
                fit_opts["epochs"] = task.warm_epochs
        model.fit(prep.X_fit, prep.y_fit, prep.X_val, prep.y_val, **fit_opts)
        log_bytes = log.read_bytes() if log.exists() else None
    return finish_fold(prep, log_bytes)


def write_fold(out: FoldOutput, out_dir: Path) -> FoldResult:
    """Write a computed fold into ``out_dir`` atomically (temp folder + rename); returns its result."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=_mkdir(out_dir.parent)))
    try:
        for rel, data in out.files.items():
            target = tmp / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        if out_dir.exists():  # a crashed earlier attempt left an incomplete folder
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out.result()


def is_complete(task: FoldTask) -> bool:
    """A fold folder with ``forecasts.csv`` was written completely (folders are renamed into place)."""
    return (task.out_dir / "forecasts.csv").exists()


def run_fold(task: FoldTask, trainer_cache: dict | None = None) -> FoldResult:
    """Train on the fold's training rows, predict its test rows, write the results atomically.

    Written to ``task.out_dir``: ``forecasts.csv`` (timestamp, fold, y_pred_h1..hK as
    predicted log returns r̂[t+1..t+K]), ``history.csv`` (epoch, loss, val_loss),
    ``training_log.csv`` (Keras CSVLogger, networks only), ``transform.pkl`` and the model (``model/``).
    If the folder already exists the fold is complete and is read back (resume).
    """
    key = (task.model_name, task.seed, task.fold.k)
    if is_complete(task):
        return _read_fold(task, key)
    return write_fold(compute_fold(task, trainer_cache), task.out_dir)


def _fold_seed(seed: int, k: int) -> int:
    """The seed a fold trains with: a function of the run seed and the fold only (not of execution order)."""
    return (seed * 1_000_003 + k) % (2**31 - 1)


def _mkdir(p: Path) -> Path:
    p.mkdir(parents=True, exist_ok=True)
    return p


def _read_fold(task: FoldTask, key: tuple[str, int, int]) -> FoldResult:
    forecasts = pd.read_csv(task.out_dir / "forecasts.csv")
    forecasts["timestamp"] = pd.to_datetime(forecasts["timestamp"], utc=True)
    history = pd.read_csv(task.out_dir / "history.csv")
    best = float(history["val_loss"].min()) if len(history) else float("nan")
    return FoldResult(key, forecasts, history, 0.0, True, best, task.fold.n_train)


def run_chain(tasks: list[FoldTask], trainer_cache: dict | None = None) -> list[FoldResult]:
    """Run a (model, seed) chain of folds in order (needed for warm start), reusing compiled trainers."""
    cache: dict = {} if trainer_cache is None else trainer_cache
    return [run_fold(t, cache) for t in tasks]


@dataclass
class Plan:
    """All fold tasks of a run, grouped into independent chains."""

    chains: list[list[FoldTask]] = field(default_factory=list)

    @property
    def n_tasks(self) -> int:
        return sum(len(c) for c in self.chains)


def build_plan(cfg: Config, bars: pd.DataFrame, run_dir: Path) -> tuple[list[FoldSpec], Plan]:
    """Fold specs and tasks for every model x seed, one chain per (model, seed)."""
    feats = feature_matrix(bars, cfg.features.inputs)
    unknown = [c for c in feats.columns if feats[c].isna().all()]
    if unknown:
        raise ConfigError(
            f"features.inputs: {', '.join(unknown)} is not available in this data (e.g. volume in a Date,Close file); "
            f"remove it from features.inputs"
        )
    first = first_valid_row(feats, cfg.features.lookback)
    folds = plan_folds(len(bars), first, cfg.walkforward, cfg.features.horizon)
    if not folds:
        raise ConfigError(
            f"walkforward.initial_train = {cfg.walkforward.initial_train} leaves no test bar in {len(bars)} bars"
        )
    plan = Plan()
    wf = cfg.walkforward
    for name, mcfg in cfg.models.items():
        slots = group_cap(mcfg, cfg.features, wf)
        for seed in cfg.run.seeds:
            chain: list[FoldTask] = []
            for f in folds:
                warm = wf.warm_start and f.k > 0 and mcfg.type not in ("persistence", "mean", "linear")
                chain.append(FoldTask(
                    model_name=name, model_cfg=mcfg, features=cfg.features, fold=f, n_folds=len(folds), seed=seed,
                    bars=bars.iloc[: f.test_stop], out_dir=fold_dir(run_dir, name, f.k, seed),
                    warm_from=fold_dir(run_dir, name, f.k - 1, seed) if warm else None,
                    warm_epochs=(wf.warm_start_epochs or max(1, mcfg.epochs // 3)) if warm else None,
                    deterministic=cfg.run.deterministic, grouped=wf.grouped, group_slots=slots,
                ))
            plan.chains.append(chain)  # one chain per (model, seed): folds in order, parallel across chains
    return folds, plan


def execute(plan: Plan, wf: WalkForwardConfig, on_result: Callable[[FoldResult], None] | None = None,
            cfg: Config | None = None) -> list[FoldResult]:
    """Run every chain with the configured executor; results in plan order. With ``training`` grouped
    (the default without warm start), cold-start network folds go through :func:`execute_grouped`;
    ``executor = "ray"`` ships folds (or warm-start chains) to Ray (``cfg`` supplies ``[ray]``)."""
    if wf.executor == "ray":
        from backtest.ray_executor import execute_ray
        return execute_ray(plan, cfg if cfg is not None else Config(walkforward=wf), on_result)
    if wf.grouped:
        return execute_grouped(plan, wf, on_result)
    results: list[FoldResult] = []
    if wf.executor == "sequential" or wf.workers == 1:
        if _needs_tensorflow(t for chain in plan.chains for t in chain):
            import_tensorflow()
        cache: dict = {}
        for chain in plan.chains:
            for task in chain:
                r = run_fold(task, cache)
                results.append(r)
                if on_result:
                    on_result(r)
        return results
    import multiprocessing as mp

    with ProcessPoolExecutor(max_workers=wf.workers, mp_context=mp.get_context("spawn"),
                             initializer=import_tensorflow) as pool:
        for chain_results in pool.map(run_chain, plan.chains):
            for r in chain_results:
                results.append(r)
                if on_result:
                    on_result(r)
    return results


def collect_forecasts(results: Iterable[FoldResult]) -> pd.DataFrame:
    """All fold forecasts as one frame: timestamp, model, seed, fold, y_pred_h1..hK."""
    parts = []
    for r in results:
        df = r.forecasts.copy()
        df.insert(1, "model", r.task_key[0])
        df.insert(2, "seed", r.task_key[1])
        parts.append(df)
    return pd.concat(parts, ignore_index=True)


# --- the grouped path ------------------------------------------------------------------------------
def group_key(task: FoldTask) -> tuple | None:
    """What lets folds train in one group: the same network type, hyper-parameters (seed aside) and inputs.
    ``None``: the task trains alone (baselines, warm-started folds, settings the grouped path lacks)."""
    from models import get_forecaster_class

    klass = get_forecaster_class(task.model_cfg.type)
    if task.warm_from is not None or not hasattr(klass, "full_architecture"):
        return None
    model = klass(**model_params(task.model_cfg, task.features, 0))
    if model.grouped_unsupported() is not None:
        return None
    return (task.model_cfg.model_dump_json(), task.features.model_dump_json(), task.deterministic)


def train_group(prepared: list[PreparedFold], cache: dict | None = None) -> list[FoldOutput]:
    """Train prepared cold-start folds of one architecture as one vectorised computation
    (:func:`models.grouped.fit_group`); returns each fold as data, like :func:`compute_fold` (writes nothing).

    Each fold keeps its own rows, seed (initial weights, shuffling, dropout), epochs and early stopping;
    its saved model is the single Keras model with its slice of the group weights. ``cache`` is a speed-up
    only (compiled group trainers reused across calls in one process).
    """
    from models.grouped import Member, TrainSettings, fit_group

    _configure_backend(prepared[0].task.deterministic)
    fc = prepared[0].model
    T, F = prepared[0].X_fit.shape[1:]
    specs = fc.full_architecture(prepared[0].y_fit.shape[1])
    settings = TrainSettings(epochs=int(fc.p("epochs")), batch_size=int(fc.p("batch_size")),
                             patience=int(fc.p("patience")), optimizer=str(fc.p("optimizer")),
                             learning_rate=float(fc.p("learning_rate")))
    f32 = lambda a: None if a is None else np.asarray(a, dtype="float32")  # noqa: E731
    members = [Member(f32(p.X_fit), f32(p.y_fit).reshape(len(p.y_fit), -1), f32(p.X_val),
                      None if p.y_val is None else f32(p.y_val).reshape(len(p.y_val), -1), seed=p.model.seed)
               for p in prepared]
    fits = fit_group(specs, members, settings, cache=cache, slots=prepared[0].task.group_slots)
    templates: dict = {}
    outs = []
    for p, fit in zip(prepared, fits, strict=True):
        p.model.horizon = p.y_fit.shape[1] if p.y_fit.ndim > 1 else 1
        p.model.adopt(fit.weights, fit.history, T, F, templates)
        log = pd.DataFrame(fit.history)[["epoch", "loss"] + (["val_loss"] if p.X_val is not None else [])]
        outs.append(finish_fold(p, log.to_csv(index=False).encode()))
        p.model.model_ = None  # the template is reused by the next fold
    return outs


#: A grouped unit (one work item) holds up to this many times its slots of folds: the slots are refilled
#: from the rest as models finish (one compiled shape, no idle slots while folds wait); a bound on the
#: prepared data one unit holds and on what a resume retrains.
_QUEUE_SLOTS = 8


def _groups(tasks: list[FoldTask], size: int, at_least: int = 1) -> list[list[FoldTask]]:
    """Tasks of one key in units of at most ``size`` (and at least ``at_least`` units, a multiple of it, so
    that every worker gets its share), dealt out in turn from the tasks sorted by training rows: each unit
    holds small and large folds alike (units of about equal cost, so workers end together); a unit's folds
    take its slots in that order (see models/grouped.py: fit_group)."""
    ordered = sorted(tasks, key=lambda t: (t.fold.n_train, t.fold.k, t.seed, t.model_name))
    n = max(-(-len(ordered) // size), at_least)
    n = min(-(-n // at_least) * at_least, len(ordered))
    return [ordered[j::n] for j in range(n)]


#: Compiled group trainers of a worker process, kept across the units it is given (a speed-up only: each
#: trainer is reset to its members' initial weights and zeroed optimizer slots before use, so results do
#: not depend on it). Only :func:`_worker_init` processes use it; the driver passes its own dict.
_WORKER_CACHE: dict = {}


def _needs_tensorflow(tasks: Iterable[FoldTask]) -> bool:
    """Whether training these tasks imports TensorFlow (any network; the baselines fit in closed form)."""
    from models import BASELINE_TYPES

    return any(t.model_cfg.type not in BASELINE_TYPES for t in tasks)


def _worker_init(threads: int) -> None:
    """A grouped-executor worker: TensorFlow imported quietly, with ``threads`` threads (set before it starts)."""
    import_tensorflow()
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)


def _run_worker_unit(unit: tuple[str, list[FoldTask]]) -> list[tuple[str, FoldResult]]:
    return _run_units([unit], _WORKER_CACHE)


def _run_units(units: list[tuple[str, list[FoldTask]]], cache: dict | None = None) -> list[tuple[str, FoldResult]]:
    """Run work units in this process: ("group", tasks) trained together, ("chain", tasks) one by one;
    returns (fold folder, result) pairs."""
    cache = {} if cache is None else cache
    results: list[tuple[str, FoldResult]] = []  # (fold folder, result): the folder is unique, the key is not
    for kind, tasks in units:                   # (a universe run has one (model, seed, k) per symbol)
        if kind == "chain":
            results += [(str(t.out_dir), run_fold(t, cache)) for t in tasks]
            continue
        missing = [not is_complete(t) for t in tasks]  # a resumed group: its finished folds are not rewritten
        outs = train_group([prepare_fold(t) for t in tasks], cache)
        results += [(str(t.out_dir), write_fold(o, t.out_dir)) for o, t, m in zip(outs, tasks, missing, strict=True) if m]
    return results


def grouped_units(plan: Plan, wf: WalkForwardConfig) -> tuple[list[tuple[str, FoldResult]], list[tuple[str, list[FoldTask]]]]:
    """Completed folds (read back: resume) and the work left, as groups of cold-start network folds and
    chains of everything else.

    Groups are a function of the plan and the config alone (:func:`group_cap`, at least ``workers`` groups per
    architecture so every worker gets one), never of what is already done: a group is trained whole if any
    of its folds is missing, and only the missing ones are written. So a resumed run trains each model in
    the same company as an uninterrupted one and gives the same floats (batched kernels round by shape).
    """
    done: list[tuple[str, FoldResult]] = []  # (fold folder, result read back)
    buckets: dict[tuple, list[FoldTask]] = {}
    units: list[tuple[str, list[FoldTask]]] = []
    for chain in plan.chains:
        rest: list[FoldTask] = []
        for t in chain:
            key = group_key(t)
            if key is not None:
                buckets.setdefault(key, []).append(t)
            elif is_complete(t):
                done.append((str(t.out_dir), _read_fold(t, (t.model_name, t.seed, t.fold.k))))
            else:
                rest.append(t)
        if rest:
            units.append(("chain", rest))
    for tasks in buckets.values():
        for g in _groups(tasks, _QUEUE_SLOTS * tasks[0].group_slots, wf.workers):
            finished = [t for t in g if is_complete(t)]
            done += [(str(t.out_dir), _read_fold(t, (t.model_name, t.seed, t.fold.k))) for t in finished]
            if len(finished) < len(g):
                units.append(("group", g))
    return done, units


def group_cap(model_cfg: ModelConfig, features: FeaturesConfig, wf: WalkForwardConfig) -> int:
    """Models of this architecture training at once on the grouped path (the slots of a unit):
    ``group_size``, fewer where their estimated step activations (``batch_size`` rows each) would pass
    ``group_memory_mib`` (:func:`models.grouped.models_per_group`); 1 for models without a grouped form."""
    from models import get_forecaster_class, make_forecaster
    from models.grouped import models_per_group

    if not hasattr(get_forecaster_class(model_cfg.type), "full_architecture"):
        return 1
    fc = make_forecaster(model_cfg.type, **model_params(model_cfg, features, 0))
    specs = fc.full_architecture(features.horizon)
    fit = models_per_group(specs, features.lookback, len(features.inputs), int(fc.p("batch_size")),
                           wf.group_memory_mib)
    return min(wf.group_size, fit)


def _unit_cost(unit: tuple[str, list[FoldTask]]) -> float:
    """Relative CPU cost of a work unit, for ordering the work (longest first): training rows x epochs x a
    per-row weight of the network (its recurrent loops, which dominate small networks' steps, plus its
    forward MFLOP per row); a fold trained alone costs about 4x its share of a group; baselines fit in
    closed form and cost next to nothing. A heuristic for scheduling only: results never depend on it."""
    from models import BASELINE_TYPES, make_forecaster
    from models.grouped import step_flops

    weights: dict[str, float] = {}

    def weight(t: FoldTask) -> float:
        if t.model_cfg.type in BASELINE_TYPES:
            return 0.001
        if t.model_name not in weights:
            fc = make_forecaster(t.model_cfg.type, **model_params(t.model_cfg, t.features, 0))
            specs = fc.full_architecture(t.features.horizon)
            loops = sum((2 if s.kind == "bilstm" else 1) for s in specs if s.kind in ("lstm", "gru", "bilstm"))
            n_in = len(t.features.inputs)
            weights[t.model_name] = (loops + step_flops(specs, t.features.lookback, n_in) / 3e6) * int(fc.p("epochs"))
        return weights[t.model_name]

    return float(sum(t.fold.n_train * weight(t) * (1 if unit[0] == "group" else 4) for t in unit[1]))


def _work_order(units: list[tuple[str, list[FoldTask]]]) -> list[tuple[str, list[FoldTask]]]:
    """Units in the order the workers take them (each to the next free worker): network by network, the
    costliest network first, and within a network its costliest unit first. A worker that finishes early
    takes more work instead of idling while the other trains a costly network, the cheap units fill the tail,
    and a worker moves on to a new architecture only once the one before is handed out (its compiled
    trainers are then dropped: ``models.grouped``), so one architecture's graphs are resident at a time."""
    cost = [_unit_cost(u) for u in units]
    per_model: dict[str, float] = {}
    for u, c in zip(units, cost, strict=True):
        per_model[u[1][0].model_name] = per_model.get(u[1][0].model_name, 0.0) + c
    order = sorted(range(len(units)), key=lambda i: (-per_model[units[i][1][0].model_name],
                                                     units[i][1][0].model_name, -cost[i]))
    return [units[i] for i in order]


def execute_grouped(plan: Plan, wf: WalkForwardConfig,
                    on_result: Callable[[FoldResult], None] | None = None) -> list[FoldResult]:
    """The grouped executor: resume, groups and chains, sequentially or over ``workers`` processes (each with
    one TensorFlow thread, its share of the units balanced by rows); results in plan order."""
    done, units = grouped_units(plan, wf)
    got: dict[str, FoldResult] = dict(done)  # by fold folder
    for _, r in done:
        if on_result:
            on_result(r)
    if wf.executor == "sequential" or wf.workers == 1 or len(units) <= 1:
        if _needs_tensorflow(t for _, tasks in units for t in tasks):
            import_tensorflow()
        cache: dict = {}
        for unit in units:
            for d, r in _run_units([unit], cache):
                got[d] = r
                if on_result:
                    on_result(r)
    else:
        import multiprocessing as mp

        with ProcessPoolExecutor(max_workers=min(wf.workers, len(units)), mp_context=mp.get_context("spawn"),
                                 initializer=_worker_init, initargs=(1,)) as pool:
            futures = [pool.submit(_run_worker_unit, u) for u in _work_order(units)]
            for fut in as_completed(futures):
                for d, r in fut.result():
                    got[d] = r
                    if on_result:
                        on_result(r)
    return [got[str(t.out_dir)] for chain in plan.chains for t in chain]
