"""Gradients of the whole layer against central finite differences.

The finite differences are taken in float64 on the NumPy reference, an
independent implementation of the documented equations; the layer's
gradients come from its own backward pass (hand-written for the known
activations, autodiff for others such as `elu`).
"""

import keras
import numpy as np
import pytest

import keras_gru_plus
from keras_gru_plus import bptt
from keras_gru_plus import policy
from keras_gru_plus import recurrence
from tests import reference
from tests.helpers import BACKEND
from tests.helpers import float64
from tests.helpers import mask_of
from tests.helpers import outputs_and_gradients
from tests.helpers import probes
from tests.helpers import to_numpy
from tests.helpers import twin_layers

B, T, F, U = 2, 4, 3, 3
EPS = 1e-6


def _loss(params, shapes, probe, kwargs):
    x, kernel, recurrent_kernel, bias = _unflatten(params, shapes)
    outputs, _, state = reference.gru_sequence(
        x, kernel, recurrent_kernel, bias, **kwargs
    )
    return float(np.sum(outputs * probe[0]) + np.sum(state * probe[1]))


def _unflatten(params, shapes):
    out, start = [], 0
    for shape in shapes:
        size = int(np.prod(shape))
        out.append(params[start : start + size].reshape(shape))
        start += size
    return out


