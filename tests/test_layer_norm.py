"""The layer-normalized GRU (issue 13): `layer_norm=True`.

Each gate's input projection and recurrent projection is normalized over
its `units` values (population variance, epsilon inside the square root)
with its own gain and shift, before the biases; see `tests/reference.py`.
Expected numbers come only from that float64 NumPy reference (or from the
layer's own float64 forward pass, for its finite differences), never from
values the layer printed.
"""

import math
import os

import keras
import numpy as np
import pytest

import keras_gru_plus
from keras_gru_plus import interop
from tests import reference
from tests.helpers import BACKEND
from tests.helpers import as_list
from tests.helpers import assert_covers_pairs
from tests.helpers import float64
from tests.helpers import pairwise_cases
from tests.helpers import run_under_backend
from tests.helpers import to_numpy

B, T, F, U = 2, 5, 3, 3
# Gaps: row 0 skips steps 1 and 4 (its last step), row 1 steps 0 (its first
# step) and 3.
MASK = np.array([[1, 0, 1, 1, 0], [0, 1, 1, 0, 1]], bool)
NORM_NAMES = [
    "input_norm_gamma",
    "input_norm_beta",
    "recurrent_norm_gamma",
    "recurrent_norm_beta",
]
NEW_ARGUMENTS = (
    "layer_norm",
    "layer_norm_epsilon",
    "gamma_initializer",
    "beta_initializer",
    "gamma_regularizer",
    "beta_regularizer",
    "gamma_constraint",
    "beta_constraint",
)


def _names(use_bias=True):
    return ["kernel", "recurrent_kernel"] + ["bias"] * use_bias + NORM_NAMES


def _randomize(layer, seed=0):
    """Random values for every trainable weight of a built layer, by name:
    kernels and biases N(0, 0.5), gains 1 + 0.3 N(0, 1), shifts N(0, 0.5),
    so that neither the gains nor the shifts can be mistaken for the
    identity. Returns `{name: float32 array}`."""
    rng = np.random.default_rng(seed)
    values = {}
    for v in layer.trainable_weights:
        shape = tuple(v.shape)
        if v.name.endswith("gamma"):
            value = 1.0 + 0.3 * rng.normal(size=shape)
        else:
            value = rng.normal(scale=0.5, size=shape)
        # float32 values (float64 variables hold them exactly).
        values[v.name] = value.astype("float32")
        v.assign(values[v.name].astype(keras.backend.standardize_dtype(v.dtype)))
    return values


def _norms(weights, epsilon=1e-5):
    """The reference's `layer_norm` argument from named weights."""
    return dict(
        input_gamma=weights["input_norm_gamma"],
        input_beta=weights["input_norm_beta"],
        recurrent_gamma=weights["recurrent_norm_gamma"],
        recurrent_beta=weights["recurrent_norm_beta"],
        epsilon=epsilon,
    )


def _reference(weights, x, epsilon=1e-5, **kwargs):
    """`reference.gru_sequence` with layer normalization, from named
    weights: `(outputs, last_output, final_state)`."""
    return reference.gru_sequence(
        x,
        weights["kernel"],
        weights["recurrent_kernel"],
        weights.get("bias"),
        layer_norm=_norms(weights, epsilon),
        **kwargs,
    )


def _loss(outputs, probe_values):
    """`sum_i sum(output_i * probe_i)`, in float32 for float16 outputs."""
    total = 0.0
    for o, p in zip(outputs, probe_values):
        if keras.backend.standardize_dtype(o.dtype) in ("float16", "bfloat16"):
            o = keras.ops.cast(o, "float32")
        total = total + keras.ops.sum(o * keras.ops.convert_to_tensor(p, o.dtype))
    return total


def _outputs_and_gradients(layer, x, h0, call, probe_values):
    """Outputs and the gradients of `sum_i sum(output_i * probe_i)` with
    respect to the inputs, the initial state `h0` (None when `h0` is None)
    and the trainable weights (in `layer.trainable_variables` order), by
    each backend's own autodiff: `tests.helpers.outputs_and_gradients`,
    with the initial state, and mixed precision."""
    if BACKEND == "jax":
        import jax

        trainable = [v.value for v in layer.trainable_variables]
        non_trainable = [v.value for v in layer.non_trainable_variables]

        def f(tv, xv, hv):
            # `__call__` in a stateless scope, as Keras' JAX trainer runs a
            # layer (`stateless_call` skips the autocasting and the input
            # casting of mixed precision).
            kwargs = dict(call) if hv is None else dict(call, initial_state=hv)
            mapping = list(zip(layer.trainable_variables, tv)) + list(
                zip(layer.non_trainable_variables, non_trainable)
            )
            with keras.StatelessScope(state_mapping=mapping):
                outs = as_list(layer(xv, **kwargs))
            return _loss(outs, probe_values), outs

        hv = None if h0 is None else jax.numpy.asarray(h0)
        # Compiled whole: one XLA program compiles faster than the eager
        # ops one by one (a float64 case 4 s against 9 s).
        gradient = jax.jit(jax.value_and_grad(f, argnums=(0, 1, 2), has_aux=True))
        (_, outs), (g_w, g_x, g_h) = gradient(trainable, jax.numpy.asarray(x), hv)
        g_h = None if h0 is None else to_numpy(g_h)
        outs = [to_numpy(o) for o in outs]
        return outs, to_numpy(g_x), g_h, [to_numpy(g) for g in g_w]
    if BACKEND == "tensorflow":
        import tensorflow as tf

        xv = tf.convert_to_tensor(x)
        hv = None if h0 is None else tf.convert_to_tensor(h0)
        kwargs = dict(call) if hv is None else dict(call, initial_state=hv)
        with tf.GradientTape() as tape:
            tape.watch(xv)
            if hv is not None:
                tape.watch(hv)
            outs = as_list(layer(xv, **kwargs))
            loss = _loss(outs, probe_values)
        sources = [xv] + ([] if hv is None else [hv])
        grads = tape.gradient(loss, sources + list(layer.trainable_variables))
        g_h = None if hv is None else to_numpy(grads[1])
        return (
            [to_numpy(o) for o in outs],
            to_numpy(grads[0]),
            g_h,
            [to_numpy(g) for g in grads[len(sources) :]],
        )
    if BACKEND == "torch":
        import torch

        xv = torch.tensor(x, requires_grad=True)
        hv = None if h0 is None else torch.tensor(h0, requires_grad=True)
        kwargs = dict(call) if hv is None else dict(call, initial_state=hv)
        for v in layer.trainable_variables:
            v.value.grad = None
        outs = as_list(layer(xv, **kwargs))
        _loss(outs, probe_values).backward()
        return (
            [to_numpy(o.detach()) for o in outs],
            to_numpy(xv.grad),
            None if hv is None else to_numpy(hv.grad),
            [to_numpy(v.value.grad) for v in layer.trainable_variables],
        )
    raise NotImplementedError(BACKEND)


