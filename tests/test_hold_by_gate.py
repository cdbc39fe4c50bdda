"""Masked steps held through the update gate (`recurrence.held_by_gate`).

Where the policy's `hold_by_gate` allows (TensorFlow's inference loops),
a masked step does not select the state: its projected inputs set the
update gate's pre-activation to +inf and the other gates' inputs to 0, so
that `z = 1` and the step returns the previous state. These tests run that
path on every backend (through `policy.override`), in both inference
runners and both input layouts, against the float64 NumPy reference of the
equations with its per-step select, and check the premises it rests on.
"""

import keras
import numpy as np
import pytest

import keras_gru_plus
from keras_gru_plus import policy
from keras_gru_plus import recurrence
from tests import reference
from tests.helpers import BACKEND
from tests.helpers import mask_of
from tests.helpers import pairwise_cases
from tests.helpers import to_numpy

BATCH, TIME, FEATURES, UNITS = 4, 9, 3, 5

GRID = {
    "mask": ["right", "left", "holes", "full_row"],
    "runner": ["step_projection", "inference"],
    "split_gates": [False, True],
    "reset_after": [True, False],
    "return_sequences": [True, False],
    "go_backwards": [False, True],
    "zero_output_for_mask": [False, True],
    "activation": ["tanh", "softsign", "sigmoid", "hard_sigmoid"],
    "recurrent_activation": ["sigmoid", "hard_sigmoid"],
    "layer_norm": [False, True],
}
CASES = pairwise_cases(GRID, seed=3)
LAYER_ARGS = (
    "reset_after",
    "return_sequences",
    "go_backwards",
    "zero_output_for_mask",
    "activation",
    "recurrent_activation",
    "layer_norm",
)


def _randomized(layer, seed=0):
    """Random values for every weight of a built layer: `{name: array}`."""
    rng = np.random.default_rng(seed)
    values = {}
    for v in layer.weights:
        scale = 0.3 if v.name.endswith("gamma") else 0.5
        offset = 1.0 if v.name.endswith("gamma") else 0.0
        values[v.name] = (offset + scale * rng.normal(size=tuple(v.shape))).astype(
            "float32"
        )
        v.assign(values[v.name])
    return values


