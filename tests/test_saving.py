"""Saving and loading: `.keras`, `.weights.h5`, configs, across backends."""

import json
import os
import zipfile

import keras
import numpy as np
import pytest
from packaging.version import Version

import keras_gru_plus
from tests.data.make_fixtures import build_model
from tests.helpers import run_under_backend
from tests.helpers import to_numpy

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
BACKENDS = ("jax", "tensorflow", "torch")
RNG = np.random.default_rng(0)


def _random_weights(model):
    return [
        RNG.normal(scale=0.4, size=w.shape).astype("float32")
        for w in model.get_weights()
    ]


def _inputs():
    x = RNG.normal(size=(3, 6, 4)).astype("float32")
    x[1, 4:] = 0.0
    return x


def test_keras_file_round_trip(tmp_path):
    model = build_model(keras_gru_plus.GRU)
    model.set_weights(_random_weights(model))
    x = _inputs()
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    grus = [layer for layer in loaded.layers if isinstance(layer, keras_gru_plus.GRU)]
    assert len(grus) == 2
    assert grus[1].go_backwards and not grus[0].reset_after
    np.testing.assert_array_equal(
        loaded.predict(x, verbose=0), model.predict(x, verbose=0)
    )


def test_registered_names():
    assert keras.saving.get_registered_name(keras_gru_plus.GRU) == (
        "keras_gru_plus>GRU"
    )
    assert keras.saving.get_registered_name(keras_gru_plus.GRUCell) == (
        "keras_gru_plus>GRUCell"
    )
    layer = keras_gru_plus.GRU(3)
    restored = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(layer)
    )
    assert isinstance(restored, keras_gru_plus.GRU)


@pytest.mark.parametrize("direction", ["keras_to_ours", "ours_to_keras"])
def test_weights_file_moves_between_layers(tmp_path, direction):
    source_cls, target_cls = keras.layers.GRU, keras_gru_plus.GRU
    if direction == "ours_to_keras":
        source_cls, target_cls = target_cls, source_cls
    source, target = build_model(source_cls), build_model(target_cls)
    source.set_weights(_random_weights(source))
    path = str(tmp_path / "model.weights.h5")
    source.save_weights(path)
    target.load_weights(path)
    for a, b in zip(source.get_weights(), target.get_weights()):
        np.testing.assert_array_equal(a, b)
    x = _inputs()
    np.testing.assert_allclose(
        target.predict(x, verbose=0), source.predict(x, verbose=0), atol=1e-5
    )


def test_configs_move_between_layers():
    theirs = keras.layers.GRU(
        4, dropout=0.2, reset_after=False, return_sequences=True, seed=3
    )
    ours = keras_gru_plus.GRU.from_config(theirs.get_config())
    assert (
        ours.units,
        ours.dropout,
        ours.reset_after,
        ours.return_sequences,
        ours.seed,
    ) == (4, 0.2, False, True, 3)
    back = keras.layers.GRU.from_config(ours.get_config())
    assert (back.units, back.dropout, back.reset_after) == (4, 0.2, False)


def test_config_round_trip_keeps_every_argument():
    layer = keras_gru_plus.GRU(
        5,
        activation="relu",
        recurrent_activation="hard_sigmoid",
        use_bias=False,
        kernel_initializer="he_normal",
        recurrent_initializer="glorot_normal",
        bias_initializer="ones",
        kernel_regularizer="l2",
        recurrent_regularizer="l1",
        bias_regularizer=keras.regularizers.L1L2(0.1, 0.2),
        activity_regularizer="l2",
        kernel_constraint="non_neg",
        recurrent_constraint="unit_norm",
        bias_constraint="max_norm",
        dropout=0.1,
        recurrent_dropout=0.2,
        seed=7,
        return_sequences=True,
        return_state=True,
        go_backwards=True,
        stateful=True,
        unroll=True,
        reset_after=False,
        zero_output_for_mask=True,
        time_major=True,
        implementation=1,
        use_cudnn=False,
    )
    config = layer.get_config()
    clone = keras_gru_plus.GRU.from_config(config)
    assert clone.get_config() == config
    for key in ("time_major", "implementation", "use_cudnn", "zero_output_for_mask"):
        assert key in config


