"""Streaming: `step_model` run one step at a time gives the sequence model's
outputs at every step and its final states.

The expectation is a twin sequence model with the same weights whose GRUs
return every step and their final state: `keras.layers.GRU` without layer
normalization (an independent implementation), and our sequence layer
with it (checked against the float64 reference in `test_layer_norm.py`).
Where our model's last GRU returns only its last output, the twin applies
the layers after it to every step: the step model's output at step t is
what the model would give if the sequence ended at t.
"""

import keras
import numpy as np
import pytest

import keras_gru_plus
from tests.helpers import assert_covers_pairs
from tests.helpers import float64
from tests.helpers import pairwise_cases

T, BATCH, FEATURES, VOCAB = 6, 4, 5, 7
# float32: the step and the sequence round in different orders (one row's
# matmul against a block's); over two GRUs with layer normalization that
# reached 1.6e-6 on values near 0.4 (JAX 0.10), 6.3e-6 under JAX 0.6
# (Python 3.10). In float64 (below) the two agree to 1e-12.
TOLERANCE = {"atol": 1e-5, "rtol": 1e-5}

GRID = {
    "kind": ["sequential", "functional"],
    "inputs": ["frames", "masking", "embedding"],
    "stacked": [1, 2],
    "reset_after": [True, False],
    "layer_norm": [False, True],
    "last_sequences": [True, False],
    "zero_output_for_mask": [False, True],
    "between": ["none", "layer_normalization", "time_distributed"],
    "use_bias": [True, False],
}
CASES = pairwise_cases(GRID, seed=0)


def test_the_grid_covers_every_pair():
    assert_covers_pairs(GRID, CASES, shrink=20)


def _data(case, seed=0):
    rng = np.random.default_rng(seed)
    if case["inputs"] == "embedding":
        x = rng.integers(1, VOCAB, size=(BATCH, T)).astype("int32")
        x[1, 3:] = 0  # a masked tail
        x[2, 0] = 0  # a masked first step
        x[3, 2] = 0
        return x
    x = rng.normal(size=(BATCH, T, FEATURES)).astype("float32")
    if case["inputs"] == "masking":
        x[1, 3:] = 0.0
        x[2, 0] = 0.0
        x[3, 2] = 0.0
    return x


def _layers(case, gru):
    """The layers of the case in order, `gru(units, last)` making a GRU."""
    layers = []
    if case["inputs"] == "masking":
        layers.append(keras.layers.Masking())
    elif case["inputs"] == "embedding":
        layers.append(keras.layers.Embedding(VOCAB, FEATURES, mask_zero=True))
    between = {
        "none": lambda: None,
        "layer_normalization": keras.layers.LayerNormalization,
        "time_distributed": lambda: keras.layers.TimeDistributed(
            keras.layers.Dense(FEATURES)
        ),
    }[case["between"]]
    units = [6, 4][: case["stacked"]]
    for i, u in enumerate(units):
        extra = between()
        if extra is not None:
            layers.append(extra)
        layers.append(gru(u, i == len(units) - 1))
    layers.append(keras.layers.Dense(3))
    return layers


def _input(case):
    if case["inputs"] == "embedding":
        return keras.Input((None,), dtype="int32")
    return keras.Input((None, FEATURES))


def _gru_args(case):
    args = {
        "reset_after": case["reset_after"],
        "use_bias": case["use_bias"],
        "zero_output_for_mask": case["zero_output_for_mask"],
    }
    if case["layer_norm"]:
        args["layer_norm"] = True
    return args


def _model(case):
    """Our model: the last GRU returns sequences or its last output."""

    def gru(units, last):
        sequences = case["last_sequences"] or not last
        return keras_gru_plus.GRU(units, return_sequences=sequences, **_gru_args(case))

    layers = _layers(case, gru)
    if case["kind"] == "sequential":
        return keras.Sequential([_input(case)] + layers)
    inputs = x = _input(case)
    for layer in layers:
        x = layer(x)
    return keras.Model(inputs, x)


def _twin(case, model):
    """The same graph, every GRU returning every step and its final state,
    with `model`'s weights. Returns a model of `[outputs, *states]`."""
    args = _gru_args(case)
    if case["layer_norm"]:
        make = keras_gru_plus.GRU
    else:
        make = keras.layers.GRU

    def gru(units, last):
        return make(units, return_sequences=True, return_state=True, **args)

    inputs = x = _input(case)
    states = []
    for layer in _layers(case, gru):
        x = layer(x)
        if isinstance(x, (list, tuple)):
            x, state = x
            states.append(state)
    twin = keras.Model(inputs, [x] + states)
    twin.set_weights(model.get_weights())
    return twin