def _prepare_masks(layer, x, case):
    """Fixed dropout masks for the next training call (one, or one per gate
    with implementation=1), drawn before it as `test_gradients.py` does;
    `(input_mask, recurrent_mask)` for the reference, None where none
    applies."""
    if not case["training"]:
        return None, None
    count = layer.cell.dropout_mask_count

    def numpy_masks(masks):
        return to_numpy(masks) if count == 1 else tuple(to_numpy(m) for m in masks)

    in_mask = rec_mask = None
    if case["dropout"]:
        in_mask = numpy_masks(
            layer.get_dropout_mask_for_cell(x, training=True, count=count)
        )
    if case["recurrent_dropout"]:
        rec_mask = numpy_masks(
            layer.get_recurrent_dropout_mask_for_cell(x, training=True, count=count)
        )
    return in_mask, rec_mask


# The covering design of the layer-normalized layer: every value of every
# argument, and every pair of values of any two, forward and gradients.
GRID = {
    "reset_after": [True, False],
    "use_bias": [True, False],
    "mask": [False, True],
    "zero_output_for_mask": [False, True],
    "dropout": [0.0, 0.5],
    "recurrent_dropout": [0.0, 0.5],
    "implementation": [2, 1],
    "go_backwards": [False, True],
    "unroll": [False, True],
    "stateful": [False, True],
    "initial_state": [False, True],
    "return_sequences": [True, False],
    # The engine's blocks of 2 steps (2 blocks and a 1-step block): those
    # of long sequences, those of shorter ones (PyTorch, TensorFlow; JAX
    # takes none, policy: short_block_steps is None), and those of
    # layer-normalized training (JAX, PyTorch; TensorFlow takes none,
    # policy: norm_block_steps is None).
    "blocks": [None, "long", "short", "norm"],
    "epsilon": [1e-5, 1e-3],
    # Training selects the hand-written backward pass and dropout.
    "training": [True, False],
}
CASES = pairwise_cases(GRID, seed=20)
# Pairs do not promise every triple: trained dropout in the blocks of the
# hand-written backward pass (one input mask per gate, implementation=1;
# the recurrent mask; both), and recurrent dropout with one mask per gate,
# which autodiff trains. A case is added for each the design lacks.
for _partial in [
    dict(dropout=0.5, implementation=1, blocks="long"),
    dict(
        recurrent_dropout=0.5,
        implementation=2,
        blocks="long",
        mask=True,
        reset_after=False,
    ),
    dict(
        dropout=0.5,
        recurrent_dropout=0.5,
        implementation=2,
        blocks="short",
        go_backwards=True,
    ),
    dict(recurrent_dropout=0.5, implementation=1),
]:
    _partial = dict(_partial, training=True, unroll=False)
    if not any(all(c[k] == v for k, v in _partial.items()) for c in CASES):
        CASES.append(dict(CASES[0], **_partial))


def _recurrent_mask_count(case):
    if not case["training"] or not case["recurrent_dropout"]:
        return 0
    return 3 if case["implementation"] == 1 else 1


def _expected_runners(case):
    """The runners `policy.plan` may choose for the case's calls (either
    inference loop, the backend's choice, for inference)."""
    if case["unroll"]:
        return [{"unrolled"}]
    if not case["training"]:
        return [{"inference"}, {"step_projection"}]
    return [{"bptt"}] if _recurrent_mask_count(case) <= 1 else [{"autodiff"}]


def _expected_block(case):
    """The block size the hand-written backward pass must take."""
    if case["blocks"] == "long" or (case["blocks"] == "short" and BACKEND != "jax"):
        return 2
    if case["blocks"] == "norm" and BACKEND != "tensorflow":
        return 2
    return None


def test_grid_covers_every_pair():
    """The covering design really covers each pair of argument values, in
    far fewer cases than the product."""
    assert_covers_pairs(GRID, CASES)


