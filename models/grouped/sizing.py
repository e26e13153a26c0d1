"""Memory and compute sizing of grouped training: how many models of one architecture fit in a step's
memory budget, and what one training row costs in FLOPs (for ordering work). Estimates, not bounds."""
from __future__ import annotations

from models.grouped.layers import LayerSpec


def activation_bytes_per_row(specs: list[LayerSpec], lookback: int, n_inputs: int) -> float:
    """Estimated bytes that one training row of one model holds during a grouped training step (the
    tensors the backward pass keeps), for sizing groups: 40 B per time step x unit of a recurrent layer,
    64 B per time step x unit x direction of a bidirectional one (its reversed copies and concatenations),
    32 B per output step x filter of a Conv1D plus its im2col columns, 16 B per unit of a dense layer.
    Calibrated on TensorFlow CPU peak RSS (LSTM(64), lookback 30: about 64 KiB per row measured, 75 KiB
    estimated); an estimate, not a bound."""
    T, feat, total = lookback, n_inputs, 0.0
    for s in specs:
        if s.kind in ("lstm", "gru", "bilstm"):
            dirs = 2 if s.kind == "bilstm" else 1
            total += (64 if dirs == 2 else 40) * T * s.units * dirs
            feat = s.units * dirs
            T = T if s.return_sequences else 1
        elif s.kind == "conv1d":
            L = -(-T // s.strides)
            total += 32 * L * s.units + 4 * L * s.kernel_size * feat
            T, feat = L, s.units
        elif s.kind == "flatten":
            feat, T = feat * T, 1
        elif s.kind == "dense":
            total += 16 * s.units * T
            feat = s.units
        elif s.kind == "dropout":
            total += 8 * T * feat
    return total


def models_per_group(specs: list[LayerSpec], lookback: int, n_inputs: int, batch_size: int,
                     memory_mib: float) -> int:
    """The most models whose estimated step activations (``batch_size`` rows each, see
    :func:`activation_bytes_per_row`) fit in ``memory_mib`` MiB; at least 1."""
    per_model = batch_size * activation_bytes_per_row(specs, lookback, n_inputs)
    return max(1, int(memory_mib * 2**20 // max(per_model, 1.0)))


def step_flops(specs: list[LayerSpec], lookback: int, n_inputs: int) -> float:
    """Multiply-add FLOPs of one training row through the network, forward + backward (~3x forward).

    Forward, counting 2 FLOPs per multiply-add of the matmuls only: LSTM ``2*T*(F+u)*4u`` per direction,
    GRU ``2*T*(F+u)*3u``, Conv1D ``2*L*k*C*filters``, Dense ``2*in*out``.
    """
    T, F, fwd = lookback, n_inputs, 0.0
    feat = F
    for s in specs:
        if s.kind in ("lstm", "bilstm", "gru"):
            gates = 3 if s.kind == "gru" else 4
            dirs = 2 if s.kind == "bilstm" else 1
            fwd += dirs * 2 * T * (feat + s.units) * gates * s.units
            feat = s.units * dirs
            T = T if s.return_sequences else 1
        elif s.kind == "conv1d":
            L = -(-T // s.strides)
            fwd += 2 * L * s.kernel_size * feat * s.units
            T, feat = L, s.units
        elif s.kind == "flatten":
            feat, T = feat * T, 1
        elif s.kind == "dense":
            fwd += 2 * feat * s.units
            feat = s.units
    return 3.0 * fwd


__all__ = ["activation_bytes_per_row", "models_per_group", "step_flops"]
