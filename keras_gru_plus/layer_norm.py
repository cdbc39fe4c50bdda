"""Layer normalization per gate (Ba, Kiros & Hinton 2016), forward and
backward, as small pure functions over `keras.ops`.

A fused projection `(..., G * units)` holds `G` gates side by side in gate
order (z, r, h); each gate is normalized over its own `units` values, per
row, with its own gain `gamma` and shift `beta`:

    n      = (v - mean(v)) * s,        s = 1 / sqrt(var(v) + epsilon)
    LN(v)  = gamma * n + beta

`var` is the population variance (the mean of the squared deviations), as
in `keras.layers.LayerNormalization`. The statistics (`mean`, `var`, `s`)
are computed in float32 when the values are float16 or bfloat16 (mixed
precision), whose 10 or 7 bits of mantissa lose the variance of values far
from zero.

The backward pass of one normalization, given `dy` = dL/dLN(v):

    dn     = gamma * dy
    dv     = s * (dn - mean(dn) - n * mean(dn * n))
    dgamma = sum dy * n        dbeta = sum dy       (over the leading axes)

A gate's mean is linear in the kernel that makes the values:
`mean(x W_g) = x colmean(W_g)`. So the layer multiplies by kernels centered
per gate (`centered_columns`: each row's mean over a gate's columns
removed, once per call), whose products come centered, and their
normalization (a `Norm` with `centered=True`) takes no mean and subtracts
none; its backward pass, the derivative of what it computes, drops
`mean(dn)`:

    dv     = s * (dn - n * mean(dn * n))                  (centered=True)

and autodiff of the centering (its transpose, the same centering) carries
the kernels' gradients back to the stored kernels: `dW = X^T dv` centered
per gate is the `dW` of the equations above. Measured, the `layer_norm`
row of the benchmark against the same engine normalizing uncentered
products (`benchmarks/compare.py`, new/old): PyTorch predict 0.95 and
train 0.90, JAX 0.96 and 0.97, TensorFlow 0.95 and 1.04 (a ratio within
0.95 to 1.05 is noise). One loop step's normalization of `(32, 384)` by
matmul with its matmul, on PyTorch: 164 -> 113 us (the matmul alone 50
us; a busy machine).

Two terms more leave the loop. The sequence adds every shift to the bias
beside it once per call (`recurrence.shifts_in_biases`), so its norms have
no `beta`. And an inference step, which keeps no statistics, normalizes by
`apply`: by matmul, `s` stays one per gate `(..., G)` and reaches the units
in the matmul that applies the gains, `LN(v) = v * (s @ (E * gamma))`.
Measured against the engine before both (`benchmarks/compare.py --base
d3177e2 --configs layer_norm`, new/old): PyTorch predict 0.94 and train
0.89, JAX 0.89 and 1.01, TensorFlow 0.95 and 1.00.

How the means over a gate are taken is the policy's choice
(`policy.BackendPolicy.step_gate_means`), and with it the layout of `n` and `s`:
by reduction, `n` grouped `(..., G, units)` and `s` `(..., G, 1)`, the
shapes those means broadcast against; by matmul, both flat
`(..., G * units)`.
"""

from typing import Any
from typing import NamedTuple

import keras
import numpy as np
from keras import ops

from keras_gru_plus import policy

# Dtypes whose statistics are computed in float32.
_HALF = ("float16", "bfloat16")


class _Reduced:
    """Means over a gate by reduction: the values viewed per gate
    `(..., G, units)`, the means and `s` `(..., G, 1)`."""

    # No shortcut for `apply`: the gains meet `s` in one broadcast already.
    gained = None

    def __init__(self, groups, gamma):
        self.groups = groups

    def view(self, v):
        return grouped(v, self.groups)

    def flat(self, v):
        return flat(v)

    def mean(self, v):
        return _mean(v)

    def rsqrt(self, v):
        return ops.rsqrt(v)

    def deviation_like(self, n):
        return n[..., :1]


class _ByMatmul:
    """Means over a gate by two thin matmuls, `(v A) E`: `A` `(G * units, G)`
    averages each gate's columns, `E` `(G, G * units)` spreads each mean back
    over its gate. The values stay flat `(..., G * units)` and so do the
    means and `s`: no reshape, and every op is an operator, which eager
    PyTorch dispatches without `keras.ops`' Python layer (see
    `policy.BackendPolicy.step_gate_means`). `gained` is `E` with each
    column scaled by its gain, `E * gamma`, for `apply`."""

    def __init__(self, groups, gamma):
        units, dtype = gamma.shape[0] // groups, gamma.dtype
        eye = np.eye(groups)
        self.to_gates = ops.convert_to_tensor(
            np.kron(eye, np.full((units, 1), 1.0 / units)), dtype
        )
        self.to_units = ops.convert_to_tensor(np.kron(eye, np.ones((1, units))), dtype)
        self.gained = self.to_units * gamma

    def view(self, v):
        return v

    def flat(self, v):
        return v

    def mean(self, v):
        to_gates, to_units = self.to_gates, self.to_units
        if to_gates.dtype != v.dtype:
            # Mixed precision: statistics in float32, gradients in float16.
            to_gates, to_units = (
                ops.cast(to_gates, v.dtype),
                ops.cast(to_units, v.dtype),
            )
        return (v @ to_gates) @ to_units

    def rsqrt(self, v):
        return v**-0.5

    def deviation_like(self, n):
        return n


_MEANS = {"reduce": _Reduced, "matmul": _ByMatmul}


