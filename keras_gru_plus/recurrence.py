"""The GRU step as small pure functions over `keras.ops`, and its equations.

Conventions shared by every function here, and by `keras.layers.GRU`:

- Gate order in every fused weight is (z, r, h): update gate, reset gate,
  candidate. `kernel` `W` is `(input_dim, 3 * units)`, `recurrent_kernel`
  `R` is `(units, 3 * units)`.
- `reset_after=True` (the default, cuDNN compatible) keeps two biases, one
  for the input projection and one for the recurrent projection, stored as
  a `(2, 3 * units)` array; the reset gate multiplies the *result* of the
  recurrent matmul. `reset_after=False` (the original 2014 formulation) has
  one `(3 * units,)` bias and applies the reset gate *before* the matmul.
- The input projection `x W + b` of every time step is one matmul made
  before the loop (or before each block of steps), kept packed as
  `(..., 3 * units)` in gate order, or split per gate where the policy says
  so. The recurrent biases of z and r are added to it there too (they are
  outside the reset gate), so a step adds only `rb_h`, which the reset gate
  multiplies.

The forward equations (one step; `σ` the recurrent activation, `φ` the
activation, `*` elementwise, `x_z, x_r, x_h` the three gates' columns of
`x W + b_in`, `b_in` the input bias; the code adds `rb_z, rb_r` to the
projection's bias, see above):

    z      = σ(x_z + h R_z + rb_z)
    r      = σ(x_r + h R_r + rb_r)
    rec_h  = h R_h + rb_h                       (reset_after=True)
    hh     = φ(x_h + r * rec_h)                 (reset_after=True)
    hh     = φ(x_h + (r * h) R_h)               (reset_after=False)
    h'     = z * h + (1 - z) * hh  =  hh + z * (h - hh)

With recurrent dropout, `h` entering `R` is `h_in = h * m_h` (one mask per
sequence); the interpolation uses the undropped `h`.

The backward equations (`bptt`), in the same names. `g` is dL/dh' of the
step: its upstream gradient plus what the next step sends back (zero at a
masked step, which passes dL/dh' straight to dL/dh). Slopes are taken from
the outputs: `σ'(z)`, `σ'(r)`, `φ'(hh)`.

    f_z     = (h - hh) * σ'(z)              delta_z  = g * f_z
    f_hh    = (1 - z) * φ'(hh)              delta_hh = g * f_hh
  reset_after=True:
    by_gate = [f_z, f_hh * rec_h * σ'(r), f_hh * r]      (..., 3, units)
    delta   = g * by_gate = [delta_z, delta_r, delta_rec_h]
    dL/dh   = g * z + (delta R^T) * m_h
  reset_after=False:
    d_rh    = delta_hh R_h^T                dL/d(r * h_in)
    q       = h_in * σ'(r)                  delta_r  = d_rh * q
    dL/dh   = g * z + (d_rh * r + [delta_z, delta_r] R_zr^T) * m_h

Only `dL/dh` is sequential; the rest are matmuls over all steps of a block
(`H` the states entering `R`, `X` the dropped-out inputs, `delta_x` =
dL/d(x W + b) = `[delta_z, delta_r, delta_hh]`):

    dR     = H^T delta                                  (reset_after=True)
    dR     = [H^T [delta_z, delta_r],  (r * H)^T delta_hh]   (False)
    d rb_h = sum delta_rec_h
    dW     = X^T delta_x      db = sum delta_x      dx = (delta_x W^T) * m_x

With one input mask per gate (`implementation=1`), gate `g` sees `x * m_g`:
`dW_g = (X * m_g)^T delta_g` and `dx = sum_g (delta_g W_g^T) * m_g`.

The bias gradients reach the stored `(2, 3 * units)` bias through
`split_bias` (autodiff of a slice and a sum).

With layer normalization (`layer_norm=True`; `LN` per gate over its units,
see `layer_norm`), the input projection and the recurrent projection are
normalized separately, before the biases and before the reset gate:

    x_z, x_r, x_h = LNx(x W) + b_in         (in training, a block at once)
    z      = σ(x_z + LNh_z(h R_z) + rb_z)
    r      = σ(x_r + LNh_r(h R_r) + rb_r)
    rec_h  = LNh_h(h R_h) + rb_h              (reset_after=True)
    hh     = φ(x_h + r * rec_h)               (reset_after=True)
    hh     = φ(x_h + LNh_h((r * h) R_h))      (reset_after=False)

Backward, `LNback` the normalization's backward pass (`layer_norm`:
`dv = s * (dn - mean(dn) - n * mean(dn * n))`, `dn = gamma * dy`): the
deltas above are the gradients of the normalized values; before they meet
a kernel they go back through the normalization:

  reset_after=True (`LNback_h` through the three gates' LNh):
    delta_a = LNback_h(delta)           dL/dh   = g * z + (delta_a R^T) * m_h
    dR      = H^T delta_a               dgamma_h = sum delta * n_h
  reset_after=False:
    d_rh    = LNback_hh(delta_hh) R_h^T
    dL/dh   = g * z + (d_rh * r + LNback_zr([delta_z, delta_r]) R_zr^T) * m_h
    dR      = [H^T LNback_zr([delta_z, delta_r]), (r * H)^T LNback_hh(delta_hh)]
  inputs:
    dW      = X^T LNback_x(delta_x)     dx = (LNback_x(delta_x) W^T) * m_x
    dgamma_x = sum delta_x * n_x        dbeta_x = sum delta_x   (also db)

(`n` the normalized values, `dbeta = sum delta` of the same normalization.)

A sequence multiplies by both kernels centered per gate
(`centered_for_norms`), so that the products come centered and each
normalization takes no mean; `LNback` is then the shorter form of
`layer_norm.backward` (`centered=True`), and autodiff of the centering
takes `dW`, `dR` back to the stored kernels.
"""

