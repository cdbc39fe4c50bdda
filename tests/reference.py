"""A float64 NumPy GRU written from the documented equations.

Independent of the package: no keras, no code shared with keras_gru_plus.
Gates are ordered (z, r, h) in every fused weight.

With `layer_norm` (issue 13) each gate's input projection and recurrent
projection is layer-normalized over its `units` values before the biases:
`LN(v) = gamma * (v - mean(v)) / sqrt(var(v) + epsilon) + beta` (population
variance), `gamma` and `beta` sliced per gate from `(3 * units,)` vectors.
"""

import numpy as np


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _hard_sigmoid(x):
    # Keras 3: relu6(x + 3) / 6.
    return np.clip(x + 3.0, 0.0, 6.0) / 6.0


ACTIVATIONS = {
    "tanh": np.tanh,
    "sigmoid": _sigmoid,
    "hard_sigmoid": _hard_sigmoid,
    "relu": lambda x: np.maximum(x, 0.0),
    "linear": lambda x: x,
    "elu": lambda x: np.where(x > 0, x, np.expm1(np.minimum(x, 0.0))),
    "softsign": lambda x: x / (1.0 + np.abs(x)),
    None: lambda x: x,
}


def _per_gate(mask):
    """A dropout mask shared by the gates, or a tuple of one per gate."""
    if isinstance(mask, (list, tuple)):
        return tuple(np.asarray(m, np.float64) for m in mask)
    return (mask, mask, mask)


def _apply(value, mask):
    return value if mask is None else value * np.asarray(mask, np.float64)


LAYER_NORM_FIELDS = (
    "input_gamma",
    "input_beta",
    "recurrent_gamma",
    "recurrent_beta",
    "epsilon",
)


def _layer_norm_params(layer_norm):
    """A dict of `LAYER_NORM_FIELDS` from a dict or a tuple in that order."""
    if isinstance(layer_norm, dict):
        params = {name: layer_norm[name] for name in LAYER_NORM_FIELDS}
    else:
        params = dict(zip(LAYER_NORM_FIELDS, layer_norm, strict=True))
    for name in LAYER_NORM_FIELDS[:4]:
        params[name] = np.asarray(params[name], np.float64)
    params["epsilon"] = float(params["epsilon"])
    return params


def normalize(v, gamma, beta, epsilon):
    """Normalizes `v` over its last axis (population variance, epsilon
    inside the square root), then scales by `gamma` and shifts by `beta`."""
    v = np.asarray(v, np.float64)
    mean = np.mean(v, axis=-1, keepdims=True)
    var = np.mean((v - mean) ** 2, axis=-1, keepdims=True)
    return gamma * (v - mean) / np.sqrt(var + epsilon) + beta


def _identity(gate, v):
    return v


def _gate_norms(layer_norm_params, u):
    """Two functions `(gate, v) -> LN(v)` for the input and the recurrent
    projections (`gate` 0, 1, 2 for z, r, h), identities without
    `layer_norm_params`."""
    if layer_norm_params is None:
        return _identity, _identity
    p = _layer_norm_params(layer_norm_params)

    def norm(gamma, beta):
        def apply(gate, v):
            part = slice(gate * u, (gate + 1) * u)
            return normalize(v, gamma[part], beta[part], p["epsilon"])

        return apply

    return (
        norm(p["input_gamma"], p["input_beta"]),
        norm(p["recurrent_gamma"], p["recurrent_beta"]),
    )