def _stream(step, x):
    """Runs `step` over the steps of `x` from zero states: every step's
    first output `(batch, time, ...)` and the final states."""
    states = keras_gru_plus.initial_states(step, BATCH)
    outputs = []
    for t in range(x.shape[1]):
        y, *states = step.predict_on_batch([x[:, t], *states])
        outputs.append(y)
    return np.stack(outputs, axis=1), states


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(map(str, c.values())))
def test_step_by_step_matches_the_whole_sequence(case):
    keras.utils.set_random_seed(0)
    model = _model(case)
    x = _data(case)
    model(x)
    twin = _twin(case, model)
    step = keras_gru_plus.step_model(model)
    outputs, states = _stream(step, x)
    expected, *expected_states = twin.predict_on_batch(x)
    np.testing.assert_allclose(outputs, expected, **TOLERANCE)
    assert len(states) == case["stacked"]
    for state, want in zip(states, expected_states):
        np.testing.assert_allclose(state, want, **TOLERANCE)
    full = model.predict_on_batch(x)
    last = outputs if case["last_sequences"] else outputs[:, -1]
    np.testing.assert_allclose(last, full, **TOLERANCE)


@pytest.mark.parametrize("layer_norm", [False, True])
def test_in_float64_the_steps_match_to_1e_12(layer_norm):
    with float64():
        _float64_case(layer_norm)


def _float64_case(layer_norm):
    keras.utils.set_random_seed(0)
    args = {"dtype": "float64", "layer_norm": layer_norm}
    model = keras.Sequential(
        [
            keras.Input((None, FEATURES), dtype="float64"),
            keras.layers.Masking(dtype="float64"),
            keras_gru_plus.GRU(6, return_sequences=True, **args),
            keras_gru_plus.GRU(4, return_sequences=True, reset_after=False, **args),
        ]
    )
    x = _data({"inputs": "masking"}).astype("float64")
    step = keras_gru_plus.step_model(model)
    outputs, _ = _stream(step, x)
    np.testing.assert_allclose(outputs, model.predict_on_batch(x), atol=1e-12)


def test_masked_steps_leave_the_states_unchanged():
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((None, FEATURES)),
            keras.layers.Masking(),
            keras_gru_plus.GRU(6, return_sequences=True),
            keras_gru_plus.GRU(4),
        ]
    )
    step = keras_gru_plus.step_model(model)
    rng = np.random.default_rng(1)
    states = [
        rng.normal(size=s.shape).astype("float32")
        for s in keras_gru_plus.initial_states(step, 3)
    ]
    frames = rng.normal(size=(3, FEATURES)).astype("float32")
    frames[1] = 0.0
    _, *new_states = step.predict_on_batch([frames, *states])
    # The first GRU receives the Masking layer's mask; the second receives
    # it where a GRU passes masks on, as keras.layers.GRU does (not from
    # Keras 3.16 on), and otherwise steps on the first one's output.
    keeps = [True, keras.layers.GRU(1).supports_masking]
    for old, new, kept in zip(states, new_states, keeps):
        if kept:
            np.testing.assert_array_equal(new[1], old[1])
        else:
            assert np.abs(new[1] - old[1]).max() > 1e-3
        assert np.abs(new[0] - old[0]).max() > 1e-3


def test_names_and_shapes_of_inputs_and_outputs():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((None, FEATURES), name="frames")
    h = keras_gru_plus.GRU(6, return_sequences=True, name="encoder")(inputs)
    h = keras_gru_plus.GRU(4, name="decoder")(h)
    outputs = keras.layers.Dense(2, name="head")(h)
    step = keras_gru_plus.step_model(keras.Model(inputs, outputs))
    assert [t.name for t in step.inputs] == ["frames", "encoder_state", "decoder_state"]
    assert step.output_names == ["head", "encoder_next_state", "decoder_next_state"]
    assert [tuple(t.shape) for t in step.inputs] == [
        (None, FEATURES),
        (None, 6),
        (None, 4),
    ]
    assert [tuple(t.shape) for t in step.outputs] == [(None, 2), (None, 6), (None, 4)]
    states = keras_gru_plus.initial_states(step, 5)
    assert [s.shape for s in states] == [(5, 6), (5, 4)]
    assert all(s.dtype == np.float32 and not s.any() for s in states)


def test_the_step_model_shares_the_weights():
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((None, FEATURES)), keras_gru_plus.GRU(4), keras.layers.Dense(2)]
    )
    step = keras_gru_plus.step_model(model)
    x = np.random.default_rng(0).normal(size=(BATCH, T, FEATURES)).astype("float32")
    model.set_weights([w * 0.5 for w in model.get_weights()])
    outputs, _ = _stream(step, x)
    np.testing.assert_allclose(outputs[:, -1], model.predict_on_batch(x), atol=1e-6)