class Norm(NamedTuple):
    """One normalization of `G` gates side by side.

    Attributes:
        gamma: the gains, in the layout of `means`: `(G, units)` (means by
            reduction) or `(G * units,)` (by matmul).
        beta: the shifts, laid out as `gamma`, or `None` where they are
            added with the biases (`recurrence.shifts_in_biases`).
        epsilon: added to the variance.
        means: how the means over a gate are taken (see `norm_of`), and
            the layout of the values they take.
        centered: whether the values come centered per gate (products by
            a kernel of `centered_columns`): their mean is not taken.
    """

    gamma: Any
    beta: Any
    epsilon: float
    means: Any
    centered: bool = False


def norm_of(gamma, beta, epsilon, groups, in_step=False, centered=False):
    """A `Norm` from stored `(groups * units,)` weights (or slices); `beta`
    may be `None` (the shifts added elsewhere).

    With `in_step` (a loop step's normalization, one step of values) its
    means are the current policy's `step_gate_means`; otherwise (values of
    many steps at once) by reduction. `centered`: the values it takes come
    centered per gate (products by a kernel of `centered_columns`).
    """
    kind = policy.current().step_gate_means if in_step else "reduce"
    # As tensors: a step's operators on a `keras.Variable` would go through
    # `keras.ops`.
    gamma = ops.convert_to_tensor(gamma)
    means = _MEANS[kind](groups, gamma)
    if beta is not None:
        beta = means.view(ops.convert_to_tensor(beta))
    return Norm(means.view(gamma), beta, epsilon, means, centered)


def centered_columns(kernel, groups):
    """`kernel` `(k, groups * units)` with each row's mean over each gate's
    `units` columns subtracted: `x @ centered_columns(W)` is `x W` centered
    per gate."""
    per_gate = grouped(kernel, groups)
    return flat(per_gate - _mean(per_gate))


def _mean(v):
    """The mean over the last axis, kept. (In float64 a sum: Keras 3.15's
    `ops.mean` computes float64 in float32 on JAX and PyTorch.)"""
    if keras.backend.standardize_dtype(v.dtype) == "float64":
        return ops.sum(v, axis=-1, keepdims=True) * (1.0 / v.shape[-1])
    return ops.mean(v, axis=-1, keepdims=True)


def grouped(v, groups):
    """`(..., groups * units)` -> `(..., groups, units)`."""
    return ops.reshape(v, ops.shape(v)[:-1] + (groups, v.shape[-1] // groups))


def flat(v):
    """`(..., groups, units)` -> `(..., groups * units)`."""
    return ops.reshape(v, ops.shape(v)[:-2] + (v.shape[-2] * v.shape[-1],))


def statistics(v, norm):
    """`(n, s)` of `v` `(..., G * units)`: `n` the normalized values and
    `s` the inverse deviation, laid out as `norm.means` takes them, both
    in `v`'s dtype."""
    dtype = v.dtype
    half = keras.backend.standardize_dtype(dtype) in _HALF
    means = norm.means
    v = means.view(v)
    if half:
        v = ops.cast(v, "float32")
    centered = v if norm.centered else v - means.mean(v)
    s = means.rsqrt(means.mean(centered * centered) + norm.epsilon)
    n = centered * s
    if half:
        n, s = ops.cast(n, dtype), ops.cast(s, dtype)
    return n, s


def normalize(v, norm):
    """`LN(v)` per gate and the statistics the backward pass takes.

    Args:
        v: `(..., G * units)`, gates side by side.
        norm: the `Norm` of those `G` gates.

    Returns:
        `(y, (n, s))`: `y` = `LN(v)` `(..., G * units)`, and the
        statistics of `statistics`.
    """
    n, s = statistics(v, norm)
    y = n * norm.gamma
    return norm.means.flat(y if norm.beta is None else y + norm.beta), (n, s)


def apply(v, norm):
    """`LN(v)` alone, without the statistics (a loop step at inference).

    Means by matmul, on centered values: the inverse deviations stay one
    per gate, `s` `(..., G)`, and reach the units in the same matmul that
    applies the gains, `LN(v) = v * (s @ (E * gamma)) + beta`: two ops
    fewer per normalization than `normalize`. Otherwise `normalize`'s
    result.
    """
    gained = norm.means.gained
    half = keras.backend.standardize_dtype(v.dtype) in _HALF
    if gained is None or half or not norm.centered:
        return normalize(v, norm)[0]
    s = ((v * v) @ norm.means.to_gates + norm.epsilon) ** -0.5
    y = v * (s @ gained)
    return y if norm.beta is None else y + norm.beta


def backward(dy, stats, norm):
    """dL/dv from `dy` = dL/dLN(v) `(..., G * units)`, given the `stats`
    `(n, s)` of the forward pass and its `Norm`."""
    n, s = stats
    means = norm.means
    dn = means.view(dy) * norm.gamma
    # The derivative of `statistics`: where it subtracted no mean
    # (`centered`), `mean(dn)` is not subtracted either.
    centered = dn if norm.centered else dn - means.mean(dn)
    return means.flat(s * (centered - n * means.mean(dn * n)))


def parameter_grads(dy, stats, norm):
    """`(dgamma, dbeta)`, each `(groups * units,)`, summed over every
    leading axis of `dy` `(..., groups * units)`; `dbeta` is `None` where
    the norm has no shifts (they are added with the biases, whose gradient
    is the same sum)."""
    n, _ = stats
    leading = tuple(range(len(dy.shape) - 1))
    d_gamma = ops.sum(norm.means.flat(norm.means.view(dy) * n), axis=leading)
    if norm.beta is None:
        return d_gamma, None
    return d_gamma, ops.sum(dy, axis=leading)


def stats_like(leading_shape, norm, dtype):
    """Zeros shaped like the statistics `(n, s)` of values
    `leading_shape + (G * units,)`."""
    n = ops.zeros(tuple(leading_shape) + tuple(norm.gamma.shape), dtype)
    return n, norm.means.deviation_like(n)