def gru_step(
    x,
    h,
    kernel,
    recurrent_kernel,
    bias,
    reset_after,
    activation="tanh",
    recurrent_activation="sigmoid",
    input_mask=None,
    recurrent_mask=None,
    layer_norm=None,
):
    """One step: x (batch, features), h (batch, units) -> new h.

    Dropout masks multiply the inputs of the projections (one mask for all
    gates, or a tuple (z, r, h)); the interpolation uses the undropped h.

    `layer_norm`: `None` (no normalization), or a dict (or a tuple in this
    order) of `input_gamma`, `input_beta`, `recurrent_gamma`,
    `recurrent_beta` (each `(3 * units,)`) and `epsilon`:

        z  = rec_act(LNx_z(x W_z) + b_z + LNh_z(h R_z) + rb_z)
        r  = rec_act(LNx_r(x W_r) + b_r + LNh_r(h R_r) + rb_r)
        hh = act(LNx_h(x W_h) + b_h + r * (LNh_h(h R_h) + rb_h))  # reset_after
        hh = act(LNx_h(x W_h) + b_h + LNh_h((r * h) R_h))  # reset_after=False

    (LNx with the input gamma and beta, LNh with the recurrent ones, each
    sliced per gate; dropout masks multiply x and h before the matmuls.)
    """
    act = ACTIVATIONS[activation]
    rec_act = ACTIVATIONS[recurrent_activation]
    u = h.shape[-1]
    W = np.asarray(kernel, np.float64)
    R = np.asarray(recurrent_kernel, np.float64)
    if bias is None:
        b_in = np.zeros(3 * u)
        b_rec = np.zeros(3 * u)
    elif reset_after:
        b_in, b_rec = np.asarray(bias, np.float64)
    else:
        b_in, b_rec = np.asarray(bias, np.float64), np.zeros(3 * u)
    nx, nh = _gate_norms(layer_norm, u)
    mx = _per_gate(input_mask)
    mh = _per_gate(recurrent_mask)
    xz = nx(0, _apply(x, mx[0]) @ W[:, :u]) + b_in[:u]
    xr = nx(1, _apply(x, mx[1]) @ W[:, u : 2 * u]) + b_in[u : 2 * u]
    xh = nx(2, _apply(x, mx[2]) @ W[:, 2 * u :]) + b_in[2 * u :]
    hz, hr, hh_in = (_apply(h, m) for m in mh)
    z = rec_act(xz + nh(0, hz @ R[:, :u]) + b_rec[:u])
    r = rec_act(xr + nh(1, hr @ R[:, u : 2 * u]) + b_rec[u : 2 * u])
    if reset_after:
        hh = act(xh + r * (nh(2, hh_in @ R[:, 2 * u :]) + b_rec[2 * u :]))
    else:
        hh = act(xh + nh(2, (r * hh_in) @ R[:, 2 * u :]))
    return z * h + (1.0 - z) * hh


def gru_sequence(
    x,
    kernel,
    recurrent_kernel,
    bias,
    *,
    reset_after=True,
    activation="tanh",
    recurrent_activation="sigmoid",
    mask=None,
    initial_state=None,
    go_backwards=False,
    zero_output_for_mask=False,
    input_mask=None,
    recurrent_mask=None,
    layer_norm=None,
):
    """A whole layer call on batch-major x (batch, time, features).

    Returns `(outputs, last_output, final_state)`; `outputs` is in the
    order the steps were taken (reversed with `go_backwards`), as in Keras.
    A masked step keeps the state; its output is zeros with
    `zero_output_for_mask`, else the previous output (zeros before the
    first step). `layer_norm`: as in `gru_step`.
    """
    x = np.asarray(x, np.float64)
    batch, time, _ = x.shape
    units = np.asarray(recurrent_kernel).shape[0]
    h = (
        np.zeros((batch, units))
        if initial_state is None
        else np.asarray(initial_state, np.float64)
    )
    m = np.ones((batch, time), bool) if mask is None else np.asarray(mask, bool)
    order = range(time - 1, -1, -1) if go_backwards else range(time)
    prev_out = np.zeros((batch, units))
    outputs = []
    for t in order:
        h_new = gru_step(
            x[:, t],
            h,
            kernel,
            recurrent_kernel,
            bias,
            reset_after,
            activation,
            recurrent_activation,
            input_mask,
            recurrent_mask,
            layer_norm,
        )
        mt = m[:, t][:, None]
        h = np.where(mt, h_new, h)
        fill = np.zeros_like(h_new) if zero_output_for_mask else prev_out
        out = np.where(mt, h_new, fill)
        outputs.append(out)
        prev_out = out
    outputs = np.stack(outputs, axis=1)
    return outputs, outputs[:, -1], h
