"""Public API, package hygiene, docstring examples, Keras' own scenarios."""

import ast
import doctest
import os

import keras
import numpy as np
import pytest

import keras_gru_plus
from keras_gru_plus import gru as gru_module
from keras_gru_plus import gru_cell as gru_cell_module
from keras_gru_plus import swap_batch_time as swap_module
from tests.helpers import to_numpy

PACKAGE = os.path.dirname(os.path.abspath(keras_gru_plus.__file__))
BACKEND_MODULES = {"jax", "jaxlib", "tensorflow", "torch"}


def test_public_api():
    assert set(keras_gru_plus.__all__) >= {"GRU", "GRUCell", "__version__"}
    assert isinstance(keras_gru_plus.__version__, str)
    assert issubclass(keras_gru_plus.GRU, keras.Layer)
    assert issubclass(keras_gru_plus.GRUCell, keras.Layer)
    # Neither subclasses nor wraps the built-in RNN machinery.
    for cls in (keras_gru_plus.GRU, keras_gru_plus.GRUCell):
        for base in cls.__mro__:
            assert base not in (
                keras.layers.RNN,
                keras.layers.GRU,
                keras.layers.GRUCell,
            )


# The layer and its math: keras.ops only, no backend import anywhere.
LAYER_MATH = {
    "gru.py",
    "gru_cell.py",
    "recurrence.py",
    "sequence.py",
    "swap_batch_time.py",
    "bptt.py",
    "scan.py",
    "policy.py",
    "validation.py",
    "__init__.py",
}


def _imports(nodes):
    for node in nodes:
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield node.module


def test_layer_math_imports_no_backend_and_no_keras_internals():
    for root, _, files in os.walk(PACKAGE):
        for name in files:
            if not name.endswith(".py"):
                continue
            path = os.path.join(root, name)
            tree = ast.parse(open(path).read())
            everywhere = list(_imports(ast.walk(tree)))
            top_level = list(_imports(tree.body))
            for module in everywhere:
                assert not module.startswith("keras.src"), (path, module)
            # Tools (benchmark, interop) may import a backend lazily,
            # inside a function; the layer math never does.
            checked = everywhere if name in LAYER_MATH else top_level
            for module in checked:
                assert module.split(".")[0] not in BACKEND_MODULES, (path, module)
    assert LAYER_MATH <= set(os.listdir(PACKAGE))


@pytest.mark.parametrize("module", [gru_module, gru_cell_module, swap_module])
def test_docstring_examples_run(module):
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0
    assert result.failed == 0


CONST = dict(
    kernel_initializer=keras.initializers.Constant(0.01),
    recurrent_initializer=keras.initializers.Constant(0.02),
    bias_initializer=keras.initializers.Constant(0.03),
)


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"go_backwards": True},
        {"unroll": True},
        {"reset_after": False},
        {"use_bias": False},
        {"implementation": 1},
    ],
)
def test_keras_correctness_scenarios(kwargs):
    """The scenarios of Keras' `test_correctness`, against the live layer."""
    sequence = np.arange(72).reshape((3, 6, 4)).astype("float32")
    ours = keras_gru_plus.GRU(3, **CONST, **kwargs)
    theirs = keras.layers.GRU(3, **CONST, **kwargs)
    np.testing.assert_allclose(
        to_numpy(ours(sequence)), to_numpy(theirs(sequence)), atol=1e-5
    )


@pytest.mark.parametrize(
    "kwargs",
    [
        {"unroll": True},
        {"return_sequences": True},
        {"return_sequences": True, "zero_output_for_mask": True},
        {"go_backwards": True},
    ],
)
def test_keras_masking_scenarios(kwargs):
    """The scenarios of Keras' `test_masking`, against the live layer."""
    sequence = np.arange(24).reshape((2, 4, 3)).astype("float32")
    mask = np.array([[True, True, False, True], [True, False, False, True]])
    ours = keras_gru_plus.GRU(2, **CONST, **kwargs)
    theirs = keras.layers.GRU(2, **CONST, **kwargs)
    np.testing.assert_allclose(
        to_numpy(ours(sequence, mask=mask)),
        to_numpy(theirs(sequence, mask=mask)),
        atol=1e-5,
    )


@pytest.mark.parametrize(
    "init_kwargs,expected_losses",
    [
        ({"units": 3, "dropout": 0.5}, 0),
        ({"units": 3, "dropout": 0.5, "recurrent_dropout": 0.5}, 0),
        (
            {
                "units": 3,
                "return_sequences": True,
                "bias_regularizer": "l1",
                "kernel_regularizer": "l2",
                "recurrent_regularizer": "l2",
            },
            3,
        ),
    ],
)
def test_keras_basics_scenarios(init_kwargs, expected_losses):
    """Keras' `test_basics`: weights, losses, shapes, training and a fit."""
    layer = keras_gru_plus.GRU(**init_kwargs)
    x = np.random.default_rng(0).normal(size=(3, 2, 4)).astype("float32")
    out = layer(x, training=True)
    expected_shape = (3, 2, 3) if init_kwargs.get("return_sequences") else (3, 3)
    assert tuple(out.shape) == expected_shape
    assert len(layer.trainable_weights) == 3
    assert len(layer.non_trainable_weights) == 0
    assert len(layer.losses) == expected_losses
    model = keras.Sequential([keras.Input((2, 4)), layer])
    model.compile("sgd", "mse")
    model.fit(x, np.zeros((3,) + expected_shape[1:]), verbose=0)