@pytest.mark.parametrize("case", CASES, ids=[f"case{i}" for i in range(len(CASES))])
def test_layer_norm_grid_forward_and_gradients(case, resize, plans):
    """Outputs against the reference, and the gradients of every weight
    (kernel, recurrent kernel, bias, the four norm weights), of the inputs
    and of the initial state against float64 central finite differences of
    the reference; training calls run the hand-written backward pass
    (`"bptt"`, in blocks where asked) wherever it applies. A stateful layer
    called twice more continues its state from the first of those calls."""
    if case["blocks"] == "long":
        resize(block_steps=2)
    elif case["blocks"] == "short":
        resize(short_block_steps=2)
    elif case["blocks"] == "norm":
        resize(norm_block_steps=2)
    rng = np.random.default_rng(1)
    layer = keras_gru_plus.GRU(
        U,
        layer_norm=True,
        layer_norm_epsilon=case["epsilon"],
        reset_after=case["reset_after"],
        use_bias=case["use_bias"],
        dropout=case["dropout"],
        recurrent_dropout=case["recurrent_dropout"],
        implementation=case["implementation"],
        go_backwards=case["go_backwards"],
        zero_output_for_mask=case["zero_output_for_mask"],
        unroll=case["unroll"],
        stateful=case["stateful"],
        return_sequences=case["return_sequences"],
        return_state=True,
        seed=3,
    )
    x = rng.normal(size=(B, T, F)).astype("float32")
    layer.build(x.shape)
    assert [v.name for v in layer.trainable_variables] == _names(case["use_bias"])
    weights = _randomize(layer, seed=2)
    mask = MASK if case["mask"] else None
    h0 = rng.normal(size=(B, U)).astype("float32") if case["initial_state"] else None
    in_mask, rec_mask = _prepare_masks(layer, x, case)
    call = {"mask": mask, "training": case["training"]}
    out_shape = (B, T, U) if case["return_sequences"] else (B, U)
    probe = [rng.normal(size=out_shape), rng.normal(size=(B, U))]
    probe = [p.astype("float32") for p in probe]
    outs, dx, dh0, dw = _outputs_and_gradients(layer, x, h0, call, probe)

    names = _names(case["use_bias"])
    reference_kwargs = dict(
        reset_after=case["reset_after"],
        mask=mask,
        go_backwards=case["go_backwards"],
        zero_output_for_mask=case["zero_output_for_mask"],
        input_mask=in_mask,
        recurrent_mask=rec_mask,
    )

    def run(arrays):
        """Reference outputs `[output, state]` from `[x, h0?, weights...]`."""
        x_, rest = arrays[0], arrays[1:]
        h0_ = None
        if h0 is not None:
            h0_, rest = rest[0], rest[1:]
        sequences, last, state = _reference(
            dict(zip(names, rest)),
            x_,
            epsilon=case["epsilon"],
            initial_state=h0_,
            **reference_kwargs,
        )
        return [sequences if case["return_sequences"] else last, state]

    arrays = [x] + ([] if h0 is None else [h0]) + [weights[n] for n in names]
    arrays = [a.astype(np.float64) for a in arrays]
    expected = run(arrays)
    for got, want in zip(outs, expected):
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)

    numeric = _central_differences(
        lambda a: float(sum(np.sum(o * p) for o, p in zip(run(a), probe))), arrays
    )
    analytic = [dx] + ([] if h0 is None else [dh0]) + dw
    labels = ["inputs"] + ([] if h0 is None else ["initial_state"]) + names
    for label, got, want in zip(labels, analytic, numeric):
        np.testing.assert_allclose(
            got, want, atol=2e-4, rtol=2e-4, err_msg=f"d/d{label}"
        )

    # The plans of the calls: the hand-written backward pass where it
    # applies (trained, one recurrent dropout mask at most, known
    # activations, not unrolled), in the blocks asked for.
    runners = {p.runner for p in plans}
    assert runners in _expected_runners(case), plans
    if "bptt" in runners:
        assert {p.block for p in plans} == {_expected_block(case)}, plans

    if case["stateful"]:
        # Two consecutive calls: the second starts from the first's final
        # state (and the first from h0, or zeros after the reset).
        layer.reset_state()
        masks1 = _prepare_masks(layer, x, case)
        first = as_list(layer(x, initial_state=h0, **call))
        masks2 = _prepare_masks(layer, x, case)
        second = as_list(layer(x, **call))
        state = None if h0 is None else h0.astype(np.float64)
        for got_call, (in_m, rec_m) in zip([first, second], [masks1, masks2]):
            seq, last, state = _reference(
                weights,
                x,
                epsilon=case["epsilon"],
                initial_state=state,
                **dict(reference_kwargs, input_mask=in_m, recurrent_mask=rec_m),
            )
            want = [seq if case["return_sequences"] else last, state]
            for got, w in zip(got_call, want):
                np.testing.assert_allclose(to_numpy(got), w, atol=1e-5, rtol=1e-5)


def _central_differences(f, arrays, eps=1e-6):
    """d f / d each array of `arrays` (float64), by central differences."""
    grads = []
    for k, array in enumerate(arrays):
        grad = np.zeros_like(array)
        for i in np.ndindex(array.shape):
            shifted = [a.copy() for a in arrays]
            shifted[k][i] = array[i] + eps
            up = f(shifted)
            shifted[k][i] = array[i] - eps
            grad[i] = (up - f(shifted)) / (2 * eps)
        grads.append(grad)
    return grads


def _probed_reference(names, reset_after, probe):
    """The loss of the float64 reference over `MASK` from `[x, h0,
    *weights]` (weights in the order of `names`): the sum of its sequences
    times `probe[0]`, plus its last state times `probe[1]` if given."""

    def reference_loss(arrays):
        sequences, _, state = _reference(
            dict(zip(names, arrays[2:])),
            arrays[0],
            reset_after=reset_after,
            mask=MASK,
            initial_state=arrays[1],
        )
        return float(sum(np.sum(o * p) for o, p in zip([sequences, state], probe)))

    return reference_loss


