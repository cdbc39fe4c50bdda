"""Dropout: variational masks, scaling, caching, and the Keras 2 methods."""

import keras
import numpy as np
import pytest

import keras_gru_plus
from tests import reference
from tests.helpers import to_numpy

BATCH, TIME, FEATURES, UNITS = 4, 6, 5, 3


def _layer(**kwargs):
    layer = keras_gru_plus.GRU(
        UNITS, return_sequences=True, bias_initializer="random_normal", seed=3, **kwargs
    )
    layer.build((BATCH, TIME, FEATURES))
    return layer


def _weights(layer):
    w = [to_numpy(v) for v in layer.get_weights()]
    return w[0], w[1], (w[2] if len(w) > 2 else None)


def _x(seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(BATCH, TIME, FEATURES)).astype("float32")


@pytest.mark.parametrize("reset_after", [True, False])
@pytest.mark.parametrize("implementation", [1, 2])
def test_training_applies_the_same_masks_at_every_step(reset_after, implementation):
    """The masks prepared before the call are applied at every step.

    The reference applies one fixed mask at all steps; if the layer drew a
    new mask per step, or forgot the 1/(1-rate) scale, the outputs differ.
    """
    layer = _layer(
        dropout=0.5,
        recurrent_dropout=0.4,
        reset_after=reset_after,
        implementation=implementation,
    )
    x = _x()
    count = 3 if implementation == 1 else 1
    in_masks = layer.get_dropout_mask_for_cell(x, training=True, count=count)
    rec_masks = layer.get_recurrent_dropout_mask_for_cell(x, training=True, count=count)
    to_np = (lambda m: [to_numpy(v) for v in m]) if count > 1 else to_numpy
    in_np, rec_np = to_np(in_masks), to_np(rec_masks)
    out = to_numpy(layer(x, training=True))
    kernel, recurrent_kernel, bias = _weights(layer)
    expected, _, _ = reference.gru_sequence(
        x,
        kernel,
        recurrent_kernel,
        bias,
        reset_after=reset_after,
        input_mask=in_np,
        recurrent_mask=rec_np,
    )
    np.testing.assert_allclose(out, expected, atol=1e-5)
    # The call used and then cleared the cache: the next masks are new.
    again = layer.get_dropout_mask_for_cell(x, training=True, count=count)
    first = in_np if count == 1 else in_np[0]
    second = to_numpy(again if count == 1 else again[0])
    assert not np.array_equal(first, second)


@pytest.mark.parametrize("rate", [0.2, 0.5])
def test_mask_values_are_zero_or_scaled(rate):
    layer = keras_gru_plus.GRU(UNITS, dropout=rate, recurrent_dropout=rate, seed=1)
    x = np.ones((2000, TIME, FEATURES), "float32")
    layer.build(x.shape)
    for mask, width in (
        (layer.get_dropout_mask_for_cell(x, training=True), FEATURES),
        (layer.get_recurrent_dropout_mask_for_cell(x, training=True), UNITS),
    ):
        m = to_numpy(mask)
        assert m.shape == (2000, width)
        values = set(np.unique(np.round(m, 5)).tolist())
        assert values <= {0.0, round(1.0 / (1.0 - rate), 5)}
        assert abs((m == 0).mean() - rate) < 0.03


def test_mask_methods_follow_keras_2():
    layer = keras_gru_plus.GRU(UNITS, dropout=0.3, recurrent_dropout=0.3)
    no_dropout = keras_gru_plus.GRU(UNITS)
    x = _x()
    layer.build(x.shape)
    no_dropout.build(x.shape)
    assert no_dropout.get_dropout_mask_for_cell(x, training=True) is None
    assert no_dropout.get_recurrent_dropout_mask_for_cell(x, True) is None
    # Not training: ones.
    ones = to_numpy(layer.get_dropout_mask_for_cell(x, training=False))
    np.testing.assert_array_equal(ones, np.ones((BATCH, FEATURES)))
    # Cached until reset, then drawn anew.
    a = layer.get_dropout_mask_for_cell(x, training=True)
    assert layer.get_dropout_mask_for_cell(x, training=True) is a
    layer.reset_dropout_mask()
    b = layer.get_dropout_mask_for_cell(x, training=True)
    assert b is not a
    r = layer.get_recurrent_dropout_mask_for_cell(x, training=True)
    assert layer.get_recurrent_dropout_mask_for_cell(x, True) is r
    layer.reset_recurrent_dropout_mask()
    assert layer.get_recurrent_dropout_mask_for_cell(x, True) is not r
    three = layer.get_dropout_mask_for_cell(x, training=True, count=3)
    assert isinstance(three, list) and len(three) == 3
    assert to_numpy(three[0]).shape == (BATCH, FEATURES)


def test_time_major_mask_shape():
    layer = keras_gru_plus.GRU(UNITS, dropout=0.3, time_major=True)
    x = np.swapaxes(_x(), 0, 1)
    layer.build(x.shape)
    mask = layer.get_dropout_mask_for_cell(x, training=True)
    assert tuple(to_numpy(mask).shape) == (BATCH, FEATURES)


def test_new_masks_each_training_call_and_none_in_inference():
    layer = _layer(dropout=0.5, recurrent_dropout=0.5)
    x = _x()
    a = to_numpy(layer(x, training=True))
    b = to_numpy(layer(x, training=True))
    assert not np.allclose(a, b)
    c = to_numpy(layer(x, training=False))
    d = to_numpy(layer(x))
    np.testing.assert_array_equal(c, d)


