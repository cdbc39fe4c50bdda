"""The layer inside Keras: wrappers, models, masks, compilation, dtypes."""

import keras
import numpy as np
import pytest

import keras_gru_plus
from tests.helpers import BACKEND
from tests.helpers import to_numpy
from tests.helpers import twin_layers

RNG = np.random.default_rng(0)
X = RNG.normal(size=(4, 7, 5)).astype("float32")


def _copy_weights(src_model, dst_model):
    dst_model.set_weights(src_model.get_weights())


@pytest.mark.parametrize("merge_mode", ["concat", "sum", None])
def test_bidirectional_matches_keras(merge_mode):
    def build(gru_cls):
        inputs = keras.Input((7, 5))
        masked = keras.layers.Masking(0.0)(inputs)
        out = keras.layers.Bidirectional(
            gru_cls(6, return_sequences=True, return_state=True),
            merge_mode=merge_mode,
        )(masked)
        return keras.Model(inputs, out)

    theirs = build(keras.layers.GRU)
    ours = build(keras_gru_plus.GRU)
    theirs.set_weights(
        [RNG.normal(scale=0.3, size=w.shape) for w in theirs.get_weights()]
    )
    _copy_weights(theirs, ours)
    x = X.copy()
    x[1, 5:] = 0.0  # right padding, masked by the Masking layer
    for o, t in zip(ours(x), theirs(x)):
        np.testing.assert_allclose(to_numpy(o), to_numpy(t), atol=1e-5)


@pytest.mark.parametrize("reset_after", [True, False])
def test_sequential_with_embedding_mask_zero(reset_after):
    tokens = RNG.integers(1, 20, size=(4, 9))
    tokens[0, 6:] = 0
    tokens[2, 2:] = 0

    def build(gru_cls):
        return keras.Sequential(
            [
                keras.Input((9,), dtype="int32"),
                keras.layers.Embedding(20, 5, mask_zero=True),
                gru_cls(6, return_sequences=True, reset_after=reset_after),
                gru_cls(4, reset_after=reset_after),
                keras.layers.Dense(3),
            ]
        )

    theirs, ours = build(keras.layers.GRU), build(keras_gru_plus.GRU)
    _copy_weights(theirs, ours)
    np.testing.assert_allclose(
        to_numpy(ours(tokens)), to_numpy(theirs(tokens)), atol=1e-5
    )