@pytest.mark.parametrize("kept", [False, True])
def test_gradients_in_float64_match_central_differences(kept, resize, plans):
    """The layer in float64 on the current backend (JAX with its 64-bit
    types on), `reset_after=False`, masked, from an initial state, trained
    (the hand-written backward pass in blocks of 2 steps): its directional
    derivatives along one random direction per array (inputs, initial
    state, each weight) against float64 central differences of the
    reference and, where its forward pass is float64-accurate (within
    1e-12 of the reference), of that forward pass, to 1e-7. Where it is
    not, it is held to 2e-4 as in `test_gradients.py`: Keras 3.15.1
    computes `ops.mean` of float64 arrays in float32 on JAX and PyTorch
    (`dtypes.result_type("float64", "float32")` is "float32"), and
    `ops.tanh` on JAX. A wrong entry anywhere in an array moves its
    directional derivative. With `kept`, the blocks of 2 steps are those
    of shorter sequences (or of layer-normalized training), whose forward
    pass keeps its gates: in float64, where Keras' JAX `ops.tanh` returns
    float32, a loop of blocks carried them in another dtype (TypeError)."""
    if kept:
        resize(short_block_steps=2, norm_block_steps=2)
    else:
        resize(block_steps=2)
    reset_after = False
    rng = np.random.default_rng(5)
    with float64():
        layer = keras_gru_plus.GRU(
            2,
            layer_norm=True,
            reset_after=reset_after,
            return_sequences=True,
            return_state=True,
            dtype="float64",
        )
        x = rng.normal(size=(2, 5, 3))
        layer.build(x.shape)
        assert layer.cell.kernel.dtype == "float64"
        weights = _randomize(layer, seed=6)
        names = _names()
        h0 = rng.normal(size=(2, 2))
        call = {"mask": MASK, "training": True}
        probe = [rng.normal(size=(2, 5, 2)), rng.normal(size=(2, 2))]
        outs, dx, dh0, dw = _outputs_and_gradients(layer, x, h0, call, probe)
        assert outs[0].dtype == np.float64
        sequences, _, state = _reference(
            weights, x, reset_after=reset_after, mask=MASK, initial_state=h0
        )
        error = max(np.abs(outs[0] - sequences).max(), np.abs(outs[1] - state).max())
        assert error < 1e-5
        exact = error < 1e-12
        tolerance = dict(rtol=1e-7, atol=1e-9) if exact else dict(rtol=2e-4, atol=2e-4)
        base = [x, h0] + [weights[n].astype(np.float64) for n in names]
        analytic = [dx, dh0] + dw
        directions = [rng.normal(size=a.shape) for a in base]

        reference_loss = _probed_reference(names, reset_after, probe)

        def layer_loss(arrays):
            for v, a in zip(layer.trainable_weights, arrays[2:]):
                v.assign(a)
            outputs = as_list(
                layer(arrays[0], initial_state=arrays[1], mask=MASK, training=True)
            )
            return sum(float(np.sum(to_numpy(o) * p)) for o, p in zip(outputs, probe))

        losses = [reference_loss] + ([layer_loss] if exact else [])
        labels = ["inputs", "initial_state"] + names
        for k, (label, direction) in enumerate(zip(labels, directions)):
            up = [a + 1e-6 * direction if i == k else a for i, a in enumerate(base)]
            down = [a - 1e-6 * direction if i == k else a for i, a in enumerate(base)]
            got = float(np.sum(analytic[k] * direction))
            for loss in losses:
                numeric = (loss(up) - loss(down)) / 2e-6
                np.testing.assert_allclose(
                    got, numeric, **tolerance, err_msg=f"{label} ({loss.__name__})"
                )
    bptt = [p for p in plans if p.runner == "bptt"]
    assert bptt and {(p.block, p.keep_gates) for p in bptt} == {(2, kept)}, bptt


@pytest.mark.parametrize(
    "layout", ["blocks", "step_inputs kept", "step_inputs recomputed"]
)
@pytest.mark.parametrize("keep_deltas", [True, False])
@pytest.mark.parametrize("reset_after", [True, False])
def test_kept_gates_statistics_and_deltas_match_central_differences(
    reset_after, keep_deltas, layout, plans
):
    """The training pass that keeps the forward gates and the input side's
    statistics, with the reverse steps' normalized gradients kept or
    recomputed (the policy's `keep_norm_deltas`, which differs by backend),
    in blocks of 2 steps (a 1-step block last); or in one block of Python
    loops whose steps project their own inputs, the gates kept one array
    per step or recomputed step by step (`step_inputs`, PyTorch's under
    `torch.compile`); masked, from an initial state: every gradient against
    float64 central differences of the reference."""
    from keras_gru_plus import policy

    rng = np.random.default_rng(7)
    layer = keras_gru_plus.GRU(
        3, layer_norm=True, reset_after=reset_after, return_sequences=True
    )
    x = rng.normal(size=(2, 5, 4)).astype("float32")
    layer.build(x.shape)
    weights = _randomize(layer, seed=8)
    names = _names()
    h0 = rng.normal(size=(2, 3)).astype("float32")
    probe = [rng.normal(size=(2, 5, 3)).astype("float32")]
    kept = layout != "step_inputs recomputed"
    fields = dict(short_block_steps=2)
    if layout != "blocks":
        fields = dict(short_block_steps=None, step_inputs=True, python_loops=True)
    with policy.override(
        norm_block_steps=None,
        keep_gates=kept,
        keep_norm_deltas=keep_deltas,
        **fields,
    ):
        _, dx, dh0, dw = _outputs_and_gradients(
            layer, x, h0, {"mask": MASK, "training": True}, probe
        )

    arrays = [x, h0] + [weights[n] for n in names]
    loss = _probed_reference(names, reset_after, probe)
    numeric = _central_differences(loss, [a.astype(np.float64) for a in arrays])
    for label, got, want in zip(
        ["inputs", "initial_state"] + names, [dx, dh0] + dw, numeric
    ):
        np.testing.assert_allclose(got, want, atol=2e-4, rtol=2e-4, err_msg=label)
    bptt = [p for p in plans if p.runner == "bptt"]
    # The steps that project their own inputs keep no normalized deltas.
    expected = (2, True, False, keep_deltas)
    if layout != "blocks":
        expected = (None, kept, True, False)
    assert bptt and all(
        (p.block, p.keep_gates, p.step_inputs, p.keep_deltas) == expected for p in bptt
    ), bptt


