"""`keras_gru_plus.interop`: PyTorch, Keras 2 configs, CuDNNGRU biases, models.

Expected numbers come from `torch.nn.GRU` itself or from `keras.layers.GRU`
with the same weights, never from our layer. Tests that need PyTorch are
skipped where it is not installed; the others run on every backend.
"""

import doctest
import itertools

import keras
import numpy as np
import pytest

import keras_gru_plus
from keras_gru_plus import interop
from tests.helpers import to_numpy

INPUT_SIZE, UNITS, BATCH, TIME = 3, 4, 2, 5


def _torch():
    return pytest.importorskip(
        "torch", reason="torch is not installed in this environment"
    )


def _random_weights(layer, seed):
    rng = np.random.default_rng(seed)
    layer.set_weights(
        [
            rng.normal(scale=0.4, size=w.shape).astype("float32")
            for w in layer.get_weights()
        ]
    )


def _torch_output(module, x):
    torch = _torch()
    with torch.no_grad():
        return module(torch.from_numpy(x))[0].numpy()


def _grus(layer):
    """The GRU layers inside what `from_torch` returns."""
    members = layer.layers if isinstance(layer, keras.Sequential) else [layer]
    found = []
    for member in members:
        if isinstance(member, keras.layers.Bidirectional):
            found += [member.forward_layer, member.backward_layer]
        elif isinstance(member, (keras.layers.GRU, keras_gru_plus.GRU)):
            found.append(member)
    return found


# From PyTorch, and back.


@pytest.mark.parametrize(
    "num_layers, bidirectional, bias, batch_first",
    list(itertools.product([1, 2], [False, True], [False, True], [False, True])),
)
def test_from_torch_matches_torch_and_round_trips(
    num_layers, bidirectional, bias, batch_first
):
    torch = _torch()
    torch.manual_seed(num_layers * 8 + bidirectional * 4 + bias * 2 + batch_first)
    kwargs = dict(
        input_size=INPUT_SIZE,
        hidden_size=UNITS,
        num_layers=num_layers,
        bias=bias,
        batch_first=batch_first,
        bidirectional=bidirectional,
        dropout=0.25 if num_layers > 1 else 0.0,
    )
    module = torch.nn.GRU(**kwargs).eval()
    shape = (BATCH, TIME, INPUT_SIZE) if batch_first else (TIME, BATCH, INPUT_SIZE)
    x = np.random.default_rng(1).normal(size=shape).astype("float32")
    expected = _torch_output(module, x)

    layer = interop.from_torch(module)
    grus = _grus(layer)
    assert len(grus) == num_layers * (2 if bidirectional else 1)
    assert all(isinstance(g, keras_gru_plus.GRU) for g in grus)
    if num_layers == 1 and not bidirectional:
        assert isinstance(layer, keras_gru_plus.GRU)
        assert layer.time_major is (not batch_first)
    if num_layers == 1 and bidirectional and batch_first:
        assert isinstance(layer, keras.layers.Bidirectional)
        assert layer.merge_mode == "concat"
    got = to_numpy(layer(x))
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, atol=1e-5)

    state = interop.to_torch_state_dict(layer)
    original = module.state_dict()
    assert set(state) == set(original)
    for name, value in state.items():
        assert isinstance(value, torch.Tensor)
        assert torch.equal(value, original[name]), name
    fresh = torch.nn.GRU(**kwargs).eval()
    fresh.load_state_dict(state)  # strict: every key, no extra one
    np.testing.assert_allclose(_torch_output(fresh, x), expected, atol=1e-6)


def test_from_torch_rejects_other_modules():
    # No torch needed: nothing can be a torch.nn.GRU without torch.
    with pytest.raises(ValueError, match="`module`.*torch.nn.GRU"):
        interop.from_torch("gru")
    with pytest.raises(ValueError, match="`module`"):
        interop.from_torch(keras.layers.GRU(4))
    torch = _torch()
    with pytest.raises(ValueError, match="`module`.*LSTM"):
        interop.from_torch(torch.nn.LSTM(3, 4))
    module = torch.nn.GRU(3, 4)
    module.proj_size = 2  # torch refuses it at construction for a GRU
    with pytest.raises(ValueError, match="proj_size=2"):
        interop.from_torch(module)