def test_tutorial_network_summary_fit_predict():
    """The tutorial's network: GRU(64, input_shape=(32, 32)), BN, Dense."""
    model = keras.Sequential(
        [
            keras_gru_plus.GRU(64, input_shape=(32, 32)),
            keras.layers.BatchNormalization(),
            keras.layers.Dense(15),
        ]
    )
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    lines = []
    model.summary(print_fn=lambda line, **kw: lines.append(line))
    assert any("gru" in line.lower() for line in lines)
    x = RNG.normal(size=(16, 32, 32)).astype("float32")
    y = RNG.integers(0, 15, size=(16,))
    history = model.fit(x, y, epochs=2, batch_size=8, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    assert model.predict(x, verbose=0).shape == (16, 15)


@pytest.mark.parametrize("return_sequences", [False, True])
def test_none_batch_and_time_dimensions(return_sequences):
    inputs = keras.Input((None, 5))
    outputs = keras_gru_plus.GRU(3, return_sequences=return_sequences)(inputs)
    model = keras.Model(inputs, outputs)
    assert model.output_shape == ((None, None, 3) if return_sequences else (None, 3))
    for t in (2, 9):
        x = RNG.normal(size=(4, t, 5)).astype("float32")
        out = model.predict(x, verbose=0)
        assert out.shape == ((4, t, 3) if return_sequences else (4, 3))


@pytest.mark.skipif(
    BACKEND == "torch", reason="jit_compile=True is XLA: JAX and TensorFlow only"
)
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("blocks", [None, "block_steps", "short_block_steps"])
def test_jit_compile_training_matches_keras(masked, blocks, resize):
    if blocks:
        # The training passes over the 7 steps in blocks of 3 (and one
        # step): the loop of long sequences, or TensorFlow's Python loop
        # over the blocks of shorter ones.
        resize(**{blocks: 3})

    def build(gru_cls):
        layers = [keras.Input((7, 5))]
        if masked:
            layers.append(keras.layers.Masking(0.0))
        layers += [gru_cls(6, return_sequences=True), gru_cls(4), keras.layers.Dense(1)]
        model = keras.Sequential(layers)
        model.compile(keras.optimizers.SGD(0.1), "mse", jit_compile=True)
        return model

    theirs, ours = build(keras.layers.GRU), build(keras_gru_plus.GRU)
    _copy_weights(theirs, ours)
    x = X.copy()
    x[0, 4:] = 0.0
    y = RNG.normal(size=(4, 1)).astype("float32")
    for model in (ours, theirs):
        model.fit(x, y, epochs=2, batch_size=2, shuffle=False, verbose=0)
    for a, b in zip(ours.get_weights(), theirs.get_weights()):
        np.testing.assert_allclose(a, b, atol=1e-5)
    np.testing.assert_allclose(
        ours.predict(x, verbose=0), theirs.predict(x, verbose=0), atol=1e-5
    )


@pytest.mark.skipif(BACKEND != "torch", reason="torch.compile is PyTorch's compiler")
def test_torch_compile_training_matches_keras():
    # Keras hands the training step to torch.compile (the policy's
    # `compiled` fields); the built-in trains eagerly beside it.
    def build(gru_cls, jit_compile):
        model = keras.Sequential(
            [keras.Input((7, 5)), gru_cls(4), keras.layers.Dense(1)]
        )
        model.compile(keras.optimizers.SGD(0.1), "mse", jit_compile=jit_compile)
        return model

    theirs, ours = build(keras.layers.GRU, False), build(keras_gru_plus.GRU, True)
    _copy_weights(theirs, ours)
    y = RNG.normal(size=(4, 1)).astype("float32")
    for model in (ours, theirs):
        model.fit(X, y, epochs=2, batch_size=2, shuffle=False, verbose=0)
    for a, b in zip(ours.get_weights(), theirs.get_weights()):
        np.testing.assert_allclose(a, b, atol=1e-5)


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision(policy):
    tolerance = 2e-2 if policy == "mixed_bfloat16" else 2e-3
    ours, theirs, _ = twin_layers(
        (4, 7, 5), dict(units=6, return_sequences=True, dtype=policy)
    )
    mask = np.ones((4, 7), bool)
    mask[1, 4:] = False
    out = ours(X, mask=mask)
    assert keras.backend.standardize_dtype(out.dtype) == policy.split("_")[1]
    assert ours.cell.kernel.dtype == "float32"
    np.testing.assert_allclose(
        to_numpy(out).astype("float32"),
        to_numpy(theirs(X, mask=mask)).astype("float32"),
        atol=tolerance,
    )
    model = keras.Sequential(
        [
            keras.Input((7, 5)),
            keras_gru_plus.GRU(6, dtype=policy),
            keras.layers.Dense(1, dtype="float32"),
        ]
    )
    model.compile("adam", "mse")
    history = model.fit(X, np.ones((4, 1)), epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"]).all()


def _assert_same_with_shared_weights(ours, theirs):
    """Builds both on X, gives them the same random weights, compares."""
    ours.build(X.shape)
    theirs.build(X.shape)
    weights = [RNG.normal(scale=0.3, size=w.shape) for w in theirs.get_weights()]
    ours.set_weights(weights)
    theirs.set_weights(weights)
    np.testing.assert_allclose(to_numpy(ours(X)), to_numpy(theirs(X)), atol=1e-5)


@pytest.mark.parametrize("reset_after", [True, False])
def test_cell_in_keras_rnn_matches_keras_cell(reset_after):
    _assert_same_with_shared_weights(
        keras.layers.RNN(
            keras_gru_plus.GRUCell(6, reset_after=reset_after), return_sequences=True
        ),
        keras.layers.RNN(
            keras.layers.GRUCell(6, reset_after=reset_after), return_sequences=True
        ),
    )


def test_stacked_rnn_cells_match_keras():
    def build(cell_cls):
        return keras.layers.RNN(
            keras.layers.StackedRNNCells([cell_cls(6), cell_cls(3, reset_after=False)])
        )

    _assert_same_with_shared_weights(
        build(keras_gru_plus.GRUCell), build(keras.layers.GRUCell)
    )


def test_cell_state_and_output_size():
    cell = keras_gru_plus.GRUCell(7)
    assert cell.state_size == 7 and cell.output_size == 7
    h, states = cell(X[:, 0], [np.zeros((4, 7), "float32")])
    assert tuple(h.shape) == (4, 7) and len(states) == 1


@pytest.mark.parametrize("time_major", [False, True])
@pytest.mark.parametrize("return_sequences", [False, True])
@pytest.mark.parametrize("return_state", [False, True])
def test_compute_output_shape_matches_call(time_major, return_sequences, return_state):
    layer = keras_gru_plus.GRU(
        3,
        time_major=time_major,
        return_sequences=return_sequences,
        return_state=return_state,
    )
    x = np.swapaxes(X, 0, 1) if time_major else X
    outputs = layer(x)
    expected = layer.compute_output_shape(x.shape)
    if return_state:
        assert [tuple(o.shape) for o in outputs] == [tuple(e) for e in expected]
    else:
        assert tuple(outputs.shape) == tuple(expected)
    symbolic = layer(keras.KerasTensor(x.shape))
    if return_state:
        assert [tuple(s.shape) for s in symbolic] == [tuple(e) for e in expected]
    else:
        assert tuple(symbolic.shape) == tuple(expected)


def test_compute_mask_propagates_with_return_sequences():
    mask = np.ones((4, 7), bool)
    seq = keras_gru_plus.GRU(3, return_sequences=True)
    assert seq.compute_mask(X, mask) is mask
    assert keras_gru_plus.GRU(3).compute_mask(X, mask) is None
    with_state = keras_gru_plus.GRU(3, return_sequences=True, return_state=True)
    assert with_state.compute_mask(X, mask) == [mask, None]


def test_weight_names_and_shapes_match_keras():
    for reset_after in (True, False):
        ours, theirs, _ = twin_layers((4, 7, 5), dict(units=6, reset_after=reset_after))
        # Paths below the layer's own (auto-numbered) name.
        assert [w.path.split("/", 1)[1] for w in ours.weights] == [
            w.path.split("/", 1)[1] for w in theirs.weights
        ]
        assert [tuple(w.shape) for w in ours.weights] == [
            tuple(w.shape) for w in theirs.weights
        ]


def test_activity_regularizer_and_losses():
    layer = keras_gru_plus.GRU(
        3,
        kernel_regularizer="l2",
        recurrent_regularizer="l2",
        bias_regularizer="l1",
        activity_regularizer="l2",
    )
    layer(X)
    assert len(layer.losses) == 4


@pytest.mark.skipif(
    BACKEND != "tensorflow",
    reason="a time dimension unknown when traced "
    "(tf.function input_signature) exists on TensorFlow only",
)
@pytest.mark.parametrize("reset_after", [True, False])
@pytest.mark.parametrize("masked", [False, True])
def test_gradients_with_unknown_time_dimension(reset_after, masked):
    # fit() on batches of varying lengths retraces with time = None.
    import tensorflow as tf

    ours, theirs, _ = twin_layers(
        (None, None, 3), dict(units=4, return_sequences=True, reset_after=reset_after)
    )
    x = RNG.normal(size=(2, 6, 3)).astype("float32")
    mask = np.array([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]], bool)

    def grads(layer):
        @tf.function(
            input_signature=[
                tf.TensorSpec((None, None, 3), tf.float32),
                tf.TensorSpec((None, None), tf.bool),
            ]
        )
        def f(x, mask):
            with tf.GradientTape() as tape:
                tape.watch(x)
                y = layer(x, mask=mask if masked else None, training=True)
                loss = tf.reduce_sum(y * y)
            return [y] + tape.gradient(loss, [x] + layer.trainable_variables)

        return [np.asarray(v) for v in f(x, mask)]

    for a, b in zip(grads(ours), grads(theirs)):
        np.testing.assert_allclose(a, b, atol=1e-5)