@pytest.mark.parametrize(
    "case",
    [
        dict(reset_after=True),
        dict(reset_after=False),
        dict(reset_after=True, masked=True, go_backwards=True),
        dict(reset_after=False, masked=True, initial_state=True),
        dict(reset_after=True, recurrent_dropout=True),
        dict(reset_after=False, recurrent_dropout=True, masked=True),
        dict(reset_after=True, activation="elu"),
        dict(reset_after=True, activation="relu", recurrent_activation="hard_sigmoid"),
        # The backward pass in blocks of 2 steps (long sequences take it),
        # projecting the inputs block by block, with and without input
        # dropout, also with one dropout mask per gate (implementation=1).
        dict(reset_after=True, masked=True, recurrent_dropout=True, blocks=2),
        dict(reset_after=False, masked=True, recurrent_dropout=True, blocks=2),
        dict(reset_after=True, dropout=True, blocks=2),
        dict(reset_after=False, dropout=True, masked=True, go_backwards=True, blocks=2),
        dict(reset_after=True, dropout=True, implementation=1, blocks=2),
        # The blocks of shorter sequences on PyTorch (which keeps the forward
        # gates) and TensorFlow (a Python loop of blocks); JAX takes one block.
        dict(reset_after=True, dropout=True, go_backwards=True, short_blocks=2),
        dict(
            reset_after=False,
            masked=True,
            dropout=True,
            recurrent_dropout=True,
            short_blocks=2,
        ),
        # Steps that project their own inputs, with the forward gates kept
        # one array per step or recomputed step by step (PyTorch's plan
        # under `torch.compile`: `step_inputs`).
        dict(reset_after=True, masked=True, recurrent_dropout=True, step_inputs="kept"),
        dict(
            reset_after=False,
            dropout=True,
            recurrent_dropout=True,
            go_backwards=True,
            initial_state=True,
            step_inputs="kept",
        ),
        dict(reset_after=True, dropout=True, implementation=1, step_inputs="kept"),
        dict(
            reset_after=False,
            masked=True,
            dropout=True,
            recurrent_dropout=True,
            step_inputs="recomputed",
        ),
        dict(
            reset_after=True,
            activation="relu",
            recurrent_activation="hard_sigmoid",
            go_backwards=True,
            recurrent_dropout=True,
            step_inputs="recomputed",
        ),
    ],
)
def test_gradients_match_finite_differences(case, resize, plans):
    if case.get("step_inputs"):
        # One block of Python loops, on every backend (`resize` overrides
        # these fields too, until the test ends).
        resize(
            short_block_steps=None,
            step_inputs=True,
            python_loops=True,
            keep_gates=case["step_inputs"] == "kept",
        )
    if case.get("blocks"):
        resize(block_steps=case["blocks"])
    if case.get("short_blocks"):
        resize(short_block_steps=case["short_blocks"])
    rng = np.random.default_rng(0)
    activation = case.get("activation", "tanh")
    recurrent_activation = case.get("recurrent_activation", "sigmoid")
    layer = keras_gru_plus.GRU(
        U,
        return_sequences=True,
        return_state=True,
        reset_after=case["reset_after"],
        activation=activation,
        recurrent_activation=recurrent_activation,
        go_backwards=case.get("go_backwards", False),
        recurrent_dropout=0.5 if case.get("recurrent_dropout") else 0.0,
        dropout=0.5 if case.get("dropout") else 0.0,
        implementation=case.get("implementation", 2),
        seed=1,
    )
    x = rng.normal(size=(B, T, F)).astype("float32")
    layer.build(x.shape)
    weights = [
        rng.normal(scale=0.5, size=w.shape).astype("float32")
        for w in layer.get_weights()
    ]
    layer.set_weights(weights)
    mask = None
    if case.get("masked"):
        mask = np.array([[1, 0, 1, 1], [0, 0, 1, 0]], bool)
    h0 = (
        rng.normal(size=(B, U)).astype("float32") if case.get("initial_state") else None
    )
    rec_mask = in_mask = None
    call = {"mask": mask, "initial_state": h0}
    if case.get("dropout"):
        # Fixed masks (one, or one per gate), prepared before the call.
        count = layer.cell.dropout_mask_count
        in_mask = layer.get_dropout_mask_for_cell(x, training=True, count=count)
        in_mask = (
            to_numpy(in_mask) if count == 1 else tuple(to_numpy(m) for m in in_mask)
        )
        call["training"] = True
    if case.get("recurrent_dropout"):
        # A fixed mask, prepared before the call, and a training call.
        rec_mask = to_numpy(layer.get_recurrent_dropout_mask_for_cell(x, training=True))
        call["training"] = True
    probe = [
        rng.normal(size=(B, T, U)).astype("float32"),
        rng.normal(size=(B, U)).astype("float32"),
    ]
    _, dx, dw = outputs_and_gradients(layer, x, call, probe)

    kwargs = dict(
        reset_after=case["reset_after"],
        activation=activation,
        recurrent_activation=recurrent_activation,
        mask=mask,
        initial_state=h0,
        go_backwards=case.get("go_backwards", False),
        recurrent_mask=rec_mask,
        input_mask=in_mask,
    )
    shapes = [x.shape] + [w.shape for w in weights]
    params = np.concatenate([a.astype(np.float64).ravel() for a in [x] + weights])
    numeric = np.zeros_like(params)
    for i in range(params.size):
        step = np.zeros_like(params)
        step[i] = EPS
        numeric[i] = (
            _loss(params + step, shapes, probe, kwargs)
            - _loss(params - step, shapes, probe, kwargs)
        ) / (2 * EPS)
    analytic = np.concatenate([dx.ravel()] + [g.ravel() for g in dw])
    np.testing.assert_allclose(analytic, numeric, atol=2e-4, rtol=2e-4)
    # The backward pass that ran, and its blocks (every blocked plan
    # projects its inputs block by block, one dropout mask per gate too).
    bptt_blocks = [p.block for p in plans if p.runner == "bptt"]
    if case.get("blocks"):
        assert bptt_blocks == [case["blocks"]]
    if case.get("short_blocks"):
        assert bptt_blocks == [case["short_blocks"] if BACKEND != "jax" else None]
    if case.get("step_inputs"):
        kept = case["step_inputs"] == "kept"
        assert [
            (p.block, p.step_inputs, p.keep_gates) for p in plans if p.runner == "bptt"
        ] == [(None, True, kept)]