# Configuration, weights, saving.


def test_default_layer_has_no_layer_norm():
    """`layer_norm=False` (the default): three weights, and a config with
    none of the new keys, which `keras.layers.GRU` still loads."""
    layer = keras_gru_plus.GRU(U)
    layer.build((B, T, F))
    assert [w.name for w in layer.weights] == ["kernel", "recurrent_kernel", "bias"]
    assert len(layer.get_weights()) == 3
    config = layer.get_config()
    assert not set(NEW_ARGUMENTS) & set(config), sorted(config)
    builtin = keras.layers.GRU.from_config(config)
    assert builtin.units == U
    cell_config = keras_gru_plus.GRUCell(U).get_config()
    assert not set(NEW_ARGUMENTS) & set(cell_config), sorted(cell_config)


@pytest.mark.parametrize("reset_after", [True, False])
@pytest.mark.parametrize("use_bias", [True, False])
def test_weights_order_shapes_and_initial_values(use_bias, reset_after):
    """After kernel, recurrent kernel and bias (with `use_bias`), the four
    norm weights `(3 * units,)` in order; gains start at ones and shifts at
    zeros (the default initializers)."""
    layer = keras_gru_plus.GRU(
        U, layer_norm=True, use_bias=use_bias, reset_after=reset_after
    )
    layer.build((B, T, F))
    assert [w.name for w in layer.weights] == _names(use_bias)
    values = layer.get_weights()
    assert len(values) == len(_names(use_bias))
    bias_shape = [(2, 3 * U) if reset_after else (3 * U,)] if use_bias else []
    shapes = [(F, 3 * U), (U, 3 * U)] + bias_shape + [(3 * U,)] * 4
    assert [v.shape for v in values] == shapes
    gamma_x, beta_x, gamma_h, beta_h = values[-4:]
    for gamma in (gamma_x, gamma_h):
        np.testing.assert_array_equal(gamma, np.ones(3 * U))
    for beta in (beta_x, beta_h):
        np.testing.assert_array_equal(beta, np.zeros(3 * U))


def test_gamma_and_beta_regularizers_constraints_initializers_apply():
    """The gamma/beta initializers, regularizers and constraints act on
    both gains and both shifts."""
    layer = keras_gru_plus.GRU(
        U,
        layer_norm=True,
        gamma_initializer=keras.initializers.Constant(2.0),
        beta_initializer=keras.initializers.Constant(-0.5),
        gamma_regularizer=keras.regularizers.L2(0.1),
        beta_regularizer=keras.regularizers.L1(0.2),
        gamma_constraint="non_neg",
        beta_constraint="max_norm",
    )
    layer.build((B, T, F))
    cell = layer.cell
    by_name = {w.name: w for w in layer.weights}
    for name in ("input_norm_gamma", "recurrent_norm_gamma"):
        np.testing.assert_array_equal(to_numpy(by_name[name]), np.full(3 * U, 2.0))
        assert isinstance(by_name[name].constraint, keras.constraints.NonNeg)
    for name in ("input_norm_beta", "recurrent_norm_beta"):
        np.testing.assert_array_equal(to_numpy(by_name[name]), np.full(3 * U, -0.5))
        assert isinstance(by_name[name].constraint, keras.constraints.MaxNorm)
    # L2: 0.1 * (2 gains of 3 * U entries 2.0 squared); L1: 0.2 * (2 shifts
    # of 3 * U entries |-0.5|).
    total = sum(float(to_numpy(loss)) for loss in layer.losses)
    expected = 0.1 * 2 * 3 * U * 4.0 + 0.2 * 2 * 3 * U * 0.5
    np.testing.assert_allclose(total, expected, rtol=1e-5)
    assert cell.layer_norm is True


NEW_VALUES = dict(
    layer_norm=True,
    layer_norm_epsilon=1e-3,
    gamma_initializer="random_normal",
    beta_initializer="ones",
    gamma_regularizer="l2",
    beta_regularizer=keras.regularizers.L1L2(0.1, 0.2),
    gamma_constraint="non_neg",
    beta_constraint="max_norm",
)


@pytest.mark.parametrize("cls", [keras_gru_plus.GRU, keras_gru_plus.GRUCell])
def test_config_round_trip_keeps_the_new_arguments(cls):
    """get_config / from_config with layer_norm=True keeps every new
    argument (and the clone's config is the same)."""
    layer = cls(5, reset_after=False, **NEW_VALUES)
    config = layer.get_config()
    for key in NEW_ARGUMENTS:
        assert key in config, key
    assert config["layer_norm"] is True
    assert config["layer_norm_epsilon"] == 1e-3
    clone = cls.from_config(config)
    assert clone.get_config() == config
    cell = clone.cell if cls is keras_gru_plus.GRU else clone
    assert cell.layer_norm is True and cell.layer_norm_epsilon == 1e-3