def test_a_shared_layer_and_a_merge():
    keras.utils.set_random_seed(0)
    a = keras.Input((None, FEATURES), name="a")
    b = keras.Input((None, FEATURES), name="b")
    dense = keras.layers.Dense(FEATURES)
    merged = keras.layers.Concatenate()([dense(a), dense(b)])
    gru = keras_gru_plus.GRU(4, return_sequences=True)
    model = keras.Model([a, b], keras.layers.Add()([gru(merged), gru(merged)]))
    step = keras_gru_plus.step_model(model)
    assert [t.name for t in step.inputs][:2] == ["a", "b"]
    rng = np.random.default_rng(0)
    xa, xb = (rng.normal(size=(BATCH, T, FEATURES)).astype("float32") for _ in "ab")
    states = keras_gru_plus.initial_states(step, BATCH)
    assert len(states) == 2  # one per call of the shared GRU
    outputs = []
    for t in range(T):
        y, *states = step.predict_on_batch([xa[:, t], xb[:, t], *states])
        outputs.append(y)
    np.testing.assert_allclose(
        np.stack(outputs, 1), model.predict_on_batch([xa, xb]), atol=1e-6
    )


def test_per_step_layers_admits_a_lambda():
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((None, FEATURES)),
            keras.layers.Lambda(lambda v: v * 2.0),
            keras_gru_plus.GRU(4, return_sequences=True),
        ]
    )
    with pytest.raises(ValueError, match="Lambda"):
        keras_gru_plus.step_model(model)
    step = keras_gru_plus.step_model(model, per_step_layers=(keras.layers.Lambda,))
    x = np.random.default_rng(0).normal(size=(BATCH, T, FEATURES)).astype("float32")
    outputs, _ = _stream(step, x)
    np.testing.assert_allclose(outputs, model.predict_on_batch(x), atol=1e-6)


@pytest.mark.parametrize(
    "middle, message",
    [
        (
            lambda: keras.layers.Bidirectional(
                keras_gru_plus.GRU(3, return_sequences=True)
            ),
            "Bidirectional",
        ),
        (
            lambda: keras_gru_plus.GRU(3, return_sequences=True, go_backwards=True),
            "go_backwards",
        ),
        (lambda: keras.layers.Conv1D(3, 3, padding="same"), "convolution over time"),
        (lambda: keras.layers.Conv1D(3, 2, padding="causal"), "buffer of past inputs"),
        (lambda: keras.layers.LayerNormalization(axis=1), "time axis"),
        (lambda: keras.layers.GRU(3, return_sequences=True), "keras.layers.GRU"),
        (lambda: keras.layers.MaxPooling1D(2), "pools"),
    ],
    ids=[
        "bidirectional",
        "go_backwards",
        "conv1d",
        "causal_conv1d",
        "norm_over_time",
        "keras_gru",
        "pooling",
    ],
)
def test_a_layer_that_mixes_steps_is_named(middle, message):
    layer = middle()
    model = keras.Sequential([keras.Input((T, FEATURES)), layer, keras_gru_plus.GRU(4)])
    with pytest.raises(ValueError, match=message) as info:
        keras_gru_plus.step_model(model)
    assert repr(layer.name) in str(info.value) or layer.name in str(info.value)


def test_a_pooling_over_time_is_named():
    model = keras.Sequential(
        [
            keras.Input((T, FEATURES)),
            keras_gru_plus.GRU(4, return_sequences=True),
            keras.layers.GlobalAveragePooling1D(name="pool"),
        ]
    )
    with pytest.raises(ValueError, match="'pool'.*every time step"):
        keras_gru_plus.step_model(model)


def test_an_initial_state_from_the_graph_is_refused():
    inputs = keras.Input((T, FEATURES))
    h0 = keras.Input((4,))
    outputs = keras_gru_plus.GRU(4, name="decoder")(inputs, initial_state=h0)
    with pytest.raises(ValueError, match="'decoder'.*initial state"):
        keras_gru_plus.step_model(keras.Model([inputs, h0], outputs))