def test_dropout_trains_in_fit():
    model = keras.Sequential(
        [
            keras.Input((TIME, FEATURES)),
            keras_gru_plus.GRU(UNITS, dropout=0.5, recurrent_dropout=0.5, seed=0),
            keras.layers.Dense(1),
        ]
    )
    model.compile("adam", "mse")
    history = model.fit(_x(), np.ones((BATCH, 1)), epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))


def test_cell_in_keras_rnn_with_dropout_trains():
    """A foreign loop (keras.layers.RNN) prepares no masks: training works."""
    model = keras.Sequential(
        [
            keras.Input((TIME, FEATURES)),
            keras.layers.RNN(
                keras_gru_plus.GRUCell(
                    UNITS, dropout=0.3, recurrent_dropout=0.3, seed=0
                )
            ),
            keras.layers.Dense(1),
        ]
    )
    model.compile("adam", "mse")
    history = model.fit(_x(), np.ones((BATCH, 1)), epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))


def test_cell_in_keras_rnn_uses_one_mask_per_sequence():
    """Under keras.layers.RNN the masks drawn by get_initial_state apply at
    every step: the output equals the reference with those fixed masks."""
    cell = keras_gru_plus.GRUCell(
        UNITS,
        dropout=0.4,
        recurrent_dropout=0.3,
        bias_initializer="random_normal",
        seed=5,
    )
    rnn = keras.layers.RNN(cell, return_sequences=True)
    x = _x()
    out = to_numpy(rnn(x, training=True))
    in_mask = to_numpy(cell.get_dropout_mask_for_cell(x[:, 0], True))
    rec_mask = to_numpy(cell.get_recurrent_dropout_mask_for_cell(x[:, 0], True))
    kernel, recurrent_kernel, bias = _weights(cell)
    expected, _, _ = reference.gru_sequence(
        x,
        kernel,
        recurrent_kernel,
        bias,
        input_mask=in_mask,
        recurrent_mask=rec_mask,
    )
    np.testing.assert_allclose(out, expected, atol=1e-5)


@pytest.mark.parametrize(
    "rates",
    [
        dict(dropout=1.0),
        dict(recurrent_dropout=1.0),
        dict(dropout=1.0, recurrent_dropout=1.0),
        dict(dropout=0.3, recurrent_dropout=1.0),
    ],
    ids=["dropout", "recurrent", "both", "recurrent-only-one"],
)
def test_rate_one_loads_and_drops_nothing_like_the_keras_cell(rates):
    """keras.layers.GRU accepts and saves a rate of 1.0, and its GRUCell
    applies dropout only for 0 < rate < 1. A config holding 1.0 loads here,
    and in training the rate of 1.0 drops nothing: the output equals that
    of keras.layers.RNN(keras.layers.GRUCell) with the same rates and weights
    (and, when the other rate is 0, the inference output)."""
    theirs_layer = keras.layers.GRU(UNITS, return_sequences=True, **rates)
    ours = keras_gru_plus.GRU.from_config(theirs_layer.get_config())
    assert (ours.dropout, ours.recurrent_dropout) == (
        rates.get("dropout", 0.0),
        rates.get("recurrent_dropout", 0.0),
    )
    ours.build((BATCH, TIME, FEATURES))
    ours.set_weights(
        [np.random.default_rng(1).normal(size=w.shape) for w in ours.get_weights()]
    )
    x = _x()
    out = to_numpy(ours(x, training=True))
    assert np.all(np.isfinite(out))
    if all(rate == 1.0 for rate in rates.values()):
        np.testing.assert_allclose(out, to_numpy(ours(x, training=False)), atol=1e-6)
        cell = keras.layers.GRUCell(UNITS, **rates)
        rnn = keras.layers.RNN(cell, return_sequences=True)
        rnn.build((BATCH, TIME, FEATURES))
        rnn.set_weights(ours.get_weights())
        np.testing.assert_allclose(out, to_numpy(rnn(x, training=True)), atol=1e-5)
    else:
        # The rate below 1 still applies: training differs from inference.
        assert np.abs(out - to_numpy(ours(x, training=False))).max() > 1e-3


def test_keras_weights_file_with_rate_one_loads_into_ours(tmp_path):
    """A keras.layers.GRU(dropout=1.0) model moves to ours through its layer
    config and its weights file, predicts the same numbers and trains."""
    theirs = keras.Sequential(
        [
            keras.Input((TIME, FEATURES)),
            keras.layers.GRU(
                UNITS, dropout=1.0, recurrent_dropout=1.0, bias_initializer="ones"
            ),
        ]
    )
    path = str(tmp_path / "theirs.weights.h5")
    theirs.save_weights(path)
    ours = keras.Sequential(
        [
            keras.Input((TIME, FEATURES)),
            keras_gru_plus.GRU.from_config(theirs.layers[0].get_config()),
        ]
    )
    ours.load_weights(path)
    assert (ours.layers[0].dropout, ours.layers[0].recurrent_dropout) == (1.0, 1.0)
    x = _x()
    np.testing.assert_allclose(
        ours.predict(x, verbose=0), theirs.predict(x, verbose=0), atol=1e-6
    )
    ours.compile("sgd", "mse")
    history = ours.fit(x, np.ones((BATCH, UNITS)), epochs=1, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