def test_keras_file_round_trip(tmp_path):
    """A `.keras` file of a model with a layer-normalized GRU loads with its
    arguments and weights and gives identical outputs."""
    model = keras.Sequential(
        [
            keras.Input((T, F)),
            keras_gru_plus.GRU(
                U, return_sequences=True, layer_norm=True, layer_norm_epsilon=1e-3
            ),
        ]
    )
    _randomize(model.layers[0], seed=8)
    x = np.random.default_rng(9).normal(size=(B, T, F)).astype("float32")
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    gru = loaded.layers[0]
    assert isinstance(gru, keras_gru_plus.GRU)
    assert gru.cell.layer_norm is True and gru.cell.layer_norm_epsilon == 1e-3
    for a, b in zip(model.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(
        loaded.predict(x, verbose=0), model.predict(x, verbose=0)
    )


# Written by a subprocess under another backend: a model with a
# layer-normalized GRU (`reset_after` given), random weights, a `.keras` file.
_SAVE_SCRIPT = """
import sys
import numpy as np
import keras
sys.path.insert(0, {root!r})
import keras_gru_plus
model = keras.Sequential([
    keras.Input(({time}, {features})),
    keras_gru_plus.GRU({units}, return_sequences=True, layer_norm=True,
                       reset_after={reset_after}, layer_norm_epsilon=1e-3),
])
rng = np.random.default_rng(4)
model.set_weights([
    (1.0 + 0.3 * rng.normal(size=w.shape) if w.name.endswith("gamma")
     else rng.normal(scale=0.5, size=w.shape)).astype("float32")
    for w in model.weights
])
model.save({path!r})
"""


@pytest.mark.parametrize("reset_after", [True, False])
@pytest.mark.parametrize("other", ["jax", "tensorflow", "torch"])
def test_keras_file_saved_under_another_backend_loads_here(
    tmp_path, other, reset_after
):
    """A `.keras` file written under another backend loads here, with its
    arguments and its weights by name, and computes the reference's
    numbers."""
    path = str(tmp_path / "model.keras")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    script = _SAVE_SCRIPT.format(
        root=root, time=T, features=F, units=U, reset_after=reset_after, path=path
    )
    run_under_backend(other, script)
    loaded = keras.saving.load_model(path)
    gru = loaded.layers[0]
    assert isinstance(gru, keras_gru_plus.GRU)
    assert gru.cell.layer_norm and gru.cell.layer_norm_epsilon == 1e-3
    assert gru.cell.reset_after == reset_after
    weights = {v.name: to_numpy(v) for v in gru.weights}
    assert set(NORM_NAMES) <= set(weights)
    x = np.random.default_rng(5).normal(size=(B, T, F)).astype("float32")
    want, _, _ = _reference(weights, x, epsilon=1e-3, reset_after=reset_after)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), want, atol=1e-5)


# The layer inside Keras.


@pytest.mark.parametrize("reset_after", [True, False])
def test_cell_step_matches_reference(reset_after):
    """One `GRUCell(layer_norm=True)` step against `reference.gru_step`."""
    rng = np.random.default_rng(10)
    cell = keras_gru_plus.GRUCell(U, layer_norm=True, reset_after=reset_after)
    x = rng.normal(size=(B, F)).astype("float32")
    h = rng.normal(size=(B, U)).astype("float32")
    cell.build((B, F))
    weights = _randomize(cell, seed=11)
    out, states = cell(x, [h])
    expected = reference.gru_step(
        x.astype(np.float64),
        h.astype(np.float64),
        weights["kernel"],
        weights["recurrent_kernel"],
        weights["bias"],
        reset_after,
        layer_norm=_norms(weights),
    )
    np.testing.assert_allclose(to_numpy(out), expected, atol=1e-5)
    np.testing.assert_allclose(to_numpy(as_list(states)[0]), expected, atol=1e-5)


def test_cell_in_keras_rnn_matches_the_layer():
    """`keras.layers.RNN(GRUCell(3, layer_norm=True))` and
    `GRU(3, layer_norm=True)` with the same weights give the reference's
    numbers, masked."""
    rng = np.random.default_rng(12)
    x = rng.normal(size=(B, T, F)).astype("float32")
    rnn = keras.layers.RNN(
        keras_gru_plus.GRUCell(U, layer_norm=True), return_sequences=True
    )
    gru = keras_gru_plus.GRU(U, layer_norm=True, return_sequences=True)
    rnn.build(x.shape)
    gru.build(x.shape)
    weights = _randomize(gru, seed=13)
    rnn.set_weights([weights[n] for n in _names()])
    expected, _, _ = _reference(weights, x, mask=MASK)
    for layer in (rnn, gru):
        np.testing.assert_allclose(
            to_numpy(layer(x, mask=MASK)), expected, atol=1e-5, err_msg=layer.name
        )


def test_bidirectional():
    """`keras.layers.Bidirectional` (its backward copy made from our config)
    gives the reference's forward sequence and its go_backwards sequence
    flipped back, concatenated."""
    rng = np.random.default_rng(14)
    x = rng.normal(size=(B, T, F)).astype("float32")
    layer = keras.layers.Bidirectional(
        keras_gru_plus.GRU(3, layer_norm=True, return_sequences=True)
    )
    layer.build(x.shape)
    assert layer.backward_layer.cell.layer_norm is True
    forward = _randomize(layer.forward_layer, seed=15)
    backward = _randomize(layer.backward_layer, seed=16)
    expected_forward, _, _ = _reference(forward, x)
    expected_backward, _, _ = _reference(backward, x, go_backwards=True)
    expected = np.concatenate([expected_forward, expected_backward[:, ::-1]], -1)
    np.testing.assert_allclose(to_numpy(layer(x)), expected, atol=1e-5)