from collections.abc import Callable
from typing import Any
from typing import NamedTuple

import keras
from keras import activations
from keras import ops

from keras_gru_plus import layer_norm


class GRUSpec(NamedTuple):
    """What a step needs besides its tensors.

    Attributes:
        units: number of units.
        activation: the candidate's activation (a callable).
        recurrent_activation: the gates' activation (a callable).
        reset_after: the formula variant (see the module docstring).
        layer_norm: whether the projections are layer-normalized per gate.
        layer_norm_epsilon: added to the variance of each normalization.
        centered_kernels: whether the weights' kernels are centered per
            gate (`centered_for_norms`), so that the normalizations take
            no mean.
    """

    units: int
    activation: Callable
    recurrent_activation: Callable
    reset_after: bool
    layer_norm: bool = False
    layer_norm_epsilon: float = 1e-5
    centered_kernels: bool = False


class GRUWeights(NamedTuple):
    """The tensors of one call of the recurrence, read once before the loop.

    Attributes:
        kernel: `W`, `(input_dim, 3 * units)`, gates (z, r, h).
        recurrent_kernel: `R`, `(units, 3 * units)`, gates (z, r, h).
        projection_bias: `(3 * units,)` from `split_bias`, or `None`.
        candidate_bias: `rb_h` `(units,)` from `split_bias`, or `None`.
        input_masks: `None`, or a tuple of one `(batch, input_dim)` dropout
            mask shared by the gates, or three, one per gate (z, r, h).
        recurrent_masks: the same for the state, `(batch, units)` each.
        input_gamma, input_beta: the input projection's layer-norm gains
            and shifts `(3 * units,)`, gates (z, r, h), or `None`.
        recurrent_gamma, recurrent_beta: the same for the recurrent
            projection.
    """

    kernel: Any
    recurrent_kernel: Any
    projection_bias: Any = None
    candidate_bias: Any = None
    input_masks: Any = None
    recurrent_masks: Any = None
    input_gamma: Any = None
    input_beta: Any = None
    recurrent_gamma: Any = None
    recurrent_beta: Any = None


class Gates(NamedTuple):
    """The values of one step (or of many steps at once), as the backward
    pass takes them.

    Attributes:
        z, r, hh: the gates and the candidate `(..., units)`.
        rec_h: `LNh_h(h R_h) + rb_h` (`reset_after=True`), else `None`.
        stats: the statistics `(n, s)` of each recurrent normalization
            (`layer_norm.statistics`), in the order of `recurrent_norms`,
            where asked for; else empty.
    """

    z: Any
    r: Any
    hh: Any
    rec_h: Any
    stats: tuple = ()


# Activations known to act elementwise: z and r then go through one call on
# a `(batch, 2 * units)` tensor. Any other is applied to each gate apart.
ELEMENTWISE = (
    activations.tanh,
    activations.sigmoid,
    activations.hard_sigmoid,
    activations.relu,
    activations.linear,
    ops.tanh,
    ops.sigmoid,
    ops.hard_sigmoid,
    ops.relu,
)