def test_legacy_keras_2_config_loads():
    """A tf.keras (Keras 2) GRU config, with its legacy keys."""
    config = {
        "name": "gru",
        "trainable": True,
        "dtype": "float32",
        "batch_input_shape": [None, 6, 4],
        "return_sequences": False,
        "return_state": False,
        "go_backwards": False,
        "stateful": False,
        "unroll": False,
        "time_major": True,
        "units": 3,
        "activation": "tanh",
        "recurrent_activation": "sigmoid",
        "use_bias": True,
        "kernel_initializer": {"class_name": "GlorotUniform", "config": {"seed": None}},
        "recurrent_initializer": {
            "class_name": "Orthogonal",
            "config": {"gain": 1.0, "seed": None},
        },
        "bias_initializer": {"class_name": "Zeros", "config": {}},
        "kernel_regularizer": None,
        "recurrent_regularizer": None,
        "bias_regularizer": None,
        "activity_regularizer": None,
        "kernel_constraint": None,
        "recurrent_constraint": None,
        "bias_constraint": None,
        "dropout": 0.0,
        "recurrent_dropout": 0.0,
        "implementation": 2,
        "reset_after": True,
    }
    layer = keras_gru_plus.GRU.from_config(config)
    assert layer.time_major and layer.implementation == 2
    out = layer(np.ones((6, 2, 4), "float32"))
    assert tuple(out.shape) == (2, 3)


def test_legacy_implementation_zero():
    """Keras' own test: a config with `implementation=0` still loads."""
    sequence = np.arange(72).reshape((3, 6, 4)).astype("float32")
    const = dict(
        kernel_initializer=keras.initializers.Constant(0.01),
        recurrent_initializer=keras.initializers.Constant(0.02),
        bias_initializer=keras.initializers.Constant(0.03),
    )
    config = keras_gru_plus.GRU(3, **const).get_config()
    config["implementation"] = 0
    ours = keras_gru_plus.GRU.from_config(config)
    theirs = keras.layers.GRU(3, **const)
    np.testing.assert_allclose(
        to_numpy(ours(sequence)), to_numpy(theirs(sequence)), atol=1e-5
    )


def _with_builtin_grus(model_path):
    """The model of a `.keras` file, with keras.layers.GRU in place of ours
    (the built-in's arguments of their configs), not built."""
    with zipfile.ZipFile(model_path) as archive:
        config = json.loads(archive.read("config.json"))
    ours = keras.saving.get_registered_name(keras_gru_plus.GRU)
    known = keras.layers.GRU(1).get_config()
    for layer in config["config"]["layers"]:
        if layer.get("registered_name") == ours:
            layer.update(module="keras.layers", class_name="GRU", registered_name=None)
            layer["config"] = {k: v for k, v in layer["config"].items() if k in known}
    return keras.models.model_from_json(json.dumps(config))


def _skip_if_written_by_a_newer_keras(model_path):
    """Keras reads the files of its own and older versions, not newer ones'
    (of those 3.15.1 writes, 3.10.0 does not know the mask ops in the graph,
    3.12.4 the initializers' `input_axes`)."""
    with zipfile.ZipFile(model_path) as archive:
        written_by = json.loads(archive.read("metadata.json"))["keras_version"]
    if Version(keras.version()) < Version(written_by):
        pytest.skip(
            f"the file was written by Keras {written_by}: Keras "
            f"{keras.version()} cannot read a newer Keras' files"
        )


def _check_fixture(model_path, npz_path):
    _skip_if_written_by_a_newer_keras(model_path)
    data = np.load(npz_path)
    loaded = keras.saving.load_model(model_path)
    saved_weights = [data[f"w{i}"] for i in range(len(loaded.get_weights()))]
    for a, b in zip(loaded.get_weights(), saved_weights):
        np.testing.assert_array_equal(a, b)
    # The expectation: the same file read with keras.layers.GRU in place of
    # ours, so that both graphs are the file's (Keras 3.15 writes the masks
    # passed to each layer into the graph, which Keras 3.16 then passes on
    # where its own GRU would not).
    twin = _with_builtin_grus(model_path)
    assert sum(isinstance(layer, keras.layers.GRU) for layer in twin.layers) == 2
    twin.set_weights(saved_weights)
    np.testing.assert_allclose(
        loaded.predict(data["x"], verbose=0),
        twin.predict(data["x"], verbose=0),
        atol=1e-5,
    )


@pytest.mark.parametrize("saved_under", BACKENDS)
def test_fixture_saved_under_each_backend_loads_here(saved_under):
    """Files written by tests/data/make_fixtures.py under each backend."""
    _check_fixture(
        os.path.join(DATA, f"model_{saved_under}.keras"),
        os.path.join(DATA, f"inputs_{saved_under}.npz"),
    )


@pytest.mark.parametrize("other", BACKENDS)
def test_save_in_subprocess_under_other_backend(tmp_path, other):
    script = (
        f"import sys; sys.path.insert(0, {os.path.dirname(os.path.dirname(DATA))!r})\n"
        "from tests.data import make_fixtures as m\n"
        f"m.HERE = {str(tmp_path)!r}\nm.main()\n"
    )
    run_under_backend(other, script)
    _check_fixture(
        str(tmp_path / f"model_{other}.keras"), str(tmp_path / f"inputs_{other}.npz")
    )