@pytest.mark.parametrize("blocks", ["long", "short", "long_groups", "short_groups"])
@pytest.mark.parametrize("steps", [9, 10])
@pytest.mark.parametrize(
    "kwargs",
    [
        dict(reset_after=True),
        dict(reset_after=False, go_backwards=True),
        dict(reset_after=True, use_bias=False, mask="right"),
        dict(reset_after=False, mask="right", return_sequences=False),
    ],
)
def test_blocked_backward_matches_keras(kwargs, steps, blocks, resize):
    # Blocks of 3 steps: 9 steps are three blocks, 10 steps three blocks
    # and a one-step block run first. "long": the blocks of long sequences
    # (a `scan` of blocks but on PyTorch, recomputing the gates); "short":
    # the blocks of shorter sequences on PyTorch (keeping the gates) and
    # TensorFlow (a Python loop of blocks). "_groups": blocks of 4 steps
    # (two blocks and a rest of 1 or 2 steps), whose loops go over groups of
    # 2 unrolled steps on TensorFlow (policy: step_groups).
    if blocks.startswith("short") and BACKEND == "jax":
        pytest.skip(
            "JAX takes no blocks over short sequences "
            "(policy: short_block_steps is None)"
        )
    groups = blocks.endswith("_groups")
    resize(
        **{
            "short_block_steps" if blocks.startswith("short") else "block_steps": 4
            if groups
            else 3
        }
    )
    if groups:
        resize(step_groups=2)
    kwargs = dict(kwargs)
    mask = mask_of(kwargs.pop("mask", "none"), 2, steps)
    kwargs.setdefault("return_sequences", True)
    ours, theirs, _ = twin_layers((2, steps, 3), dict(units=4, **kwargs))
    x = np.random.default_rng(0).normal(size=(2, steps, 3)).astype("float32")
    call = {"mask": mask, "training": True}
    shape = (2, steps, 4) if kwargs["return_sequences"] else (2, 4)
    probe = probes([shape])
    out_o, dx_o, dw_o = outputs_and_gradients(ours, x, call, probe)
    out_t, dx_t, dw_t = outputs_and_gradients(theirs, x, call, probe)
    np.testing.assert_allclose(out_o[0], out_t[0], atol=1e-5)
    np.testing.assert_allclose(dx_o, dx_t, atol=1e-5)
    for a, b in zip(dw_o, dw_t):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_blocked_training_step_matches_keras(resize):
    # A compiled training step (unknown batch size when traced) with the
    # backward pass in blocks: the same weights after one SGD step; then a
    # compiled predict with the state-only loop in blocks.
    resize(block_steps=3)
    ours, theirs, _ = twin_layers((None, 10, 3), dict(units=4))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 10, 3)).astype("float32")
    y = rng.normal(size=(4, 4)).astype("float32")
    weights, predictions = [], []
    for layer in (ours, theirs):
        model = keras.Sequential([keras.Input((10, 3)), layer])
        model.compile(keras.optimizers.SGD(0.5), "mse")
        model.train_on_batch(x, y)
        weights.append(model.get_weights())
        predictions.append(model.predict(x, batch_size=3, verbose=0))
    for a, b in zip(*weights):
        np.testing.assert_allclose(a, b, atol=1e-5)
    np.testing.assert_allclose(*predictions, atol=1e-5)


def test_blocked_fit_with_a_partial_last_batch_matches_keras(resize):
    """`fit` over 5 sequences in batches of 2: the last batch of 1 traces
    the training step again with an unknown batch size, which must keep
    the length of the blocked passes known (TensorFlow lost it once). The
    weights after one epoch match `keras.layers.GRU`'s."""
    resize(block_steps=3, short_block_steps=3)
    ours, theirs, _ = twin_layers((None, 10, 3), dict(units=4))
    rng = np.random.default_rng(1)
    x = rng.normal(size=(5, 10, 3)).astype("float32")
    y = rng.normal(size=(5, 4)).astype("float32")
    weights = []
    for layer in (ours, theirs):
        model = keras.Sequential([keras.Input((10, 3)), layer])
        model.compile(keras.optimizers.SGD(0.5), "mse")
        model.fit(x, y, batch_size=2, epochs=1, shuffle=False, verbose=0)
        weights.append(model.get_weights())
    for a, b in zip(*weights):
        np.testing.assert_allclose(a, b, atol=1e-5)