def _keras_builtin(structure, use_bias, seed):
    """A built model of `keras.layers.GRU`s and its torch.nn.GRU arguments."""
    gru = lambda: keras.layers.GRU(  # noqa: E731
        UNITS, return_sequences=True, use_bias=use_bias
    )
    if structure == "single":
        layer = gru()
        layers, bidirectional = 1, False
    elif structure == "bidirectional":
        layer = keras.layers.Bidirectional(gru())
        layers, bidirectional = 1, True
    elif structure == "stack":
        layer = keras.Sequential([gru(), gru()])
        layers, bidirectional = 2, False
    else:
        layer = keras.Sequential(
            [
                keras.layers.Bidirectional(gru()),
                keras.layers.Dropout(0.5),
                keras.layers.Bidirectional(gru()),
            ]
        )
        layers, bidirectional = 2, True
    layer.build((None, None, INPUT_SIZE))
    _random_weights(layer, seed)
    return layer, dict(num_layers=layers, bidirectional=bidirectional, bias=use_bias)


@pytest.mark.parametrize(
    "structure, use_bias",
    [
        ("single", True),
        ("single", False),
        ("bidirectional", True),
        ("stack", False),
        ("bidirectional_stack", True),
    ],
)
def test_to_torch_state_dict_matches_builtin_keras(structure, use_bias):
    torch = _torch()
    layer, kwargs = _keras_builtin(structure, use_bias, seed=3)
    x = (
        np.random.default_rng(2)
        .normal(size=(BATCH, TIME, INPUT_SIZE))
        .astype("float32")
    )
    expected = to_numpy(layer(x))
    module = torch.nn.GRU(INPUT_SIZE, UNITS, batch_first=True, **kwargs)
    state = interop.to_torch_state_dict(layer)
    module.load_state_dict(state)
    assert not use_bias or "bias_ih_l0" in state
    assert use_bias or not any(name.startswith("bias") for name in state)
    np.testing.assert_allclose(_torch_output(module.eval(), x), expected, atol=1e-5)


def _built(layer, shape=(None, None, INPUT_SIZE)):
    layer.build(shape)
    return layer


@pytest.mark.parametrize(
    "make, match",
    [
        (
            lambda: _built(keras_gru_plus.GRU(4, reset_after=False)),
            "reset_after=False.*no such variant",
        ),
        (
            lambda: _built(
                keras.layers.Bidirectional(keras.layers.GRU(4, reset_after=False))
            ),
            "reset_after=False",
        ),
        (lambda: keras_gru_plus.GRU(4), "not built"),
        (lambda: _built(keras.layers.GRU(4, activation="relu")), "activation=.*tanh"),
        (lambda: _built(keras_gru_plus.GRU(4, go_backwards=True)), "go_backwards"),
        (
            lambda: _built(
                keras.layers.Bidirectional(keras_gru_plus.GRU(4), merge_mode="sum")
            ),
            "merge_mode",
        ),
        (
            lambda: _built(
                keras.Sequential(
                    [
                        keras_gru_plus.GRU(4, return_sequences=True),
                        keras_gru_plus.GRU(5),
                    ]
                )
            ),
            "hidden_size",
        ),
        (lambda: _built(keras.layers.Dense(4)), "`layer`.*Dense"),
    ],
)
def test_to_torch_state_dict_rejects(make, match):
    _torch()
    with pytest.raises(ValueError, match=match):
        interop.to_torch_state_dict(make())


# CuDNNGRU biases.


def test_cudnn_bias_layout_and_round_trip():
    units = 3
    flat = np.arange(6 * units, dtype="float32")
    bias = interop.cudnn_bias_to_gru(flat)
    assert bias.shape == (2, 3 * units)
    # Keras 2 (`_convert_rnn_weights`): input bias first, recurrent second.
    np.testing.assert_array_equal(bias[0], flat[: 3 * units])
    np.testing.assert_array_equal(bias[1], flat[3 * units :])
    np.testing.assert_array_equal(interop.gru_bias_to_cudnn(bias), flat)

    # A real layer's bias survives the trip.
    layer = _built(keras.layers.GRU(units))
    _random_weights(layer, seed=4)
    gru_bias = layer.get_weights()[2]
    flat = interop.gru_bias_to_cudnn(layer.cell.bias)
    assert flat.shape == (6 * units,)
    np.testing.assert_array_equal(interop.cudnn_bias_to_gru(flat), gru_bias)


