"""Export: TensorFlow SavedModel and ONNX, reloaded and run, same outputs.

Each test needs its exporter's packages; `nox -s export` installs them
(`tensorflow` beside JAX for the SavedModel, `onnx`/`onnxruntime` and the
backend's converter for ONNX). Where Keras cannot export from a backend,
the README says why.
"""

import importlib.util

import keras
import numpy as np
import pytest

import keras_gru_plus
from tests.helpers import BACKEND


def _installed(*names):
    return all(importlib.util.find_spec(n) is not None for n in names)


def _use_blocks(blocks, resize):
    """Both layers' inference loops in blocks of 3 steps (of 7), the loops
    that long sequences take (but on TensorFlow, whose inference loops
    project each step and take no blocks of projected steps)."""
    if blocks and BACKEND == "tensorflow":
        pytest.skip(
            "TensorFlow's inference loops take no blocks of "
            "projected steps (policy: project_in_step)"
        )
    if blocks:
        resize(block_steps=3)


def _model(unroll=False):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((7, 5), batch_size=3)
    x = keras_gru_plus.GRU(6, return_sequences=True, unroll=unroll)(inputs)
    x = keras_gru_plus.GRU(4, reset_after=False, go_backwards=True)(x)
    outputs = keras.layers.Dense(2)(x)
    model = keras.Model(inputs, outputs)
    x_in = np.random.default_rng(0).normal(size=(3, 7, 5)).astype("float32")
    model(x_in)  # the ONNX exporter asks for a model that was called
    return model, x_in


@pytest.mark.skipif(
    BACKEND not in ("tensorflow", "jax"),
    reason=f"Keras exports a SavedModel from TensorFlow and "
    f"JAX only, not from {BACKEND}",
)
@pytest.mark.skipif(
    not _installed("tensorflow"),
    reason="the SavedModel export needs tensorflow, not installed in this environment",
)
@pytest.mark.parametrize("blocks", [False, True])
def test_tf_saved_model_export(tmp_path, blocks, resize):
    import tensorflow as tf

    _use_blocks(blocks, resize)
    model, x = _model()
    expected = model.predict(x, verbose=0)
    path = str(tmp_path / "saved")
    model.export(path, format="tf_saved_model", verbose=False)
    reloaded = tf.saved_model.load(path)
    out = reloaded.serve(tf.constant(x))
    np.testing.assert_allclose(np.asarray(out), expected, atol=1e-5)


@pytest.mark.skipif(
    not _installed("onnx", "onnxruntime"),
    reason="ONNX export needs onnx and onnxruntime, not installed in this environment",
)
@pytest.mark.parametrize("unroll", [False, True])
@pytest.mark.parametrize("blocks", [False, True])
def test_onnx_export(tmp_path, unroll, blocks, resize):
    converter = {"tensorflow": "tf2onnx", "jax": "jax2onnx", "torch": "onnxscript"}[
        BACKEND
    ]
    if not _installed(converter):
        pytest.skip(
            f"ONNX export on {BACKEND} needs {converter}, not "
            "installed in this environment"
        )
    if BACKEND == "tensorflow" and not unroll:
        pytest.skip(
            "tf2onnx 1.17 cannot convert the TensorArray loop of "
            "keras.ops.scan on TensorFlow (a sequence-returning "
            "layer); unroll=True or the PyTorch backend export it"
        )
    import onnxruntime

    _use_blocks(blocks, resize)
    model, x = _model(unroll)
    expected = model.predict(x, verbose=0)
    path = str(tmp_path / "model.onnx")
    model.export(path, format="onnx", verbose=False)
    session = onnxruntime.InferenceSession(path)
    name = session.get_inputs()[0].name
    out = session.run(None, {name: x})[0]
    np.testing.assert_allclose(out, expected, atol=1e-5)
