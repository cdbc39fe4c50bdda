"""Initial state, statefulness and the Keras 2 `reset_states(states)`."""

import keras
import numpy as np
import pytest

import keras_gru_plus
from tests import reference
from tests.helpers import BACKEND
from tests.helpers import to_numpy
from tests.helpers import twin_layers

CONST = dict(
    kernel_initializer=keras.initializers.Constant(0.01),
    recurrent_initializer=keras.initializers.Constant(0.02),
    bias_initializer=keras.initializers.Constant(0.03),
)


def _pair(units, **kwargs):
    return (
        keras_gru_plus.GRU(units, **CONST, **kwargs),
        keras.layers.GRU(units, **CONST, **kwargs),
    )


def test_statefulness_matches_keras():
    """The scenario of Keras' own `test_statefulness`, both layers live."""
    sequence = np.arange(24).reshape((2, 3, 4)).astype("float32")
    ours, theirs = _pair(4, stateful=True)
    for layer in (ours, theirs):
        layer(sequence)
    np.testing.assert_allclose(
        to_numpy(ours(sequence)), to_numpy(theirs(sequence)), atol=1e-5
    )
    ours.reset_state()
    theirs.reset_state()
    for layer in (ours, theirs):
        layer(sequence)
    np.testing.assert_allclose(
        to_numpy(ours(sequence)), to_numpy(theirs(sequence)), atol=1e-5
    )


@pytest.mark.parametrize("go_backwards", [False, True])
def test_initial_state_matches_keras(go_backwards):
    sequence = np.arange(24).reshape((2, 4, 3)).astype("float32")
    initial_state = np.arange(4).reshape((2, 2)).astype("float32")
    ours, theirs = _pair(2, go_backwards=go_backwards, return_state=True)
    for o, t in zip(
        ours(sequence, initial_state=initial_state),
        theirs(sequence, initial_state=initial_state),
    ):
        np.testing.assert_allclose(to_numpy(o), to_numpy(t), atol=1e-5)
    # A list of one state is accepted too.
    np.testing.assert_allclose(
        to_numpy(ours(sequence, initial_state=[initial_state])[0]),
        to_numpy(theirs(sequence, initial_state=initial_state)[0]),
        atol=1e-5,
    )


def test_initial_state_is_the_second_positional_argument():
    """As in keras.layers.GRU.call(sequences, initial_state, mask, training)."""
    x = np.random.default_rng(0).normal(size=(2, 5, 3)).astype("float32")
    h0 = np.random.default_rng(1).normal(size=(2, 5)).astype("float32")
    ours, theirs = _pair(5)
    positional = to_numpy(ours(x, h0))
    np.testing.assert_allclose(positional, to_numpy(ours(x, initial_state=h0)), atol=0)
    np.testing.assert_allclose(positional, to_numpy(theirs(x, h0)), atol=1e-5)


def test_reset_states_with_numpy_value():
    """Keras 2: `reset_states(states)` sets the state to the given array."""
    x = np.random.default_rng(0).normal(size=(3, 5, 4)).astype("float32")
    layer = keras_gru_plus.GRU(6, stateful=True)
    layer(x)
    new_state = np.random.default_rng(1).normal(size=(3, 6)).astype("float32")
    layer.reset_states(new_state)
    np.testing.assert_allclose(to_numpy(layer.states[0]), new_state)
    w = layer.get_weights()
    expected, _, _ = reference.gru_sequence(
        x, w[0], w[1], w[2], initial_state=new_state
    )
    np.testing.assert_allclose(to_numpy(layer(x)), expected[:, -1], atol=1e-5)
    layer.reset_states([new_state])
    np.testing.assert_allclose(to_numpy(layer.states[0]), new_state)
    layer.reset_states()
    np.testing.assert_array_equal(to_numpy(layer.states[0]), 0)


def test_reset_states_errors():
    layer = keras_gru_plus.GRU(6, stateful=True)
    with pytest.raises(ValueError, match="not built"):
        layer.reset_states(np.zeros((3, 6)))
    layer(np.zeros((3, 5, 4), "float32"))
    with pytest.raises(ValueError, match=r"`states`.*\(3, 6\).*\(2, 6\)"):
        layer.reset_states(np.zeros((2, 6)))
    stateless = keras_gru_plus.GRU(6)
    stateless(np.zeros((3, 5, 4), "float32"))
    with pytest.raises(ValueError, match="stateful"):
        stateless.reset_states(np.zeros((3, 6)))
    stateless.reset_states()  # no state: nothing to reset, no error


def test_state_is_not_a_weight():
    ours, theirs = _pair(3, stateful=True)
    x = np.ones((2, 4, 5), "float32")
    ours(x)
    theirs(x)
    assert len(ours.weights) == len(theirs.weights) == 3
    assert len(ours.non_trainable_weights) == 0


def test_stateful_fit_keeps_state_across_batches():
    """With shuffle=False the state flows from batch to batch in `fit`."""
    x = np.random.default_rng(0).normal(size=(4, 3, 2)).astype("float32")
    y = np.zeros((4, 1), "float32")
    model = keras.Sequential(
        [
            keras.Input((3, 2), batch_size=2),
            keras_gru_plus.GRU(3, stateful=True),
            keras.layers.Dense(1),
        ]
    )
    model.compile("sgd", "mse")
    model.fit(x, y, batch_size=2, shuffle=False, epochs=1, verbose=0)
    gru = model.layers[0]
    if BACKEND != "jax":
        # JAX runs `fit` statelessly; like keras.layers.GRU, the state
        # variable is not carried out of the compiled step there.
        assert np.abs(to_numpy(gru.states[0])).sum() > 0
    gru.reset_state()
    np.testing.assert_array_equal(to_numpy(gru.states[0]), 0)


@pytest.mark.skipif(
    BACKEND != "tensorflow",
    reason="tf.function with a symbolic batch size is TensorFlow only",
)
def test_stateful_with_symbolic_batch_size():
    import tensorflow as tf

    layer = keras_gru_plus.GRU(5, stateful=True)
    x = np.ones((2, 10, 10), np.float32)
    layer(x, training=True)

    @tf.function(input_signature=[tf.TensorSpec((None, 10, 10), tf.float32)])
    def f(inputs):
        return layer(inputs, training=True)

    assert tuple(f(x).shape) == (2, 5)


def test_stateful_batch_mismatch_raises():
    layer = keras_gru_plus.GRU(3, stateful=True)
    layer(np.zeros((2, 4, 5), "float32"))
    with pytest.raises(ValueError, match=r"batch size 2.*\(3, 4, 5\)"):
        layer(np.zeros((3, 4, 5), "float32"))


def test_twin_stateful_time_major():
    """time_major with stateful: state per batch row, layout transposed."""
    x = np.random.default_rng(0).normal(size=(2, 5, 4)).astype("float32")
    ours, theirs, _ = twin_layers(
        (2, 5, 4),
        dict(units=3, stateful=True, time_major=True, return_sequences=True),
    )
    xt = np.swapaxes(x, 0, 1)
    for _ in range(2):
        np.testing.assert_allclose(
            np.swapaxes(to_numpy(ours(xt)), 0, 1),
            to_numpy(theirs(x)),
            atol=1e-5,
        )