@pytest.mark.parametrize("blocks", [False, True])
@pytest.mark.parametrize("reset_after", [True, False])
def test_masked_non_finite_inputs_leave_gradients_unchanged(
    reset_after, blocks, resize
):
    """Inputs of masked steps change nothing, gradients included: NaN and
    inf there give the gradients that zeros there give, finite, with exact
    zeros for those inputs (the backward pass zeroes masked inputs rather
    than selecting over its products)."""
    if blocks:
        resize(block_steps=2, short_block_steps=2)
    # TensorFlow's loops in groups of 2 unrolled steps.
    resize(step_groups=2)
    rng = np.random.default_rng(3)
    x = rng.normal(size=(3, 7, 4)).astype("float32")
    mask = np.ones((3, 7), bool)
    mask[0, 5:] = False
    mask[1, :2] = False
    mask[2, 3] = False
    clean = np.where(mask[..., None], x, 0).astype("float32")
    dirty = clean.copy()
    dirty[0, 5] = np.nan
    dirty[1, 0] = np.inf
    dirty[2, 3] = -np.inf
    layer = keras_gru_plus.GRU(5, reset_after=reset_after, return_sequences=True)
    layer(clean[:1], mask=mask[:1])
    call = {"mask": mask, "training": True}
    probe = probes([(3, 7, 5)])
    out_c, dx_c, dw_c = outputs_and_gradients(layer, clean, call, probe)
    out_d, dx_d, dw_d = outputs_and_gradients(layer, dirty, call, probe)
    np.testing.assert_array_equal(out_d[0], out_c[0])
    assert np.isfinite(dx_d).all()
    np.testing.assert_array_equal(dx_d[~mask], 0.0)
    np.testing.assert_allclose(dx_d, dx_c, rtol=1e-6, atol=1e-7)
    for d, c in zip(dw_d, dw_c):
        assert np.isfinite(d).all()
        np.testing.assert_allclose(d, c, rtol=1e-6, atol=1e-7)


def test_gru_states_rejects_a_candidate_bias_without_reset_after():
    x = np.zeros((3, 2, 5), "float32")
    weights = recurrence.GRUWeights(
        np.zeros((5, 12), "float32"),
        np.zeros((4, 12), "float32"),
        candidate_bias=np.zeros((4,), "float32"),
    )
    spec = recurrence.GRUSpec(
        4, keras.activations.tanh, keras.activations.sigmoid, reset_after=False
    )
    with pytest.raises(ValueError, match="reset_after=False"):
        bptt.gru_states(x, np.zeros((2, 4), "float32"), weights, spec)


@pytest.mark.parametrize("reset_after", [True, False])
def test_float64_backward_pass_keeps_float64(reset_after, resize, plans):
    """In float64 the hand-written backward pass (in blocks of 2 steps,
    masked) gives the gradients of autodiff through the unrolled loop
    (`unroll=True`, the same equations) to 1e-11 on TensorFlow and
    PyTorch: no part of it computes in float32. (Keras 3.15.1's
    `ops.matmul` on PyTorch casts two float64 arrays to float32,
    `dtypes.result_type("float64", "float64")`; the kernels' gradients
    went through it and kept about 7 digits.) On JAX the two differ by up
    to 3e-6: there Keras 3.15.1's `ops.tanh` computes float64 in float32
    too, in both, so JAX is held to 1e-5."""
    resize(block_steps=2)
    rng = np.random.default_rng(3)
    x = rng.normal(size=(2, 6, 3))
    mask = mask_of("right", 2, 6)
    with float64():
        layers = [
            keras_gru_plus.GRU(
                4,
                reset_after=reset_after,
                return_sequences=True,
                unroll=unroll,
                dtype="float64",
            )
            for unroll in (False, True)
        ]
        for layer in layers:
            layer.build(x.shape)
        for v, w in zip(layers[1].trainable_weights, layers[0].trainable_weights):
            v.assign(w)
        probe = probes([(2, 6, 4)])[0].astype(np.float64)
        call = {"mask": mask, "training": True}
        got, want = (outputs_and_gradients(layer, x, call, [probe]) for layer in layers)
    assert {p.runner for p in plans} == {"bptt", "unrolled"}, plans
    if BACKEND == "jax":
        tolerance = dict(rtol=1e-5, atol=1e-7)
    else:
        tolerance = dict(rtol=1e-11, atol=1e-13)
    for a, b in zip([got[1]] + got[2], [want[1]] + want[2]):
        assert a.dtype == np.float64
        np.testing.assert_allclose(a, b, **tolerance)


def test_gru_states_rejects_steps_with_their_own_inputs_in_blocks():
    weights = recurrence.GRUWeights(
        np.zeros((5, 12), "float32"), np.zeros((4, 12), "float32")
    )
    spec = recurrence.GRUSpec(
        4, keras.activations.tanh, keras.activations.sigmoid, reset_after=True
    )
    plan = policy.Plan("bptt", block=2, step_inputs=True)
    with pytest.raises(ValueError, match=r"step_inputs=True.*block=2"):
        bptt.gru_states(
            np.zeros((4, 2, 5), "float32"),
            np.zeros((2, 4), "float32"),
            weights,
            spec,
            plan=plan,
        )
