"""Masks out of the layer: passed on (or not) as keras.layers.GRU does.

Keras 3.16 stopped its recurrent layers from passing masks on
(keras-team/keras#23235: `supports_masking=False`): the layer still uses the
mask it is given, but the next layer receives none, and Keras warns that the
mask is dropped. Each test builds the same model or layer with the installed
`keras.layers.GRU` and with ours and compares what the next layer receives,
`compute_mask`, `supports_masking` and the warnings, so that one test passes
on every Keras version. Each also checks that its case exercises something:
where the built-in passes the mask on (Keras 3.15 and before), the next layer
receives the padding's mask; where it does not, none, and a warning.
"""

import warnings

import keras
import numpy as np
import pytest
from keras import ops

import keras_gru_plus
from tests.helpers import as_list
from tests.helpers import to_numpy

RNG = np.random.default_rng(0)
X = RNG.normal(size=(3, 6, 4)).astype("float32")
X[0, 4:] = 0.0  # right padding, masked by keras.layers.Masking
X[2, 2:] = 0.0
PADDING_MASK = np.any(X != 0.0, axis=-1)
GRUS = {"keras": keras.layers.GRU, "ours": keras_gru_plus.GRU}
NAME = "gru_under_test"  # both layers' name, so that warnings can be compared
RECURRENT = [
    {},
    {"return_sequences": True},
    {"return_state": True},
    {"return_sequences": True, "return_state": True},
    {"return_sequences": True, "go_backwards": True},
]


def builtin_passes_masks_on():
    return keras.layers.GRU(2).supports_masking


class MaskProbe(keras.layers.Layer):
    """Outputs the mask it receives, `(batch, time)` as 0 and 1, or -1
    everywhere where it receives none."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True

    def call(self, inputs, mask=None):
        if mask is None:
            return ops.zeros_like(inputs[..., 0]) - 1.0
        return ops.cast(mask, inputs.dtype)


def mask_warnings(caught):
    return [str(w.message) for w in caught if "mask" in str(w.message)]


def build(gru_cls, wrap=None, **kwargs):
    """Input, Masking, the GRU (in `wrap` if given), a probe on each output.

    Returns the model, whether each GRU output carries a mask when built
    (symbolically), and the mask warnings of the build."""
    inputs = keras.Input(X.shape[1:])
    masked = keras.layers.Masking(0.0)(inputs)
    layer = gru_cls(3, name=NAME, **kwargs)
    if wrap is not None:
        layer = wrap(layer)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        outputs = as_list(layer(masked))
    symbolic = [getattr(t, "_keras_mask", None) is not None for t in outputs]
    model = keras.Model(inputs, [MaskProbe()(t) for t in outputs])
    return model, symbolic, mask_warnings(caught)


def received(model):
    """The probes' outputs on X, and the mask warnings of the call."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        outputs = [to_numpy(o) for o in as_list(model(X))]
    return outputs, mask_warnings(caught)


def assert_same(ours, theirs):
    assert len(ours) == len(theirs)
    for o, t in zip(ours, theirs):
        if o is None or t is None:
            assert o is None and t is None
        else:
            np.testing.assert_array_equal(to_numpy(o), to_numpy(t))


@pytest.mark.parametrize("kwargs", RECURRENT)
def test_supports_masking_matches_builtin(kwargs):
    ours = keras_gru_plus.GRU(3, **kwargs)
    assert ours.supports_masking == keras.layers.GRU(3, **kwargs).supports_masking
    # Through a config (as Bidirectional copies its layer, or a file loads).
    copy = keras_gru_plus.GRU.from_config(ours.get_config())
    assert copy.supports_masking == ours.supports_masking


@pytest.mark.parametrize("kwargs", RECURRENT)
def test_compute_mask_matches_builtin(kwargs):
    mask = PADDING_MASK
    ours = as_list(keras_gru_plus.GRU(3, **kwargs).compute_mask(X, mask))
    theirs = as_list(keras.layers.GRU(3, **kwargs).compute_mask(X, mask))
    assert_same(ours, theirs)
    # compute_mask answers whether the layer passes masks on or not.
    assert ours[0] is (mask if kwargs.get("return_sequences") else None)
    assert all(m is None for m in ours[1:])
    assert_same(
        as_list(keras_gru_plus.GRU(3, **kwargs).compute_mask(X, None)),
        as_list(keras.layers.GRU(3, **kwargs).compute_mask(X, None)),
    )


def build_both_and_compare(**kwargs):
    """Builds the model with ours and with keras.layers.GRU (`build`'s
    arguments), asserts that both record the same symbolic masks and build
    warnings, receive the same masks and warn alike when called; returns
    ours' `(symbolic, built warnings, received masks)`."""
    (ours, ours_symbolic, ours_built), (theirs, theirs_symbolic, theirs_built) = (
        build(GRUS[k], **kwargs) for k in ("ours", "keras")
    )
    assert ours_symbolic == theirs_symbolic
    assert ours_built == theirs_built
    ours_received, ours_warned = received(ours)
    theirs_received, theirs_warned = received(theirs)
    assert_same(ours_received, theirs_received)
    assert ours_warned == theirs_warned
    return ours_symbolic, ours_built, ours_received


