"""Export: TensorFlow SavedModel and ONNX, reloaded and run, same outputs.

Each test needs its exporter's packages; `nox -s export` installs them
(`tensorflow` beside JAX for the SavedModel, `onnx`/`onnxruntime` and the
backend's converter for ONNX). Where Keras cannot export from a backend,
the README says why.

The step model (`keras_gru_plus.step_model`) is exported too and run over
a whole sequence one step at a time, the caller passing the GRU states in
and out; every step's outputs and the final states match the sequence
model's and the Keras step model's.
"""

import importlib.util

import keras
import numpy as np
import pytest

import keras_gru_plus
from tests.helpers import BACKEND


def _installed(*names):
    return all(importlib.util.find_spec(n) is not None for n in names)


# The ONNX converter of each backend.
CONVERTER = {"tensorflow": "tf2onnx", "jax": "jax2onnx", "torch": "onnxscript"}


def saved_model_test(test):
    """Skips `test` where Keras cannot export a SavedModel (PyTorch), or
    where TensorFlow is not installed (the reason nearest the test is the
    one pytest gives)."""
    test = pytest.mark.skipif(
        BACKEND not in ("tensorflow", "jax"),
        reason=f"Keras exports a SavedModel from TensorFlow and JAX only, not "
        f"from {BACKEND}",
    )(test)
    return pytest.mark.skipif(
        not _installed("tensorflow"),
        reason="the SavedModel export needs tensorflow, not installed in this "
        "environment",
    )(test)


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


@saved_model_test
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
    converter = CONVERTER[BACKEND]
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


# The step model (`keras_gru_plus.step_model`): exported, then run a whole
# sequence one step at a time by the runtime, the caller passing the GRU
# states in and out (each step's new states are the next step's inputs).

STEP_BATCH, STEP_TIME = 3, 7


def _sequence_layers(layer_norm, masking, return_state=False):
    """The layers of the sequence model, in order (named, so that the step
    model's input names are known)."""
    layers = [keras.layers.Masking()] if masking else []
    layers += [
        keras_gru_plus.GRU(
            6,
            return_sequences=True,
            return_state=return_state,
            layer_norm=layer_norm,
            name="gru_a",
        ),
        keras_gru_plus.GRU(
            4,
            reset_after=False,
            return_sequences=True,
            return_state=return_state,
            name="gru_b",
        ),
        keras.layers.Dense(2, name="dense"),
    ]
    return layers


def _step_case(layer_norm, masking):
    """The sequence model, its step model, a batch of sequences (with
    masked steps, all zeros, under `masking`) and what Keras gives for
    them: the sequence model's outputs at every step and final states (a
    twin with the same weights whose GRUs return their state), and the
    Keras step model's, fed the sequence step by step."""
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(STEP_BATCH, STEP_TIME, 5)).astype("float32")
    if masking:
        x[0, 2] = 0.0  # a hole
        x[1, 4:] = 0.0  # a masked tail
        x[2, 0] = 0.0  # a masked first step
    inputs = h = keras.Input((None, 5), name="frames")
    for layer in _sequence_layers(layer_norm, masking):
        h = layer(h)
    model = keras.Model(inputs, h)
    model(x)

    inputs = h = keras.Input((None, 5), name="frames")
    states = []
    for layer in _sequence_layers(layer_norm, masking, return_state=True):
        h = layer(h)
        if isinstance(h, (list, tuple)):
            h, state = h
            states.append(state)
    twin = keras.Model(inputs, [h, *states])
    twin.set_weights(model.get_weights())
    sequence_outputs, *sequence_states = twin.predict(x, verbose=0)
    np.testing.assert_allclose(sequence_outputs, model.predict(x, verbose=0), atol=1e-6)

    step = keras_gru_plus.step_model(model)
    assert [t.name for t in step.inputs] == ["frames", "gru_a_state", "gru_b_state"]
    # The ONNX exporter asks for a model that was called (on JAX,
    # `predict_on_batch` does not count).
    step([x[:, 0], *keras_gru_plus.initial_states(step, STEP_BATCH)])
    keras_outputs, keras_states = _stream(step, step.predict_on_batch, x)
    expected = {
        "the sequence model": (sequence_outputs, sequence_states),
        "the Keras step model": (keras_outputs, keras_states),
    }
    return step, x, expected


def _stream(step, run, x):
    """`[y_t, *new_states] = run([x_t, *states])` over the steps of `x`
    from zero states: every step's output `(batch, time, ...)` and the
    final states, as NumPy."""
    states = keras_gru_plus.initial_states(step, STEP_BATCH)
    outputs = []
    for t in range(x.shape[1]):
        y, *states = (np.asarray(v) for v in run([x[:, t], *states]))
        outputs.append(y)
    return np.stack(outputs, axis=1), states