def split_bias(bias, reset_after, units):
    """Splits the stored bias into the projection bias and `rb_h`.

    Returns:
        `(projection_bias, candidate_bias)`: the `(3 * units,)` bias added
        to the input projection (with `rb_z`, `rb_r` folded in when
        `reset_after=True`), and the `(units,)` recurrent bias of the
        candidate `rb_h`, or `None`. Both are `None` without a bias.
    """
    if bias is None:
        return None, None
    if not reset_after:
        return bias, None
    input_bias, recurrent_bias = bias[0], bias[1]
    projection_bias = ops.concatenate(
        [
            input_bias[: 2 * units] + recurrent_bias[: 2 * units],
            input_bias[2 * units :],
        ],
        axis=0,
    )
    return projection_bias, recurrent_bias[2 * units :]


def input_norm(weights, spec):
    """The `layer_norm.Norm` of the input projection (three gates), or
    `None` without layer normalization."""
    if not spec.layer_norm:
        return None
    return layer_norm.norm_of(
        weights.input_gamma,
        weights.input_beta,
        spec.layer_norm_epsilon,
        3,
        centered=spec.centered_kernels,
    )


def recurrent_norms(weights, spec):
    """The `layer_norm.Norm`s of the recurrent projection, sliced once
    before a loop, or `None`: one of three gates (`reset_after=True`: the
    fused matmul), or one of (z, r) and one of h (`reset_after=False`: two
    matmuls)."""
    if not spec.layer_norm:
        return None
    gamma, beta, eps = (
        weights.recurrent_gamma,
        weights.recurrent_beta,
        spec.layer_norm_epsilon,
    )
    kinds = dict(in_step=True, centered=spec.centered_kernels)
    if spec.reset_after:
        return (layer_norm.norm_of(gamma, beta, eps, 3, **kinds),)
    cut = 2 * spec.units
    beta_zr, beta_h = (None, None) if beta is None else (beta[:cut], beta[cut:])
    return (
        layer_norm.norm_of(gamma[:cut], beta_zr, eps, 2, **kinds),
        layer_norm.norm_of(gamma[cut:], beta_h, eps, 1, **kinds),
    )


def centered_for_norms(weights, spec):
    """`(weights, spec)` with both kernels centered per gate
    (`layer_norm.centered_columns`, once per call), where the spec
    normalizes: the products `x W` and `h R` then come centered and their
    normalizations take no mean (`spec.centered_kernels`). Gradients reach
    the stored kernels through autodiff of the centering. (Per gate of the
    fused kernel is per gate of `R_zr` and `R_h` too.) Without layer
    normalization, or centered already, both as they are."""
    if not spec.layer_norm or spec.centered_kernels:
        return weights, spec
    return weights._replace(
        kernel=layer_norm.centered_columns(weights.kernel, 3),
        recurrent_kernel=layer_norm.centered_columns(weights.recurrent_kernel, 3),
    ), spec._replace(centered_kernels=True)


def shifts_in_biases(weights, spec):
    """`weights` with the layer norms' shifts added to the biases, where the
    spec normalizes: every `beta` is added right beside a bias (see the
    equations: `LNx(x W) + b_in`, `LNh_g(h R_g) + rb_g`), so the
    projection bias takes `beta_x` and the recurrent `beta_z`, `beta_r`
    (and `beta_h` with `reset_after=False`, where `LNh_h` is added to
    `x_h`), and `rb_h` takes `beta_h` with `reset_after=True`. The norms
    then add no shift, in any step; autodiff of the sums carries the
    biases' gradients to the shifts. Without layer normalization, or with
    the shifts added already, `weights` as they are."""
    if not spec.layer_norm or weights.input_beta is None:
        return weights
    units = spec.units
    beta_h = weights.recurrent_beta
    candidate_bias = weights.candidate_bias
    shift = weights.input_beta
    if spec.reset_after:
        beta_h = weights.recurrent_beta[2 * units :]
        candidate_bias = beta_h if candidate_bias is None else candidate_bias + beta_h
        shift = shift + ops.concatenate(
            [weights.recurrent_beta[: 2 * units], ops.zeros_like(beta_h)], axis=0
        )
    else:
        shift = shift + weights.recurrent_beta
    bias = weights.projection_bias
    return weights._replace(
        projection_bias=shift if bias is None else bias + shift,
        candidate_bias=candidate_bias,
        input_beta=None,
        recurrent_beta=None,
    )


