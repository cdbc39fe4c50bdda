"""`StepGRU`: one time step of a `GRU`, its state an input and an output."""

import keras
from keras import ops

from keras_gru_plus import validation
from keras_gru_plus.gru import GRU


@keras.saving.register_keras_serializable(package="keras_gru_plus")
class StepGRU(keras.Layer):
    """One time step of a `keras_gru_plus.GRU`, with the state passed in and
    returned rather than kept inside the layer.

    It shares the weights of the `GRU` it wraps and computes what that
    layer computes at one step of its sequence (at inference: no dropout):

        h_t = GRU step(x_t, h_{t-1})        (equations: `GRU`'s docstring)

    A masked step (`inputs_mask[b]` False) leaves the state unchanged and outputs
    zeros (`zero_output_for_mask=True`) or the previous state (`False`),
    as the sequence layer does. `step_model` builds these for every `GRU` of
    a model; there is rarely a reason to build one directly.

    Args:
        layer: a built `keras_gru_plus.GRU`, not `go_backwards` and not
            `time_major`.
        **kwargs: `keras.Layer` arguments (`name`). The dtype policy is the
            wrapped layer's.

    Call arguments:
        inputs: the step's inputs `(batch, features)`.
        state: the previous state `(batch, units)`.
        inputs_mask: optional booleans `(batch,)`: the rows whose step is
            not masked. (Named after `inputs`, so that Keras passes the mask
            attached to them.)

    Returns:
        `[output, new_state]`, each `(batch, units)`.

    Example:

    >>> import numpy as np
    >>> import keras_gru_plus
    >>> gru = keras_gru_plus.GRU(4)
    >>> _ = gru(np.zeros((2, 3, 5), "float32"))
    >>> step = keras_gru_plus.StepGRU(gru)
    >>> output, state = step(np.zeros((2, 5), "float32"), np.zeros((2, 4), "float32"))
    >>> tuple(state.shape)
    (2, 4)
    """

    def __init__(self, layer, **kwargs):
        if isinstance(layer, dict):
            layer = keras.saving.deserialize_keras_object(layer)
        _check_steppable(layer)
        kwargs.setdefault("dtype", layer.dtype_policy)
        super().__init__(**kwargs)
        self.layer = layer
        # The next step layer receives a mask where the next layer of the
        # whole-sequence model does: recurrent layers and TimeDistributed
        # pass none on from Keras 3.16.
        self.supports_masking = layer.supports_masking

    @property
    def units(self):
        return self.layer.cell.units

    @property
    def state_dtype(self):
        """The dtype of the state in and out: the compute dtype."""
        return self.compute_dtype

    def build(self, inputs_shape, state_shape=None):
        if not self.layer.cell.built:
            self.layer.cell.build((None, inputs_shape[-1]))

    def call(self, inputs, state, inputs_mask=None):
        cell = self.layer.cell
        input_dim = cell.kernel.shape[0]
        if len(inputs.shape) != 2 or inputs.shape[-1] not in (None, input_dim):
            raise ValueError(
                f"StepGRU {self.name}: expected `inputs` of shape (batch, "
                f"{input_dim}), one time step, got shape {tuple(inputs.shape)}."
            )
        state = ops.convert_to_tensor(
            validation.check_initial_state(
                state, inputs.shape[0], self.units, name="state"
            )
        )
        inputs = ops.convert_to_tensor(inputs)
        if not keras.backend.is_float_dtype(inputs.dtype):
            inputs = ops.cast(inputs, self.compute_dtype)
        state = ops.cast(state, self.compute_dtype)
        new_state, _ = cell.call(inputs, [state], training=False)
        if inputs_mask is None:
            return [new_state, new_state]
        keep = ops.expand_dims(ops.cast(inputs_mask, "bool"), -1)
        held = ops.zeros_like(state) if self.layer.zero_output_for_mask else state
        return [ops.where(keep, new_state, held), ops.where(keep, new_state, state)]

    def compute_mask(self, inputs, mask=None):
        # The output of a sequence-returning GRU is masked where its inputs
        # are (the next GRU skips those steps too); the state never is.
        return [mask if self.layer.return_sequences else None, None]

    def compute_output_shape(self, inputs_shape, state_shape=None):
        shape = (inputs_shape[0], self.units)
        return [shape, shape]

    def get_config(self):
        config = super().get_config()
        config.pop("dtype", None)
        config["layer"] = keras.saving.serialize_keras_object(self.layer)
        return config


def _check_steppable(layer):
    if not isinstance(layer, GRU):
        raise TypeError(
            "StepGRU: expected a keras_gru_plus.GRU for `layer`, got "
            f"{type(layer).__name__}."
        )
    if layer.go_backwards:
        raise ValueError(
            f"Layer {layer.name!r} (GRU, go_backwards=True) cannot run one "
            "step at a time: it reads its sequence from the last step, so "
            "its first output needs every later input."
        )
    if layer.time_major:
        raise ValueError(
            f"Layer {layer.name!r} (GRU, time_major=True) cannot run one "
            "step at a time here: the step model takes batch-major inputs "
            "`(batch, features)`; rebuild the model batch-major."
        )