def test_time_major():
    """`time_major=True`: time-major inputs, mask and output sequence, the
    reference's numbers."""
    rng = np.random.default_rng(17)
    x = rng.normal(size=(B, T, F)).astype("float32")
    layer = keras_gru_plus.GRU(
        3, layer_norm=True, time_major=True, return_sequences=True, return_state=True
    )
    layer.build((T, B, F))
    weights = _randomize(layer, seed=18)
    sequences, state = layer(np.swapaxes(x, 0, 1), mask=MASK.T)
    expected, _, expected_state = _reference(weights, x, mask=MASK)
    np.testing.assert_allclose(
        np.swapaxes(to_numpy(sequences), 0, 1), expected, atol=1e-5
    )
    np.testing.assert_allclose(to_numpy(state), expected_state, atol=1e-5)


def test_mixed_precision(plans):
    """`mixed_float16`: float16 outputs, float32 weights, outputs within
    1e-2 of the reference and the trained gradients (the hand-written
    backward pass) within 2e-2 of its central differences, for rows near
    zero and rows 300 away from it, whose projections' statistics float16
    would lose (their squares overflow it)."""
    rng = np.random.default_rng(19)
    x = rng.normal(size=(4, 5, 4))
    x[2:] += 300.0
    # Inputs that float16 holds exactly, so any difference is the layer's.
    x = x.astype("float16").astype("float32")
    mask = np.ones((4, 5), bool)
    mask[1, 3:] = False
    mask[3, 1] = False
    layer = keras_gru_plus.GRU(
        4,
        layer_norm=True,
        return_sequences=True,
        return_state=True,
        dtype="mixed_float16",
    )
    layer.build(x.shape)
    assert layer.cell.kernel.dtype == "float32"
    weights = _randomize(layer, seed=20)
    probe = [rng.normal(size=(4, 5, 4)), rng.normal(size=(4, 4))]
    probe = [p.astype("float16").astype("float32") for p in probe]
    call = {"mask": mask, "training": True}
    outs, dx, _, dw = _outputs_and_gradients(layer, x, None, call, probe)
    assert keras.backend.standardize_dtype(outs[0].dtype) == "float16"
    assert {p.runner for p in plans} == {"bptt"}, plans
    names = _names()

    def run(arrays):
        sequences, _, state = _reference(
            dict(zip(names, arrays[1:])), arrays[0], mask=mask
        )
        return [sequences, state]

    arrays = [x.astype(np.float64)] + [weights[n].astype(np.float64) for n in names]
    for got, want in zip(outs, run(arrays)):
        np.testing.assert_allclose(got.astype("float32"), want, atol=1e-2)
    numeric = _central_differences(
        lambda a: float(sum(np.sum(o * p) for o, p in zip(run(a), probe))), arrays
    )
    for label, got, want in zip(["inputs"] + names, [dx] + dw, numeric):
        got = np.asarray(got, np.float32)
        assert np.isfinite(got).all(), label
        scale = max(1.0, float(np.abs(want).max()))
        np.testing.assert_allclose(got, want, atol=2e-2 * scale, err_msg=label)


# Bad input.


@pytest.mark.parametrize("cls", [keras_gru_plus.GRU, keras_gru_plus.GRUCell])
@pytest.mark.parametrize("value", ["yes", None, 2, 0.5])
def test_layer_norm_must_be_a_bool(cls, value):
    """A `layer_norm` that is not a bool is refused, naming the argument."""
    with pytest.raises((TypeError, ValueError), match="layer_norm") as info:
        cls(4, layer_norm=value)
    assert repr(value) in str(info.value)


@pytest.mark.parametrize("cls", [keras_gru_plus.GRU, keras_gru_plus.GRUCell])
@pytest.mark.parametrize("value", [0, 0.0, -1e-3, math.nan, math.inf])
def test_layer_norm_epsilon_must_be_positive(cls, value):
    """An epsilon <= 0, NaN or infinite raises ValueError naming
    `layer_norm_epsilon` and the value."""
    with pytest.raises(ValueError, match="layer_norm_epsilon") as info:
        cls(4, layer_norm=True, layer_norm_epsilon=value)
    assert repr(value) in str(info.value)


@pytest.mark.parametrize("cls", [keras_gru_plus.GRU, keras_gru_plus.GRUCell])
@pytest.mark.parametrize("value", ["1e-5", None, True])
def test_layer_norm_epsilon_must_be_a_number(cls, value):
    """An epsilon that is not a real number is refused (TypeError, as the
    package's other wrong types, or ValueError), naming the argument and
    the value."""
    with pytest.raises((TypeError, ValueError), match="layer_norm_epsilon") as info:
        cls(4, layer_norm=True, layer_norm_epsilon=value)
    assert repr(value) in str(info.value)


# Interop.


def test_to_torch_state_dict_refuses_layer_norm():
    """`torch.nn.GRU` has no layer-normalized variant: exporting one raises
    ValueError mentioning layer_norm rather than dropping the norms."""
    pytest.importorskip("torch", reason="torch is not installed in this environment")
    layer = keras_gru_plus.GRU(U, layer_norm=True)
    layer.build((B, T, F))
    with pytest.raises(ValueError, match="layer_norm"):
        interop.to_torch_state_dict(layer)


def test_from_keras2_config_refuses_layer_norm():
    """No Keras 2 GRU is layer-normalized: `interop.from_keras2_config` of
    a config with `layer_norm=True` raises ValueError naming it, bare or
    serialized."""
    config = keras_gru_plus.GRU(U, layer_norm=True).get_config()
    for value in (config, {"class_name": "GRU", "config": config}):
        with pytest.raises(ValueError, match="layer_norm"):
            interop.from_keras2_config(value)