def raw_projection(inputs, kernel, units, input_masks=None):
    """`x W` of every step, packed `(..., 3 * units)`, before any
    normalization and bias (with one input mask per gate, gate g's columns
    are `(x * m_g) W_g`)."""
    if input_masks is None or len(input_masks) == 1:
        x = inputs if input_masks is None else inputs * input_masks[0]
        return x @ kernel
    return ops.concatenate(
        [
            (inputs * m) @ kernel[:, i * units : (i + 1) * units]
            for i, m in enumerate(input_masks)
        ],
        axis=-1,
    )


def project_inputs(inputs, kernel, projection_bias, units, input_masks=None, norm=None):
    """Input projection of every step, packed `(..., 3 * units)`:
    `x W + b`, or `LNx(x W) + b` with a norm.

    Args:
        inputs: `(..., input_dim)`: one step `(batch, input_dim)` or a
            time-major sequence `(time, batch, input_dim)`.
        kernel: `(input_dim, 3 * units)` input kernel, gates (z, r, h).
        projection_bias: `(3 * units,)` from `split_bias`, or `None`.
        units: number of units.
        input_masks: `None`, or a tuple of one or three
            `(batch, input_dim)` dropout masks: one shared by the gates, or
            one per gate (z, r, h).
        norm: `None`, or the `layer_norm.Norm` of `input_norm`.
    """
    projected, _ = finish_projection(
        raw_projection(inputs, kernel, units, input_masks), projection_bias, norm
    )
    return projected


def finish_projection(raw, projection_bias, norm=None):
    """`(projection, stats)` from the raw projection `x W`: `x W + b`, or
    `LNx(x W) + b` with a norm, and the normalization's statistics (`None`
    without a norm)."""
    stats = None
    if norm is not None:
        raw, stats = layer_norm.normalize(raw, norm)
    if projection_bias is not None:
        raw = raw + projection_bias
    return raw, stats


# keras.activations.tanh and .sigmoid wrap the ops of the same name (and
# sigmoid records its logits); inside the loop the ops are called directly.
_DIRECT = {activations.tanh: ops.tanh, activations.sigmoid: ops.sigmoid}


def direct(activation):
    """The op behind a Keras activation, skipping its wrapper when known."""
    return _DIRECT.get(activation, activation)


def _gates_zr(pre, units, recurrent_activation):
    if recurrent_activation in ELEMENTWISE:
        zr = recurrent_activation(pre)
        return zr[..., :units], zr[..., units:]
    return (
        recurrent_activation(pre[..., :units]),
        recurrent_activation(pre[..., units:]),
    )


def gate_values(
    h_in,
    x,
    recurrent_kernel,
    candidate_bias,
    spec,
    recurrent_masks=None,
    h_tm1=None,
    recurrent_norm=None,
    keep_stats=False,
):
    """z, r, the candidate and its recurrent term, for any leading shape.

    Args:
        h_in: the previous state entering the recurrent matmul (dropped out
            when one recurrent mask is used), `(..., units)`.
        x: packed projected inputs `(..., 3 * units)` from
            `project_inputs`, or the same split per gate `(x_z, x_r, x_h)`
            (see `policy.BackendPolicy.split_gates`).
        recurrent_kernel: `(units, 3 * units)`, gates (z, r, h), or the
            pair `(R_zr, R_h)` from `kernel_parts`.
        candidate_bias: `rb_h` `(units,)` or `None`.
        spec: the `GRUSpec` (activations, `reset_after`, layer norm).
        recurrent_masks: `None` or one mask (already applied to `h_in`),
            or three masks, one per gate, applied to `h_tm1` here.
        h_tm1: the undropped state, needed with three masks.
        recurrent_norm: `None`, or the `recurrent_norms` of the weights.
        keep_stats: whether the normalizations' statistics are returned
            (the backward pass's recompute), or only their results.

    Returns:
        The `Gates`: `rec_h` is `LNh_h(h R_h) + rb_h` (`reset_after=True`)
        or `None`.
    """
    units, reset_after = spec.units, spec.reset_after
    if spec.layer_norm and recurrent_norm is None:
        raise ValueError(
            "gate_values: the spec has layer_norm=True but no `recurrent_norm` "
            "was given; pass `recurrent_norms(weights, spec)`."
        )
    stats = [] if keep_stats else None
    activation = direct(spec.activation)
    recurrent_activation = direct(spec.recurrent_activation)
    inner, h_c, kernel_h = _recurrent_product(
        h_in, recurrent_kernel, spec, recurrent_masks, h_tm1
    )
    if recurrent_norm is not None:
        inner = _normalized(inner, recurrent_norm[0], stats)
    rec_zr = inner[..., : 2 * units]
    rec_h = inner[..., 2 * units :] if reset_after else None
    if rec_h is not None and candidate_bias is not None:
        rec_h = rec_h + candidate_bias
    if isinstance(x, (list, tuple)):
        x_z, x_r, x_h = x
        z = recurrent_activation(x_z + rec_zr[..., :units])
        r = recurrent_activation(x_r + rec_zr[..., units:])
    else:
        z, r = _gates_zr(x[..., : 2 * units] + rec_zr, units, recurrent_activation)
        x_h = x[..., 2 * units :]
    if reset_after:
        hh = activation(x_h + r * rec_h)
    else:
        # The reset gate acts before the matmul.
        rec_hh = (r * h_c) @ kernel_h
        if recurrent_norm is not None:
            rec_hh = _normalized(rec_hh, recurrent_norm[1], stats)
        hh = activation(x_h + rec_hh)
    dtype = h_in.dtype
    z, r, hh = _cast_to(z, dtype), _cast_to(r, dtype), _cast_to(hh, dtype)
    return Gates(z, r, hh, rec_h, tuple(stats or ()))


