"""Bad input raises a clear ValueError/TypeError before any backend op."""

import math

import keras
import numpy as np
import pytest

import keras_gru_plus

X = np.zeros((2, 5, 3), "float32")

# (kwargs, exception, words the message must contain)
BAD_ARGUMENTS = [
    (dict(units=0), ValueError, ["`units`", "positive integer", "0"]),
    (dict(units=-3), ValueError, ["`units`", "-3"]),
    (dict(units=2.5), TypeError, ["`units`", "2.5"]),
    (dict(units="4"), TypeError, ["`units`", "'4'"]),
    (dict(units=True), TypeError, ["`units`", "True"]),
    (dict(units=4, dropout=-0.1), ValueError, ["`dropout`", "[0, 1]", "-0.1"]),
    (dict(units=4, dropout=1.01), ValueError, ["`dropout`", "1.01"]),
    (dict(units=4, dropout="0.5"), TypeError, ["`dropout`", "'0.5'"]),
    (dict(units=4, recurrent_dropout=1.5), ValueError, ["`recurrent_dropout`", "1.5"]),
    (
        dict(units=4, recurrent_dropout=math.nan),
        ValueError,
        ["`recurrent_dropout`", "nan"],
    ),
    (dict(units=4, foo=1), TypeError, ["`foo`", "1"]),
    (dict(units=4, return_sequences="yes"), TypeError, ["`return_sequences`", "'yes'"]),
    (dict(units=4, time_major=None), TypeError, ["`time_major`", "None"]),
    (dict(units=4, implementation=5), ValueError, ["`implementation`", "5"]),
    (dict(units=4, use_cudnn="maybe"), ValueError, ["`use_cudnn`", "'maybe'"]),
    (dict(units=4, seed="x"), TypeError, ["`seed`", "'x'"]),
    (dict(units=4, activation="nope"), ValueError, ["nope"]),
]


CELL_ARGUMENTS = {
    "units",
    "dropout",
    "recurrent_dropout",
    "foo",
    "implementation",
    "seed",
    "activation",
}
CASES = [(keras_gru_plus.GRU, k, e, w) for k, e, w in BAD_ARGUMENTS] + [
    (keras_gru_plus.GRUCell, k, e, w)
    for k, e, w in BAD_ARGUMENTS
    if set(k) <= CELL_ARGUMENTS
]


@pytest.mark.parametrize(
    "cls,kwargs,error,words",
    CASES,
    ids=[f"{c.__name__}-{sorted(k.items())}" for c, k, _, _ in CASES],
)
def test_bad_constructor_argument(cls, kwargs, error, words):
    with pytest.raises(error) as info:
        cls(**kwargs)
    for word in words:
        assert word in str(info.value), (word, str(info.value))


def _built(**kwargs):
    layer = keras_gru_plus.GRU(4, **kwargs)
    layer(X)
    return layer


BAD_CALLS = [
    (
        "rank 2 inputs",
        lambda: _built()(np.zeros((2, 3), "float32")),
        ["`inputs`", "3-D", "(2, 3)"],
    ),
    (
        "rank 4 inputs",
        lambda: keras_gru_plus.GRU(4)(np.zeros((2, 5, 3, 1), "float32")),
        ["`inputs`", "(2, 5, 3, 1)"],
    ),
    (
        "features after build",
        lambda: _built()(np.zeros((2, 5, 7), "float32")),
        ["`inputs`", "3 features", "(2, 5, 7)"],
    ),
    (
        "mask time",
        lambda: _built()(X, mask=np.ones((2, 6), bool)),
        ["`mask`", "(2, 5)", "(2, 6)"],
    ),
    (
        "mask batch",
        lambda: _built()(X, mask=np.ones((3, 5), bool)),
        ["`mask`", "(3, 5)"],
    ),
    (
        "mask rank",
        lambda: _built()(X, mask=np.ones((2, 5, 1), bool)),
        ["`mask`", "(2, 5, 1)"],
    ),
    (
        "time-major mask",
        lambda: keras_gru_plus.GRU(4, time_major=True)(
            np.zeros((5, 2, 3), "float32"), mask=np.ones((2, 5), bool)
        ),
        ["`mask`", "(time, batch)", "(2, 5)"],
    ),
    (
        "state shape",
        lambda: _built()(X, initial_state=np.zeros((2, 5))),
        ["`initial_state`", "(2, 4)", "(2, 5)"],
    ),
    (
        "state batch",
        lambda: _built()(X, initial_state=np.zeros((3, 4))),
        ["`initial_state`", "(3, 4)"],
    ),
    (
        "state count",
        lambda: _built()(X, initial_state=[np.zeros((2, 4)), np.zeros((2, 4))]),
        ["`initial_state`", "one state", "2"],
    ),
    (
        "stateful batch",
        lambda: _built(stateful=True)(np.zeros((3, 5, 3), "float32")),
        ["batch size 2", "(3, 5, 3)"],
    ),
    (
        "reset_states shape",
        lambda: _built(stateful=True).reset_states(np.zeros((2, 9))),
        ["`states`", "(2, 9)"],
    ),
    (
        "string inputs",
        lambda: _built()(np.array([[["a"] * 3] * 5] * 2)),
        ["`inputs`", "tensor of numbers", "<U1"],
    ),
]


@pytest.mark.parametrize("name,call,words", BAD_CALLS, ids=[n for n, _, _ in BAD_CALLS])
def test_bad_call_input(name, call, words):
    with pytest.raises(ValueError) as info:
        call()
    for word in words:
        assert word in str(info.value), (word, str(info.value))


def test_unroll_needs_known_time():
    inputs = keras.Input((None, 3))
    with pytest.raises(ValueError, match="unroll"):
        keras_gru_plus.GRU(4, unroll=True)(inputs)


def test_stateful_needs_static_batch():
    with pytest.raises(ValueError, match="stateful"):
        keras_gru_plus.GRU(4, stateful=True)(keras.Input((5, 3)))


def test_integer_inputs_are_cast():
    """Integer inputs are computed in the layer's float dtype (documented)."""
    layer = keras_gru_plus.GRU(4)
    out = layer(np.ones((2, 5, 3), "int32"))
    assert keras.backend.standardize_dtype(out.dtype) == "float32"


def test_nan_inputs_give_nan_outputs_and_masked_nan_steps_are_skipped():
    """NaN propagates like any value; a masked NaN step changes nothing."""
    layer = keras_gru_plus.GRU(4, return_sequences=True)
    x = np.random.default_rng(0).normal(size=(2, 5, 3)).astype("float32")
    clean = keras.ops.convert_to_numpy(layer(x))
    x_nan = x.copy()
    x_nan[0, 4] = np.nan
    out = keras.ops.convert_to_numpy(layer(x_nan))
    assert np.isnan(out[0, 4]).all() and not np.isnan(out[1]).any()
    mask = np.ones((2, 5), bool)
    mask[0, 4] = False
    masked = keras.ops.convert_to_numpy(layer(x_nan, mask=mask))
    assert not np.isnan(masked).any()
    np.testing.assert_allclose(masked[0, :4], clean[0, :4], atol=1e-6)


def test_the_input_shape_warning_points_at_the_callers_line():
    """Keras warns about `input_shape`; the warning names the line that
    built the layer (this file), not the library's."""
    with pytest.warns(UserWarning, match="input_shape") as caught:
        keras_gru_plus.GRU(3, input_shape=(5, 2))
    assert [w.filename for w in caught if "input_shape" in str(w.message)] == [__file__]