def test_replace_gru_keeps_a_layer_norm_layer():
    """`interop.replace_gru` swaps only `keras.layers.GRU`: a model holding
    our layer-normalized GRU comes back with it, its arguments and weights,
    predicting the same."""
    model = keras.Sequential(
        [keras.Input((T, F)), keras_gru_plus.GRU(3, layer_norm=True)]
    )
    _randomize(model.layers[0], seed=24)
    copy = interop.replace_gru(model)
    assert copy.layers[0].cell.layer_norm is True
    x = np.random.default_rng(25).normal(size=(2, T, F)).astype("float32")
    np.testing.assert_array_equal(to_numpy(copy(x)), to_numpy(model(x)))


# The reference itself.


def test_reference_normalize_with_unit_gain_standardizes():
    """With gamma = 1, beta = 0, `reference.normalize` is the direct
    standardization (v - mean) / sqrt(var + epsilon)."""
    v = np.random.default_rng(21).normal(loc=2.0, scale=3.0, size=(4, 6))
    got = reference.normalize(v, np.ones(6), np.zeros(6), 1e-5)
    direct = (v - v.mean(1, keepdims=True)) / np.sqrt(v.var(1, keepdims=True) + 1e-5)
    np.testing.assert_allclose(got, direct, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(got.mean(1), 0.0, atol=1e-12)
    np.testing.assert_allclose(got.std(1), 1.0, atol=1e-5)


@pytest.mark.parametrize("reset_after", [True, False])
def test_reference_layer_norm_is_invariant_to_projection_scale_and_shift(
    reset_after,
):
    """Each gate's projection normalized: scaling the kernels, or adding to
    each gate's columns one common column (a shift per row), changes no
    output (up to epsilon). Guards the per-gate slicing of the reference."""
    rng = np.random.default_rng(22)
    x = rng.normal(size=(B, T, F))
    names = _names()
    weights = {
        "kernel": rng.normal(size=(F, 3 * U)),
        "recurrent_kernel": rng.normal(size=(U, 3 * U)),
        "bias": rng.normal(size=(2, 3 * U) if reset_after else (3 * U,)),
    }
    for name in names[3:]:
        weights[name] = rng.normal(size=3 * U)
    kwargs = dict(reset_after=reset_after, mask=MASK, epsilon=1e-12)
    base = _reference(weights, x, **kwargs)[0]
    scaled = dict(weights, kernel=7 * weights["kernel"])
    scaled["recurrent_kernel"] = 0.2 * weights["recurrent_kernel"]
    np.testing.assert_allclose(_reference(scaled, x, **kwargs)[0], base, atol=1e-9)
    shift = np.repeat(rng.normal(size=(F, 3)), U, axis=1)
    shifted = dict(weights, kernel=weights["kernel"] + shift)
    np.testing.assert_allclose(_reference(shifted, x, **kwargs)[0], base, atol=1e-9)
    # Whereas a shift shared across gates but not within one does change it.
    uneven = dict(weights, kernel=weights["kernel"] + rng.normal(size=(F, 3 * U)))
    assert np.abs(_reference(uneven, x, **kwargs)[0] - base).max() > 1e-2


def test_reference_without_layer_norm_is_unchanged():
    """`layer_norm=None` is the plain GRU, and unit gains with zero shifts
    differ from it (the normalization is applied)."""
    rng = np.random.default_rng(23)
    x = rng.normal(size=(B, T, F))
    kernel, recurrent = rng.normal(size=(F, 3 * U)), rng.normal(size=(U, 3 * U))
    bias = rng.normal(size=(2, 3 * U))
    args = (x, kernel, recurrent, bias)
    plain = reference.gru_sequence(*args, mask=MASK)
    none = reference.gru_sequence(*args, mask=MASK, layer_norm=None)
    for a, b in zip(plain, none):
        np.testing.assert_array_equal(a, b)
    identity = (np.ones(3 * U), np.zeros(3 * U), np.ones(3 * U), np.zeros(3 * U), 1e-5)
    normed = reference.gru_sequence(*args, mask=MASK, layer_norm=identity)
    assert np.abs(normed[0] - plain[0]).max() > 1e-2


@pytest.mark.parametrize("means", ["reduce", "matmul"])
@pytest.mark.parametrize("with_beta", [True, False])
def test_apply_equals_the_reference_on_centered_values(means, with_beta):
    # `layer_norm.apply` is what an inference loop step computes; by
    # matmul it takes a shortcut (the gains folded into the spread of the
    # per-gate inverse deviations), checked here on every backend.
    from keras_gru_plus import layer_norm
    from keras_gru_plus import policy

    rng = np.random.default_rng(7)
    groups, units = 3, 4
    v = rng.normal(size=(5, groups * units)) * 3 + 1
    # Centered per gate, as the products of centered kernels come.
    v = (
        v.reshape(5, groups, units)
        - v.reshape(5, groups, units).mean(-1, keepdims=True)
    ).reshape(5, -1)
    gamma = rng.uniform(0.5, 2.0, groups * units)
    beta = rng.normal(size=groups * units) if with_beta else np.zeros(groups * units)
    eps = 1e-3
    expected = np.concatenate(
        [
            reference.normalize(
                v[:, g * units : (g + 1) * units],
                gamma[g * units : (g + 1) * units],
                beta[g * units : (g + 1) * units],
                eps,
            )
            for g in range(groups)
        ],
        axis=-1,
    )
    as_tensor = lambda a: keras.ops.convert_to_tensor(a.astype("float32"))  # noqa: E731
    with policy.override(step_gate_means=means):
        norm = layer_norm.norm_of(
            as_tensor(gamma),
            as_tensor(beta) if with_beta else None,
            eps,
            groups,
            in_step=True,
            centered=True,
        )
    got = to_numpy(layer_norm.apply(as_tensor(v), norm))
    np.testing.assert_allclose(got, expected, atol=2e-5, rtol=2e-5)
    assert (norm.means.gained is not None) == (means == "matmul")