def _cast_to(v, dtype):
    """`v` in `dtype`. An activation may return another dtype than it took
    (Keras 3.15.1's `ops.tanh` returns float32 for float64 on JAX); the
    gates keep the state's, which a loop's carry of kept gates must."""
    return v if v.dtype == dtype else ops.cast(v, dtype)


def _normalized(v, norm, stats):
    """`LN(v)`; its statistics are appended to `stats` unless `None`."""
    if stats is None:
        return layer_norm.apply(v, norm)
    v, v_stats = layer_norm.normalize(v, norm)
    stats.append(v_stats)
    return v


def _recurrent_product(h_in, recurrent_kernel, spec, recurrent_masks, h_tm1):
    """`(inner, h_c, R_h)`: the recurrent matmul of the gates before the
    reset gate (z, r, and h with `reset_after=True`), the state that the
    candidate's matmul takes, and `R_h` where the candidate multiplies
    after the reset gate (`reset_after=False`), else `None`."""
    units, reset_after = spec.units, spec.reset_after
    per_gate = recurrent_masks is not None and len(recurrent_masks) == 3
    if reset_after and not per_gate:
        # One fused matmul for the three gates.
        return h_in @ recurrent_kernel, h_in, None
    if isinstance(recurrent_kernel, tuple):
        kernel_zr, kernel_h = recurrent_kernel
    else:
        kernel_zr, kernel_h = kernel_parts(recurrent_kernel, False)
    if per_gate:
        # One mask per gate (`implementation=1`): no fused matmul.
        h_z, h_r, h_c = (h_tm1 * m for m in recurrent_masks)
        inner = ops.concatenate(
            [h_z @ kernel_zr[:, :units], h_r @ kernel_zr[:, units:]]
            + ([h_c @ kernel_h] if reset_after else []),
            axis=-1,
        )
    else:
        inner, h_c = h_in @ kernel_zr, h_in
    return inner, h_c, (None if reset_after else kernel_h)


def gru_step(
    h_tm1,
    x,
    recurrent_kernel,
    candidate_bias,
    spec,
    recurrent_masks=None,
    recurrent_norm=None,
    exact_hold=False,
):
    """One GRU step from the projected inputs `x` `(batch, 3 * units)` (or
    split per gate), as `gate_values` takes them.

    Recurrent dropout masks multiply the state entering the recurrent
    matmul only; the interpolation uses the undropped `h_tm1`, as in Keras.

    With `exact_hold`, the mix is written `z * h + (1 - z) * hh`, which
    gives `h` exactly where `z == 1` (the masked steps of `held_by_gate`);
    the one-product form is off by a rounding of `hh` there.

    Returns:
        The new state `h`, `(batch, units)`.
    """
    h_in = h_tm1
    if recurrent_masks is not None and len(recurrent_masks) == 1:
        h_in = h_tm1 * recurrent_masks[0]
    gates = gate_values(
        h_in,
        x,
        recurrent_kernel,
        candidate_bias,
        spec,
        recurrent_masks,
        h_tm1,
        recurrent_norm,
    )
    # Previous state and candidate mixed by the update gate:
    # z * h + (1 - z) * hh, written with one product unless exact_hold.
    if exact_hold:
        return gates.z * h_tm1 + (1 - gates.z) * gates.hh
    return gates.hh + gates.z * (h_tm1 - gates.hh)