@pytest.mark.parametrize(
    "function, shape",
    [
        (interop.cudnn_bias_to_gru, (10,)),
        (interop.cudnn_bias_to_gru, (0,)),
        (interop.cudnn_bias_to_gru, (2, 6)),
        (interop.gru_bias_to_cudnn, (12,)),
        (interop.gru_bias_to_cudnn, (3, 6)),
        (interop.gru_bias_to_cudnn, (2, 5)),
        (interop.gru_bias_to_cudnn, (2, 0)),
    ],
)
def test_cudnn_bias_bad_shapes(function, shape):
    with pytest.raises(
        ValueError,
        match=r"`bias`.*" + str(shape).replace("(", r"\(").replace(")", r"\)"),
    ):
        function(np.zeros(shape, "float32"))


# Keras 2 configs.


def _initializer(name, **config):
    return {"class_name": name, "config": config}


# As tf.keras 2.x wrote them (`model.to_json()`), apart from the values.
KERAS2_GRU = {
    "class_name": "GRU",
    "config": {
        "name": "gru_1",
        "trainable": True,
        "batch_input_shape": [None, None, INPUT_SIZE],
        "dtype": "float32",
        "return_sequences": True,
        "return_state": False,
        "go_backwards": False,
        "stateful": False,
        "unroll": False,
        "time_major": True,
        "units": UNITS,
        "activation": "tanh",
        "recurrent_activation": "sigmoid",
        "use_bias": True,
        "kernel_initializer": _initializer("GlorotUniform", seed=None),
        "recurrent_initializer": _initializer("Orthogonal", gain=1.0, seed=None),
        "bias_initializer": _initializer("Zeros"),
        "kernel_regularizer": _initializer("L2", l2=0.009999999776482582),
        "recurrent_regularizer": None,
        "bias_regularizer": None,
        "activity_regularizer": None,
        "kernel_constraint": None,
        "recurrent_constraint": None,
        "bias_constraint": None,
        "dropout": 0.0,
        "recurrent_dropout": 0.0,
        "implementation": 1,
        "reset_after": False,
    },
}

KERAS2_CUDNN_GRU = {
    "class_name": "CuDNNGRU",
    "config": {
        "name": "cu_dnngru",
        "trainable": True,
        "batch_input_shape": [None, TIME, INPUT_SIZE],
        "dtype": "float32",
        "return_sequences": False,
        "return_state": False,
        "go_backwards": False,
        "stateful": False,
        "time_major": False,
        "units": UNITS,
        "kernel_initializer": _initializer("GlorotUniform", seed=None),
        "recurrent_initializer": _initializer("Orthogonal", gain=1.0, seed=None),
        "bias_initializer": _initializer("Zeros"),
        "kernel_regularizer": None,
        "recurrent_regularizer": None,
        "bias_regularizer": None,
        "activity_regularizer": None,
        "kernel_constraint": None,
        "recurrent_constraint": None,
        "bias_constraint": None,
    },
}

X = np.random.default_rng(5).normal(size=(BATCH, TIME, INPUT_SIZE)).astype("float32")


@pytest.mark.filterwarnings("ignore:Do not pass an `input_shape`")
def test_from_keras2_config_gru():
    before = repr(KERAS2_GRU)
    layer = interop.from_keras2_config(KERAS2_GRU)
    assert repr(KERAS2_GRU) == before  # not modified
    assert isinstance(layer, keras_gru_plus.GRU)
    assert (layer.name, layer.units, layer.time_major) == ("gru_1", UNITS, True)
    assert layer.implementation == 1 and layer.reset_after is False
    assert layer.return_sequences is True
    assert isinstance(layer.kernel_initializer, keras.initializers.GlorotUniform)
    assert isinstance(layer.kernel_regularizer, keras.regularizers.L2)
    np.testing.assert_allclose(layer.kernel_regularizer.l2, 0.01, rtol=1e-6)
    # The bare config gives the same layer.
    bare = interop.from_keras2_config(KERAS2_GRU["config"])
    assert bare.get_config() == layer.get_config()

    # Numbers: keras.layers.GRU with the same weights, batch-major input.
    builtin = _built(keras.layers.GRU(UNITS, reset_after=False, return_sequences=True))
    _random_weights(builtin, seed=6)
    layer.build((None, None, INPUT_SIZE))
    layer.set_weights(builtin.get_weights())
    got = to_numpy(layer(np.transpose(X, (1, 0, 2))))
    np.testing.assert_allclose(
        np.transpose(got, (1, 0, 2)), to_numpy(builtin(X)), atol=1e-5
    )