@pytest.mark.parametrize("kwargs", RECURRENT)
def test_functional_next_layer_receives_the_builtins_mask(kwargs):
    ours_symbolic, ours_built, ours_received = build_both_and_compare(**kwargs)
    # What the built-in does, spelt out: the sequence output carries the
    # padding's mask where the layer passes masks on, the state never.
    passes_on = builtin_passes_masks_on() and bool(kwargs.get("return_sequences"))
    assert ours_symbolic == [passes_on] + [False] * (len(ours_symbolic) - 1)
    if passes_on:
        np.testing.assert_array_equal(ours_received[0], PADDING_MASK)
    else:
        np.testing.assert_array_equal(ours_received[0], -1.0)
    for state in ours_received[1:]:
        np.testing.assert_array_equal(state, -1.0)
    # The built-in warns, naming the layer, where it drops the mask.
    assert bool(ours_built) == (not builtin_passes_masks_on())
    assert all(NAME in w for w in ours_built)


@pytest.mark.parametrize("with_input", [True, False])
@pytest.mark.parametrize("return_sequences", [True, False])
def test_sequential_next_layer_receives_the_builtins_mask(with_input, return_sequences):
    def run(gru_cls):
        layers = [
            keras.layers.Masking(0.0),
            gru_cls(3, return_sequences=return_sequences, name=NAME),
            MaskProbe(),
        ]
        if with_input:
            layers.insert(0, keras.Input(X.shape[1:]))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model = keras.Sequential(layers)
            output = to_numpy(model(X))
        return output, mask_warnings(caught)

    ours, ours_warned = run(keras_gru_plus.GRU)
    theirs, theirs_warned = run(keras.layers.GRU)
    np.testing.assert_array_equal(ours, theirs)
    assert ours_warned == theirs_warned
    if builtin_passes_masks_on() and return_sequences:
        np.testing.assert_array_equal(ours, PADDING_MASK)
    else:
        np.testing.assert_array_equal(ours, -1.0)
    assert bool(ours_warned) == (not builtin_passes_masks_on())


def test_stacked_second_layer_computes_as_the_builtins():
    """Whether the second GRU skips the padded steps changes its numbers:
    ours and the built-in's, with the same weights, agree."""

    def stacked(gru_cls):
        inputs = keras.Input(X.shape[1:])
        x = keras.layers.Masking(0.0)(inputs)
        x = gru_cls(5, return_sequences=True)(x)
        return keras.Model(inputs, gru_cls(3)(x))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Keras 3.16's, that masks are dropped
        theirs = stacked(keras.layers.GRU)
        weights = [RNG.normal(scale=0.5, size=w.shape) for w in theirs.get_weights()]
        theirs.set_weights(weights)
        ours = stacked(keras_gru_plus.GRU)
        ours.set_weights(weights)
        expected = to_numpy(theirs(X))
        np.testing.assert_allclose(to_numpy(ours(X)), expected, atol=1e-5)
        # The case tells the two behaviours apart: the second layer's output
        # with and without the padding's mask differ in the padded rows.
        first, second = (ours.layers[i] for i in (2, 3))
        # As a new array: on Keras 3.15 the output carries the mask.
        sequence = to_numpy(first(X, mask=PADDING_MASK))
        with_mask = to_numpy(second(sequence, mask=PADDING_MASK))
        without = to_numpy(second(sequence))
    assert np.abs(with_mask - without).max(axis=-1)[[0, 2]].min() > 1e-3
    if builtin_passes_masks_on():
        np.testing.assert_allclose(expected, with_mask, atol=1e-5)
    else:
        np.testing.assert_allclose(expected, without, atol=1e-5)


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"return_sequences": True}, {"return_sequences": True, "return_state": True}],
)
@pytest.mark.parametrize("merge_mode", ["concat", None])
def test_bidirectional_next_layer_receives_the_builtins_mask(kwargs, merge_mode):
    def wrap(layer):
        return keras.layers.Bidirectional(
            layer, merge_mode=merge_mode, name=f"bidirectional_{NAME}"
        )

    ours_symbolic, ours_built, _ = build_both_and_compare(wrap=wrap, **kwargs)
    wrapper = wrap(keras_gru_plus.GRU(3, **kwargs))
    builtin_wrapper = wrap(keras.layers.GRU(3, **kwargs))
    assert wrapper.supports_masking == builtin_wrapper.supports_masking
    assert wrapper.forward_layer.supports_masking == builtin_passes_masks_on()
    assert wrapper.backward_layer.supports_masking == builtin_passes_masks_on()
    assert_same(
        as_list(wrapper.compute_mask(X, PADDING_MASK)),
        as_list(builtin_wrapper.compute_mask(X, PADDING_MASK)),
    )
    # What the built-in does, spelt out: the wrapper passes the sequence's
    # mask on, or warns (and its layers too) that it drops it.
    passes_on = builtin_wrapper.supports_masking
    assert ours_symbolic[0] == (passes_on and bool(kwargs.get("return_sequences")))
    assert bool(ours_built) == (not passes_on)


@pytest.mark.parametrize("return_sequences", [True, False])
def test_eager_call_with_a_mask_warns_as_the_builtin(return_sequences):
    def call(gru_cls):
        layer = gru_cls(3, return_sequences=return_sequences, name=NAME)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            layer(X, mask=PADDING_MASK)
            layer(X)
        return mask_warnings(caught)

    ours = call(keras_gru_plus.GRU)
    assert ours == call(keras.layers.GRU)
    assert len(ours) == (0 if builtin_passes_masks_on() else 1)