@pytest.mark.parametrize("case", CASES, ids=[str(i) for i in range(len(CASES))])
def test_held_steps_match_the_reference(case, plans):
    """The layer's inference under the gate hold, with NaN in every masked
    step's inputs, against the reference (which selects the state)."""
    layer = keras_gru_plus.GRU(UNITS, **{k: case[k] for k in LAYER_ARGS})
    layer.build((BATCH, TIME, FEATURES))
    w = _randomized(layer)
    rng = np.random.default_rng(1)
    x = rng.normal(size=(BATCH, TIME, FEATURES)).astype("float32")
    mask = mask_of(case["mask"], BATCH, TIME, seed=2)
    padded = np.where(mask[..., None], x, np.nan).astype("float32")
    with policy.override(
        hold_by_gate=True,
        project_in_step=case["runner"] == "step_projection",
        split_gates=case["split_gates"],
    ):
        out = to_numpy(layer(padded, mask=mask))
    assert {(p.runner, p.hold, p.split_gates) for p in plans} == {
        (case["runner"], "gate", case["split_gates"])
    }
    norms = None
    if case["layer_norm"]:
        norms = dict(
            input_gamma=w["input_norm_gamma"],
            input_beta=w["input_norm_beta"],
            recurrent_gamma=w["recurrent_norm_gamma"],
            recurrent_beta=w["recurrent_norm_beta"],
            epsilon=1e-5,
        )
    outputs, last, _ = reference.gru_sequence(
        x,
        w["kernel"],
        w["recurrent_kernel"],
        w["bias"],
        reset_after=case["reset_after"],
        activation=case["activation"],
        recurrent_activation=case["recurrent_activation"],
        mask=mask,
        go_backwards=case["go_backwards"],
        zero_output_for_mask=case["zero_output_for_mask"],
        layer_norm=norms,
    )
    expected = outputs if case["return_sequences"] else last
    assert not np.isnan(out).any()
    np.testing.assert_allclose(out, expected, atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("runner", ["step_projection", "inference"])
def test_held_state_is_the_previous_state_exactly(runner):
    """A masked step returns the state bit for bit (`exact_hold`): the
    output repeated over masked steps equals the last unmasked one."""
    layer = keras_gru_plus.GRU(UNITS, return_sequences=True)
    layer.build((BATCH, TIME, FEATURES))
    _randomized(layer, seed=4)
    x = np.random.default_rng(5).normal(size=(BATCH, TIME, FEATURES)).astype("float32")
    mask = mask_of("holes", BATCH, TIME, seed=6)
    with policy.override(
        hold_by_gate=True, project_in_step=runner == "step_projection"
    ):
        out = to_numpy(layer(x, mask=mask))
    for b in range(BATCH):
        for t in range(1, TIME):
            if not mask[b, t]:
                np.testing.assert_array_equal(out[b, t], out[b, t - 1])


@pytest.mark.parametrize("fn", recurrence.SATURATE_AT_ONE, ids=lambda f: f.__name__)
def test_recurrent_activations_that_hold_reach_one_at_infinity(fn):
    big = np.finfo("float32").max
    values = [-np.inf, -big, -1.0, 0.0, 1.0, big, np.inf]
    value = to_numpy(fn(keras.ops.convert_to_tensor(values, "float32")))
    assert value[-1] == 1.0 and value[-2] == 1.0, value
    assert ((value >= 0) & (value <= 1)).all(), value


@pytest.mark.parametrize("fn", recurrence.BOUNDED, ids=lambda f: f.__name__)
def test_activations_that_hold_are_bounded(fn):
    """Bounded by 1 over every finite input (a held step's candidate input
    is finite: `x_h = 0`, `r` in [0, 1], `h R` of a bounded state)."""
    big = np.finfo("float32").max
    values = [-big, -1e30, -1.0, 0.0, 1.0, 1e30, big]
    value = to_numpy(fn(keras.ops.convert_to_tensor(values, "float32")))
    assert (np.abs(value) <= 1).all(), value


@pytest.mark.parametrize(
    "activation,recurrent_activation,dtype,expected",
    [
        ("tanh", "sigmoid", "float32", True),
        ("softsign", "hard_sigmoid", "bfloat16", True),
        ("tanh", "sigmoid", "float16", False),  # h R overflows at 65504
        ("relu", "sigmoid", "float32", False),  # unbounded: the state grows
        ("linear", "sigmoid", "float32", False),
        ("tanh", "tanh", "float32", False),  # z in [-1, 1]
        ("tanh", "relu", "float32", False),  # relu(inf) is inf, not 1
        ("tanh", "softplus", "float32", False),
    ],
)
def test_gate_can_hold_only_where_it_keeps_the_state(
    activation, recurrent_activation, dtype, expected
):
    can = recurrence.gate_can_hold(
        keras.activations.get(activation),
        keras.activations.get(recurrent_activation),
        dtype,
    )
    assert can is expected


@pytest.mark.parametrize("masked", [False, True])
def test_the_plan_holds_by_gate_only_with_a_mask(masked, plans):
    layer = keras_gru_plus.GRU(UNITS)
    x = np.random.default_rng(9).normal(size=(BATCH, TIME, FEATURES)).astype("float32")
    with policy.override(hold_by_gate=True):
        layer(x, mask=mask_of("right", BATCH, TIME) if masked else None)
    assert {p.hold for p in plans} == {"gate" if masked else "select"}


def test_float16_selects_the_state(plans):
    """A float16 loop keeps the select (its `h R` overflows at 65504)."""
    layer = keras_gru_plus.GRU(UNITS, dtype="mixed_float16")
    x = np.random.default_rng(10).normal(size=(BATCH, TIME, FEATURES)).astype("float32")
    with policy.override(hold_by_gate=True):
        layer(x, mask=mask_of("right", BATCH, TIME))
    assert {p.hold for p in plans} == {"select"}


@pytest.mark.parametrize("hold_by_gate", [False, True])
def test_masked_sequences_of_lengths_unknown_when_traced(hold_by_gate):
    """`predict` over several lengths of a `(None, features)` input with a
    `Masking` layer (TensorFlow retraces with the length unknown) gives
    the built-in's outputs."""
    models = []
    for gru in (keras_gru_plus.GRU, keras.layers.GRU):
        keras.utils.set_random_seed(11)
        inputs = keras.Input((None, FEATURES))
        masked = keras.layers.Masking(0.0)(inputs)
        model = keras.Model(inputs, gru(UNITS, return_sequences=True)(masked))
        models.append(model)
    models[0].set_weights(models[1].get_weights())
    rng = np.random.default_rng(12)
    with policy.override(hold_by_gate=hold_by_gate):
        for time in (5, 7, 9, 11):
            x = rng.normal(size=(BATCH, time, FEATURES)).astype("float32")
            x[0, time - 2 :] = 0.0  # padding
            ours, theirs = (m.predict(x, verbose=0) for m in models)
            np.testing.assert_allclose(ours, theirs, atol=1e-5, rtol=1e-5)


def test_other_activations_select_the_state(plans):
    """An activation outside the known ones (here an unbounded candidate)
    keeps the per-step select, with the policy's `hold_by_gate` on."""
    layer = keras_gru_plus.GRU(UNITS, activation="relu")
    x = np.random.default_rng(7).normal(size=(BATCH, TIME, FEATURES)).astype("float32")
    with policy.override(hold_by_gate=True):
        layer(x, mask=mask_of("right", BATCH, TIME))
    assert {p.hold for p in plans} == {"select"}


def test_training_selects_the_state(plans):
    """The gate hold serves inference only: training runs the hand-written
    backward pass, which selects."""
    layer = keras_gru_plus.GRU(UNITS)
    x = np.random.default_rng(8).normal(size=(BATCH, TIME, FEATURES)).astype("float32")
    with policy.override(hold_by_gate=True):
        layer(x, mask=mask_of("right", BATCH, TIME), training=True)
    assert [p.runner for p in plans] == ["bptt"] and plans[0].hold == "select"


def test_backend_policy():
    """The backends whose policy holds by the gate (measured: see
    `policy.POLICIES`)."""
    assert policy.POLICIES[BACKEND].hold_by_gate == (BACKEND in {"tensorflow"})