# Update-gate activations with values in [0, 1] that reach exactly 1 at
# +inf, so that an update gate given an infinite pre-activation is 1
# (`held_by_gate`) and the state stays bounded by the candidates' bound ...
SATURATE_AT_ONE = (
    activations.sigmoid,
    activations.hard_sigmoid,
    ops.sigmoid,
    ops.hard_sigmoid,
)
# ... and bounded candidate activations, so that the candidate of a held
# step, multiplied by `1 - z == 0`, adds exactly nothing (an unbounded one,
# relu or linear, can grow the state until `h R` overflows).
BOUNDED = (
    activations.tanh,
    activations.sigmoid,
    activations.hard_sigmoid,
    activations.softsign,
    ops.tanh,
    ops.sigmoid,
    ops.hard_sigmoid,
    ops.softsign,
)


def gate_can_hold(activation, recurrent_activation, dtype):
    """Whether masked steps can hold the state through the update gate
    (`held_by_gate`): the recurrent activation saturates at exactly 1, the
    activation is bounded, and the compute dtype is not float16.

    A held step still computes `h R` (and the candidate) before `1 - z == 0`
    discards it; where that overflows to inf the product is NaN, where the
    select of the other loops keeps `h`. With bounded candidates the state
    stays within their bound (or the initial state's), whose products
    overflow float32 and bfloat16 only for states near 1e36, float16's at
    65504 already: float16 keeps the select.
    """
    return (
        recurrent_activation in SATURATE_AT_ONE
        and activation in BOUNDED
        and keras.backend.standardize_dtype(dtype) != "float16"
    )


def held_by_gate(arrays, keep, units):
    """The projected inputs with masked steps set to hold the state.

    Where `keep` is False, the update gate's pre-activation becomes `+inf`
    and the other gates' inputs 0: `z = recurrent_activation(inf) = 1`, the
    candidate is finite (whatever the step's inputs held, NaN included), and
    `gru_step(..., exact_hold=True)` returns the previous state exactly.
    So a loop needs no select on the state, which sits on the chain of
    steps; this select works on inputs, off that chain (vectorized over the
    sequence, or run ahead by the loop).

    Args:
        arrays: a tuple: one packed `(..., 3 * units)` array, or three per
            gate `(x_z, x_r, x_h)`.
        keep: booleans `(..., 1)`, broadcast over the units.
        units: the layer's units.
    """
    if len(arrays) == 3:
        x_z, x_r, x_h = arrays
        return (
            ops.where(keep, x_z, float("inf")),
            ops.where(keep, x_r, 0),
            ops.where(keep, x_h, 0),
        )
    (x,) = arrays
    held = ops.concatenate(
        [ops.full((units,), float("inf"), x.dtype), ops.zeros((2 * units,), x.dtype)]
    )
    return (ops.where(keep, x, held),)


def kernel_parts(recurrent_kernel, reset_after):
    """The recurrent kernel as a loop's steps use it, sliced once.

    With `reset_after=False` a step multiplies the state by `R_zr` (the z
    and r columns) and, after the reset gate, by `R_h`: the pair
    `(R_zr, R_h)` is sliced before the loop rather than in every step
    (on XLA:CPU a step that slices the kernel measured 11% slower). With
    `reset_after=True` the whole fused kernel is used as it is.
    """
    if reset_after:
        return recurrent_kernel
    units = recurrent_kernel.shape[0]
    return (recurrent_kernel[:, : 2 * units], recurrent_kernel[:, 2 * units :])


def projected_arrays(x, weights, spec, split):
    """`x` projected (`project_inputs` with the kernel, projection bias,
    input masks and input norm of `weights`), as the loops take it: one
    packed array, or three per gate with `split`. Returns a tuple."""
    projected = project_inputs(
        x,
        weights.kernel,
        weights.projection_bias,
        spec.units,
        weights.input_masks,
        input_norm(weights, spec),
    )
    return split_gates(projected, spec.units) if split else (projected,)


def split_gates(x, units):
    """`(..., 3 * units)` -> `(x_z, x_r, x_h)`."""
    return (x[..., :units], x[..., units : 2 * units], x[..., 2 * units :])