def test_bad_arguments():
    with pytest.raises(TypeError, match="keras.Model"):
        keras_gru_plus.step_model(keras_gru_plus.GRU(3))
    unbuilt = keras.Sequential([keras_gru_plus.GRU(3)])
    with pytest.raises(ValueError, match="not built"):
        keras_gru_plus.step_model(unbuilt)
    plain = keras.Sequential([keras.Input((T, FEATURES)), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="no StepGRU"):
        keras_gru_plus.initial_states(plain)
    step = keras_gru_plus.step_model(
        keras.Sequential([keras.Input((T, FEATURES)), keras_gru_plus.GRU(3)])
    )
    with pytest.raises(ValueError, match="batch_size.*got 0"):
        keras_gru_plus.initial_states(step, 0)


def test_step_gru_checks_its_inputs():
    gru = keras_gru_plus.GRU(4)
    gru(np.zeros((2, 3, FEATURES), "float32"))
    step = keras_gru_plus.StepGRU(gru)
    with pytest.raises(ValueError, match=r"inputs.*\(batch, 5\).*\(2, 3, 5\)"):
        step(np.zeros((2, 3, FEATURES), "float32"), np.zeros((2, 4), "float32"))
    with pytest.raises(ValueError, match=r"`state`.*\(2, 4\).*\(2, 3\)"):
        step(np.zeros((2, FEATURES), "float32"), np.zeros((2, 3), "float32"))
    with pytest.raises(TypeError, match="keras_gru_plus.GRU"):
        keras_gru_plus.StepGRU(keras.layers.Dense(3))


def test_stream_states_keep_one_state_per_stream():
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((None, FEATURES)), keras_gru_plus.GRU(4), keras.layers.Dense(2)]
    )
    step = keras_gru_plus.step_model(model)
    rng = np.random.default_rng(0)
    sequences = {
        s: rng.normal(size=(1, n, FEATURES)).astype("float32")
        for s, n in (("a", 5), ("b", 3), ("c", 4))
    }
    streams = keras_gru_plus.StreamStates(step)
    read = {s: 0 for s in sequences}
    last = {}
    # Streams send frames at their own pace: a, b and c in changing groups.
    for group in (
        ["a"],
        ["a", "b"],
        ["c", "b", "a"],
        ["c"],
        ["a", "c", "b"],
        ["c", "a"],
    ):
        frames = np.concatenate([sequences[s][:, read[s]] for s in group])
        y, *new_states = step.predict_on_batch([frames, *streams.gather(group)])
        streams.scatter(group, new_states)
        for row, s in enumerate(group):
            read[s] += 1
            last[s] = y[row]
    assert read == {"a": 5, "b": 3, "c": 4}
    for s, x in sequences.items():
        np.testing.assert_allclose(last[s], model.predict_on_batch(x)[0], atol=1e-6)
    assert sorted(streams) == ["a", "b", "c"] and len(streams) == 3
    streams.reset("a")
    assert "a" not in streams
    np.testing.assert_array_equal(streams.gather(["a"])[0], np.zeros((1, 4)))
    with pytest.raises(ValueError, match="one per GRU"):
        streams.scatter(["a"], [])
    with pytest.raises(ValueError, match=r"shape \(2, 4\)"):
        streams.scatter(["a", "b"], [np.zeros((1, 4))])


def test_the_step_model_saves_and_loads(tmp_path):
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((None, FEATURES)),
            keras.layers.Masking(),
            keras_gru_plus.GRU(6, return_sequences=True, layer_norm=True),
            keras.layers.LayerNormalization(),
            keras_gru_plus.GRU(4),
            keras.layers.Dense(2),
        ]
    )
    step = keras_gru_plus.step_model(model)
    path = str(tmp_path / "step.keras")
    step.save(path)
    loaded = keras.saving.load_model(path)
    rng = np.random.default_rng(0)
    frames = rng.normal(size=(BATCH, FEATURES)).astype("float32")
    states = [
        rng.normal(size=s.shape).astype("float32")
        for s in keras_gru_plus.initial_states(step, BATCH)
    ]
    for got, want in zip(
        loaded.predict_on_batch([frames, *states]),
        step.predict_on_batch([frames, *states]),
    ):
        np.testing.assert_allclose(got, want, atol=1e-6)


def test_step_function_runs_the_step_compiled():
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((None, FEATURES)),
            keras.layers.Masking(),
            keras_gru_plus.GRU(6, return_sequences=True, layer_norm=True),
            keras_gru_plus.GRU(4, reset_after=False),
            keras.layers.Dense(2),
        ]
    )
    step = keras_gru_plus.step_model(model)
    run = keras_gru_plus.step_function(step)
    x = _data({"inputs": "masking"})

    def streamed():
        states = keras_gru_plus.initial_states(step, BATCH)
        for t in range(T):
            y, *states = run([x[:, t], *states])
        return keras.ops.convert_to_numpy(y)

    np.testing.assert_allclose(streamed(), model.predict_on_batch(x), **TOLERANCE)
    # New weights are seen without compiling again.
    model.set_weights([w * 0.5 for w in model.get_weights()])
    np.testing.assert_allclose(streamed(), model.predict_on_batch(x), **TOLERANCE)
    # Another batch size.
    states = keras_gru_plus.initial_states(step, 2)
    y, *_ = run([x[:2, 0], *states])
    want, *_ = step.predict_on_batch([x[:2, 0], *states])
    np.testing.assert_allclose(keras.ops.convert_to_numpy(y), want, **TOLERANCE)
    with pytest.raises(TypeError, match="keras.Model"):
        keras_gru_plus.step_function(keras_gru_plus.GRU(3))