def _assert_streams_match(outputs, states, expected):
    for what, (want_outputs, want_states) in expected.items():
        np.testing.assert_allclose(outputs, want_outputs, atol=1e-5, err_msg=what)
        assert len(states) == len(want_states)
        for got, want in zip(states, want_states):
            np.testing.assert_allclose(got, want, atol=1e-5, err_msg=what)


STEP_CASES = pytest.mark.parametrize(
    "layer_norm, masking",
    [(False, False), (True, False), (False, True)],
    ids=["plain", "layer_norm", "masking"],
)


@saved_model_test
@STEP_CASES
def test_step_model_tf_saved_model_export(tmp_path, layer_norm, masking):
    import tensorflow as tf

    step, x, expected = _step_case(layer_norm, masking)
    path = str(tmp_path / "step_saved")
    step.export(path, format="tf_saved_model", verbose=False)
    reloaded = tf.saved_model.load(path)

    def run(inputs):
        # `serve` takes the step model's inputs as one list (not as
        # positional arguments: "too many positional arguments"; not as a
        # dict by input name) and returns its outputs as a list, in the step
        # model's order. (The `serving_default` signature takes them by
        # name and returns a dict of "output_0", "output_1", ...)
        outputs = reloaded.serve([tf.constant(v) for v in inputs])
        assert isinstance(outputs, list) and len(outputs) == len(inputs)
        return outputs

    outputs, states = _stream(step, run, x)
    _assert_streams_match(outputs, states, expected)


@pytest.mark.skipif(
    not _installed("onnx", "onnxruntime"),
    reason="ONNX export needs onnx and onnxruntime, not installed in this environment",
)
@STEP_CASES
def test_step_model_onnx_export(tmp_path, layer_norm, masking):
    converter = CONVERTER[BACKEND]
    if not _installed(converter):
        pytest.skip(
            f"ONNX export on {BACKEND} needs {converter}, not "
            "installed in this environment"
        )
    import onnxruntime

    step, x, expected = _step_case(layer_norm, masking)
    path = str(tmp_path / "step.onnx")
    step.export(path, format="onnx", verbose=False)
    session = onnxruntime.InferenceSession(path)
    names = [i.name for i in session.get_inputs()]
    # Every exporter keeps the step model's input names. None keeps its
    # output names, the "<gru name>_next_state" layers' (tf2onnx:
    # "Identity:0", ...; torch: "228", "inputs.3", ...; jax2onnx:
    # "squeeze_out_2", "add_out_5", ...), so the outputs are taken in order.
    assert names == [t.name for t in step.inputs]
    assert len(session.get_outputs()) == len(step.outputs)

    def run(inputs):
        return session.run(None, dict(zip(names, inputs)))

    outputs, states = _stream(step, run, x)
    _assert_streams_match(outputs, states, expected)


@pytest.mark.parametrize("format", ["tf_saved_model", "onnx"])
def test_step_model_export_takes_any_batch(tmp_path, format):
    """Exported with `export`'s own signature (batch None), the step model
    runs on batches of other sizes than the one it was built on."""
    if format == "tf_saved_model":
        if BACKEND not in ("tensorflow", "jax"):
            pytest.skip(
                f"Keras exports a SavedModel from TensorFlow and JAX only, "
                f"not from {BACKEND}"
            )
        if not _installed("tensorflow"):
            pytest.skip(
                "the SavedModel export needs tensorflow, not installed in "
                "this environment"
            )
    else:
        converter = CONVERTER[BACKEND]
        if not _installed("onnx", "onnxruntime", converter):
            pytest.skip(
                f"ONNX export on {BACKEND} needs onnx, onnxruntime and "
                f"{converter}, not all installed in this environment"
            )
    step, x, _ = _step_case(layer_norm=False, masking=False)
    path = str(tmp_path / ("step_saved" if format == "tf_saved_model" else "step.onnx"))
    step.export(path, format=format, verbose=False)
    if format == "tf_saved_model":
        import tensorflow as tf

        reloaded = tf.saved_model.load(path)

        def run(inputs):
            return reloaded.serve([tf.constant(v) for v in inputs])
    else:
        import onnxruntime

        session = onnxruntime.InferenceSession(path)
        names = [i.name for i in session.get_inputs()]

        def run(inputs):
            return session.run(None, dict(zip(names, inputs)))

    rng = np.random.default_rng(1)
    for batch in (1, 2, 5):
        inputs = [rng.normal(size=(batch, 5)).astype("float32")] + [
            rng.normal(size=(batch, s.shape[1])).astype("float32")
            for s in keras_gru_plus.initial_states(step, 1)
        ]
        want = step.predict_on_batch(inputs)
        got = run(inputs)
        assert len(got) == len(want)
        for g, w in zip(got, want):
            np.testing.assert_allclose(np.asarray(g), w, atol=1e-5)
