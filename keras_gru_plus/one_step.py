"""`OneStep`: a layer of a sequence model applied to one time step."""

import inspect

import keras
from keras import ops
from keras import tree


@keras.saving.register_keras_serializable(package="keras_gru_plus")
class OneStep(keras.Layer):
    """Applies a per-step layer of a sequence model to one time step.

    The step's tensors `(batch, ...)` get a time axis of length 1, the
    wrapped layer runs on `(batch, 1, ...)` exactly as it ran on
    `(batch, time, ...)` (same weights, same axes), and the time axis is
    taken off again; a mask `(batch,)` goes in and comes out the same way.
    The layer must act on each time step alone, which `step_model` checks
    before it wraps one.

    Args:
        layer: the layer to apply, already built on sequences.
        **kwargs: `keras.Layer` arguments (`name`). The dtype policy is the
            wrapped layer's.

    Call arguments:
        inputs: one step `(batch, ...)`, or a list of them (merge layers).
        mask: optional booleans `(batch,)`, or a list of them.

    Returns:
        The wrapped layer's output at that step, `(batch, ...)`.

    Example:

    >>> import numpy as np
    >>> import keras
    >>> from keras_gru_plus import OneStep
    >>> norm = keras.layers.LayerNormalization(axis=2)
    >>> _ = norm(np.ones((2, 5, 3), "float32"))
    >>> tuple(OneStep(norm)(np.ones((2, 3), "float32")).shape)
    (2, 3)
    """

    def __init__(self, layer, **kwargs):
        if isinstance(layer, dict):
            layer = keras.saving.deserialize_keras_object(layer)
        kwargs.setdefault("dtype", layer.dtype_policy)
        super().__init__(**kwargs)
        self.layer = layer
        # The next step layer receives a mask where the next layer of the
        # whole-sequence model does: recurrent layers and TimeDistributed
        # pass none on from Keras 3.16.
        self.supports_masking = layer.supports_masking
        self._takes_mask = "mask" in inspect.signature(layer.call).parameters

    def call(self, inputs, mask=None):
        inputs = tree.map_structure(_with_time, inputs)
        if self._takes_mask and _any(mask):
            outputs = self.layer(inputs, mask=tree.map_structure(_with_time, mask))
        else:
            outputs = self.layer(inputs)
        return tree.map_structure(_without_time, outputs)

    def compute_mask(self, inputs, mask=None):
        # Asked even without a mask: Masking and Embedding make one.
        inputs = tree.map_structure(_with_time, inputs)
        mask = None if not _any(mask) else tree.map_structure(_with_time, mask)
        out_mask = self.layer.compute_mask(inputs, mask)
        return tree.map_structure(_without_time, out_mask)

    def compute_output_shape(self, inputs_shape):
        shapes = tree.map_shape_structure(
            lambda s: (s[0], 1) + tuple(s[1:]), inputs_shape
        )
        out = self.layer.compute_output_shape(shapes)
        return tree.map_shape_structure(lambda s: (s[0],) + tuple(s[2:]), out)

    def get_config(self):
        config = super().get_config()
        config.pop("dtype", None)
        config["layer"] = keras.saving.serialize_keras_object(self.layer)
        return config


def _any(mask):
    return mask is not None and any(m is not None for m in tree.flatten(mask))


def _with_time(x):
    return None if x is None else ops.expand_dims(x, 1)


def _without_time(x):
    return None if x is None else ops.squeeze(x, 1)
