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

Here `n` is kept grouped `(..., G, units)` and `s` as `(..., G, 1)`, the
shapes the means over a gate broadcast against.
"""

from typing import Any
from typing import NamedTuple

import keras
from keras import ops

# Dtypes whose statistics are computed in float32.
_HALF = ("float16", "bfloat16")


class Norm(NamedTuple):
    """One normalization of `G` gates side by side.

    Attributes:
        gamma: the gains `(G, units)`.
        beta: the shifts `(G, units)`.
        epsilon: added to the variance.
    """

    gamma: Any
    beta: Any
    epsilon: float


def norm_of(gamma, beta, epsilon, groups):
    """A `Norm` from stored `(groups * units,)` weights (or slices)."""
    return Norm(grouped(gamma, groups), grouped(beta, groups), epsilon)


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


def statistics(v, epsilon, groups):
    """`(n, s)` of `v` `(..., groups * units)`: `n` the normalized values
    `(..., groups, units)`, `s` the inverse deviation `(..., groups, 1)`,
    both in `v`'s dtype."""
    dtype = v.dtype
    half = keras.backend.standardize_dtype(dtype) in _HALF
    v = grouped(v, groups)
    if half:
        v = ops.cast(v, "float32")
    centered = v - _mean(v)
    s = ops.rsqrt(_mean(centered * centered) + epsilon)
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
    n, s = statistics(v, norm.epsilon, norm.gamma.shape[0])
    return flat(n * norm.gamma + norm.beta), (n, s)


def backward(dy, stats, norm):
    """dL/dv from `dy` = dL/dLN(v) `(..., G * units)`, given the `stats`
    `(n, s)` of the forward pass and its `Norm`."""
    n, s = stats
    dn = grouped(dy, n.shape[-2]) * norm.gamma
    return flat(s * (dn - _mean(dn) - n * _mean(dn * n)))


def parameter_grads(dy, stats):
    """`(dgamma, dbeta)`, each `(groups * units,)`, summed over every
    leading axis of `dy` `(..., groups * units)`."""
    n, _ = stats
    leading = tuple(range(len(dy.shape) - 1))
    d_gamma = ops.sum(flat(grouped(dy, n.shape[-2]) * n), axis=leading)
    return d_gamma, ops.sum(dy, axis=leading)