@pytest.mark.filterwarnings("ignore:Do not pass an `input_shape`")
def test_from_keras2_config_cudnn_gru():
    layer = interop.from_keras2_config(KERAS2_CUDNN_GRU)
    assert isinstance(layer, keras_gru_plus.GRU)
    assert layer.reset_after is True
    assert keras.activations.serialize(layer.activation) == "tanh"
    assert keras.activations.serialize(layer.recurrent_activation) == ("sigmoid")
    assert layer.time_major is False
    builtin = _built(keras.layers.GRU(UNITS, reset_after=True))
    _random_weights(builtin, seed=7)
    kernel, recurrent, bias = builtin.get_weights()
    flat = bias.reshape(-1)  # as a CuDNNGRU weight file holds it
    layer.build((None, TIME, INPUT_SIZE))
    layer.set_weights([kernel, recurrent, interop.cudnn_bias_to_gru(flat)])
    np.testing.assert_allclose(to_numpy(layer(X)), to_numpy(builtin(X)), atol=1e-5)


def test_from_keras2_config_rejects():
    with pytest.raises(ValueError, match="`config`.*LSTM"):
        interop.from_keras2_config({"class_name": "LSTM", "config": {}})
    with pytest.raises(ValueError, match="`config`"):
        interop.from_keras2_config([("units", 4)])
    with pytest.raises(ValueError, match="`config`"):
        interop.from_keras2_config({"class_name": "GRU", "config": None})
    with pytest.warns(UserWarning, match="hard_sigmoid"):
        interop.from_keras2_config({"units": 2, "recurrent_activation": "hard_sigmoid"})


# Whole models.


def _weights(model):
    return [np.array(w) for w in model.get_weights()]


def _replace_and_check(model, x):
    """`replace_gru(model)`, checked against the original model."""
    before = _weights(model)
    expected = to_numpy(model.predict(x, verbose=0))
    copy = interop.replace_gru(model)
    inner = []
    for layer in copy.layers:
        if isinstance(layer, keras.layers.Bidirectional):
            inner += [layer.forward_layer, layer.backward_layer]
        else:
            inner.append(layer)
    assert not any(isinstance(layer, keras.layers.GRU) for layer in inner)
    assert any(isinstance(layer, keras_gru_plus.GRU) for layer in inner)
    np.testing.assert_allclose(
        to_numpy(copy.predict(x, verbose=0)), expected, atol=1e-5
    )
    # The original keeps its weights and its numbers.
    after = _weights(model)
    assert len(before) == len(after)
    for b, a in zip(before, after):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(to_numpy(model.predict(x, verbose=0)), expected)
    return copy


def test_replace_gru_sequential_with_embedding_mask():
    model = keras.Sequential(
        [
            keras.Input((TIME,), dtype="int32"),
            keras.layers.Embedding(10, INPUT_SIZE, mask_zero=True),
            keras.layers.GRU(UNITS),
            keras.layers.Dense(2),
        ]
    )
    _random_weights(model, seed=8)
    tokens = np.array([[3, 1, 4, 0, 0], [5, 9, 2, 6, 5]], "int32")
    copy = _replace_and_check(model, tokens)
    assert isinstance(copy, keras.Sequential)
    assert isinstance(model.layers[1], keras.layers.GRU)
    assert isinstance(copy.layers[1], keras_gru_plus.GRU)
    assert copy.layers[1].get_config()["units"] == UNITS


def test_replace_gru_functional_with_bidirectional():
    inputs = keras.Input((TIME, INPUT_SIZE))
    hidden = keras.layers.Bidirectional(
        keras.layers.GRU(UNITS, return_sequences=True), merge_mode="sum"
    )(inputs)
    outputs = keras.layers.GRU(UNITS, go_backwards=True)(hidden)
    model = keras.Model(inputs, outputs)
    _random_weights(model, seed=9)
    copy = _replace_and_check(model, X)
    bidirectional = copy.layers[1]
    assert isinstance(bidirectional, keras.layers.Bidirectional)
    assert bidirectional.merge_mode == "sum"
    assert isinstance(bidirectional.forward_layer, keras_gru_plus.GRU)
    assert isinstance(bidirectional.backward_layer, keras_gru_plus.GRU)
    assert bidirectional.backward_layer.go_backwards is True
    assert isinstance(model.layers[1].forward_layer, keras.layers.GRU)
    assert isinstance(copy.layers[2], keras_gru_plus.GRU)


def test_replace_gru_rejects_non_models():
    with pytest.raises(ValueError, match="`model`"):
        interop.replace_gru(keras.layers.GRU(4))


@pytest.mark.filterwarnings("ignore:Do not pass an `input_shape`")
def test_docstring_examples_run():
    _torch()
    result = doctest.testmod(interop, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0
    assert result.failed == 0
