"""`GRU`: the gated recurrent unit layer, a drop-in for `keras.layers.GRU`."""

import re
import warnings

import keras
from keras import activations
from keras import constraints
from keras import initializers
from keras import ops
from keras import regularizers

from keras_gru_plus import recurrence
from keras_gru_plus import sequence as sequence_module
from keras_gru_plus import validation
from keras_gru_plus.gru_cell import GRUCell

_UNROLL_NEEDS_TIME = (
    "Cannot unroll a GRU when the time dimension is undefined: got inputs "
    "of shape {shape}. Pass a `shape` with the number of steps to "
    "`keras.Input`, or set `unroll=False`."
)


# Whether `keras.layers.GRU` passes its mask on to the next layer: Keras up
# to 3.15 does (the output of `return_sequences=True` carries it); 3.16
# stops it (keras-team/keras#23235: its recurrent layers get
# `supports_masking=False`, still use the mask they are given, and
# `Layer.__call__` warns that it is dropped). Read off the installed
# version ("3.16.0.dev..." for the nightly) rather than by building the
# built-in; tests/test_masks.py compares with the built-in itself.
_MAJOR_MINOR = re.match(r"(\d+)\.(\d+)", keras.version())
BUILTIN_PASSES_MASKS_ON = tuple(map(int, _MAJOR_MINOR.groups())) < (3, 16)


class GRU(keras.Layer):
    """Gated Recurrent Unit - Cho et al. 2014, written in `keras.ops`.

    The same arguments, weights and numbers as `keras.layers.GRU`, with one
    code path for JAX, TensorFlow and PyTorch, plus the Keras 2 (`tf.keras`)
    arguments and methods that Keras 3 dropped (`time_major`,
    `reset_states(states)`, the dropout-mask methods).

    Gates are ordered (z, r, h): update, reset, candidate. With
    `reset_after=True` (default, cuDNN compatible):

    ```
    z_t  = recurrent_activation(x_t W_z + b_z + h_{t-1} R_z + rb_z)
    r_t  = recurrent_activation(x_t W_r + b_r + h_{t-1} R_r + rb_r)
    hh_t = activation(x_t W_h + b_h + r_t * (h_{t-1} R_h + rb_h))
    h_t  = z_t * h_{t-1} + (1 - z_t) * hh_t
    ```

    With `reset_after=False` (the original formulation),
    `hh_t = activation(x_t W_h + b_h + (r_t * h_{t-1}) R_h)` and there is
    no recurrent bias.

    With `layer_norm=True` (layer normalization, Ba, Kiros & Hinton 2016),
    the input projection and the recurrent projection are normalized
    separately and per gate, each gate over its `units` values, with gains
    and shifts of their own, before the biases and the reset gate:

    ```
    LN(v) = gamma * (v - mean(v)) / sqrt(var(v) + epsilon) + beta
    z_t  = recurrent_activation(LNx_z(x_t W_z) + b_z + LNh_z(h_{t-1} R_z) + rb_z)
    r_t  = recurrent_activation(LNx_r(x_t W_r) + b_r + LNh_r(h_{t-1} R_r) + rb_r)
    hh_t = activation(LNx_h(x_t W_h) + b_h + r_t * (LNh_h(h_{t-1} R_h) + rb_h))
    h_t  = z_t * h_{t-1} + (1 - z_t) * hh_t
    ```

    and with `reset_after=False`,
    `hh_t = activation(LNx_h(x_t W_h) + b_h + LNh_h((r_t * h_{t-1}) R_h))`.
    In training the input side is normalized for all steps of a block of
    steps at once (the whole sequence, or blocks of 25 or 100 steps as the
    plain layer's projection), before its loop (TensorFlow's inference
    normalizes each step's inputs in its loop, where it projects them), and
    the backward pass is the same hand-written one as without it. Neither
    Keras nor PyTorch has such a layer: `interop.to_torch_state_dict` and
    `interop.from_keras2_config` refuse it.

    Weights live in `layer.cell` under the names Keras uses, so
    `set_weights`, `.weights.h5` files and configs move between this layer
    and `keras.layers.GRU`: `kernel` `(input_dim, 3 * units)`,
    `recurrent_kernel` `(units, 3 * units)`, `bias` `(2, 3 * units)` when
    `reset_after=True` (input bias, recurrent bias) else `(3 * units,)`;
    with `layer_norm=True` also `input_norm_gamma`, `input_norm_beta`,
    `recurrent_norm_gamma`, `recurrent_norm_beta`, each `(3 * units,)`,
    gates (z, r, h).

    The input projection of all time steps is one matmul made before the
    loop (long sequences: one per block of steps; TensorFlow inference: one
    per step, which its loop overlaps with the recurrence); the loop
    (`keras.ops.scan`, or a Python loop with `unroll=True`) does one
    recurrent matmul per step. Masks are applied inside the same loop.

    On PyTorch, `jit_compile=True` makes Keras hand its training, test and
    predict steps to `torch.compile`, which traces every step of the loop
    and of its backward pass into one graph and compiles it; the engine
    then keeps no gates, runs sequences under 200 steps in one block, and
    has the training steps project their own inputs, so that the steps
    compile to shared kernels (`policy.BackendPolicy.compiled`). Measured
    with the model of `benchmarks/torch_compile.py` (50 steps, 32 units, 2
    CPU cores, `OMP_NUM_THREADS=1`, an empty Inductor cache, medians of
    three runs each, interleaved, on a slow day): the first training call
    takes 108.7 s here against 132.1 s for `keras.layers.GRU` (173.5 s
    before the steps projected their own inputs), a later step 13.9 ms
    against 18.2 ms (in earlier runs 3.54-3.7 ms against 4.6-4.95 ms).
    With a mask and `return_sequences=True` (on a faster day) the first
    call takes 120.3 s against the built-in's 65.6 s, but then 11.6 ms a
    step against 101.8 ms. Without it (Keras' default on
    PyTorch) nothing is compiled, and a step takes 11.0 ms (the built-in
    11.5 ms, on the day of the earlier runs). So compile with
    `jit_compile=True` for long training runs only, and recompile a model
    loaded from a file written with it (as a JAX model may be) for short
    ones: `model.compile(..., jit_compile=False)`.

    Args:
        units: Positive integer, dimensionality of the output space.
        activation: Activation function of the candidate. Default: `"tanh"`.
            `None` means linear.
        recurrent_activation: Activation function of the gates. Default:
            `"sigmoid"`. `None` means linear.
        use_bias: Boolean, whether the layer uses a bias. Default: `True`.
        kernel_initializer: Initializer for `kernel`. Default:
            `"glorot_uniform"`.
        recurrent_initializer: Initializer for `recurrent_kernel`. Default:
            `"orthogonal"`.
        bias_initializer: Initializer for `bias`. Default: `"zeros"`.
        kernel_regularizer: Regularizer for `kernel`. Default: `None`.
        recurrent_regularizer: Regularizer for `recurrent_kernel`. Default:
            `None`.
        bias_regularizer: Regularizer for `bias`. Default: `None`.
        activity_regularizer: Regularizer for the layer's output. Default:
            `None`.
        kernel_constraint: Constraint for `kernel`. Default: `None`.
        recurrent_constraint: Constraint for `recurrent_kernel`. Default:
            `None`.
        bias_constraint: Constraint for `bias`. Default: `None`.
        dropout: Float in [0, 1], fraction of the input units to drop, with
            one mask per sequence. `1.0` is accepted (the built-in saves it)
            and, as in `keras.layers.GRUCell`, drops nothing. Default: `0.0`.
        recurrent_dropout: Float in [0, 1], fraction of the state units to
            drop in the recurrent matmul, one mask per sequence; `1.0` drops
            nothing. Default: `0.0`.
        seed: Integer or `None`, seed of the dropout masks. Default: `None`.
        return_sequences: Whether to return the output of every step, or
            only the last. Default: `False`.
        return_state: Whether to return the final state after the output.
            Default: `False`.
        go_backwards: Whether to process the sequence backwards; the
            returned sequence is then in the reversed order, as in Keras.
            Default: `False`.
        stateful: Whether the final state of batch row `i` is the initial
            state of row `i` in the next call. Needs a fixed batch size.
            Default: `False`.
        unroll: Whether to unroll the loop in Python (faster for short
            sequences, more memory). Needs a known number of steps.
            Default: `False`.
        reset_after: Whether the reset gate is applied after the recurrent
            matmul (`True`) or before it (`False`). Default: `True`.
        zero_output_for_mask: Whether masked steps output zeros (`True`) or
            repeat the previous output (`False`). Default: `False`.
        time_major: Keras 2 argument. When `True` the inputs are
            `(time, batch, features)`, a mask is `(time, batch)` and the
            returned sequence is `(time, batch, units)`. Default: `False`.
        implementation: Keras 2 argument, 0, 1 or 2; kept in the config.
            `1` draws one dropout mask per gate, the others one shared mask.
            Default: `2`.
        use_cudnn: Keras 3 argument, `"auto"`, `True` or `False`; accepted
            and kept in the config so configs load. This layer has one code
            path on every device. Default: `"auto"`.
        layer_norm: Boolean, whether the projections are layer-normalized
            per gate (see above). `False` keeps the weights and config of
            `keras.layers.GRU`. Default: `False`.
        layer_norm_epsilon: Float > 0 added to each normalization's
            variance; under float16 keep it at 1e-9 or more (see
            `GRUCell`). Default: `1e-5`.
        gamma_initializer: Initializer for the gains. Default: `"ones"`.
        beta_initializer: Initializer for the shifts. Default: `"zeros"`.
        gamma_regularizer: Regularizer for the gains. Default: `None`.
        beta_regularizer: Regularizer for the shifts. Default: `None`.
        gamma_constraint: Constraint for the gains. Default: `None`.
        beta_constraint: Constraint for the shifts. Default: `None`.
        **kwargs: `keras.Layer` arguments (`name`, `dtype`, `trainable`,
            `input_shape`).

    Call arguments (in the order of `keras.layers.GRU.call`):
        inputs: A 3-D tensor `(batch, time, features)`, or
            `(time, batch, features)` with `time_major=True`.
        initial_state: Optional `(batch, units)` tensor, or a list holding
            one; zeros by default (the stored state when `stateful=True`).
        mask: Optional boolean tensor `(batch, time)` (`(time, batch)` with
            `time_major=True`); `False` skips the step: the state is kept.
        training: Python boolean, whether dropout applies.

    Returns:
        The last output `(batch, units)`, or with `return_sequences=True`
        every output `(batch, time, units)`; with `return_state=True`, the
        tuple `(output, final_state)`.

    Example:

    >>> import numpy as np
    >>> import keras_gru_plus
    >>> inputs = np.random.random((32, 10, 8)).astype("float32")
    >>> gru = keras_gru_plus.GRU(4)
    >>> tuple(gru(inputs).shape)
    (32, 4)
    >>> gru = keras_gru_plus.GRU(4, return_sequences=True, return_state=True)
    >>> whole_sequence_output, final_state = gru(inputs)
    >>> tuple(whole_sequence_output.shape)
    (32, 10, 4)
    >>> tuple(final_state.shape)
    (32, 4)
    """

    def __init__(
        self,
        units,
        activation="tanh",
        recurrent_activation="sigmoid",
        use_bias=True,
        kernel_initializer="glorot_uniform",
        recurrent_initializer="orthogonal",
        bias_initializer="zeros",
        kernel_regularizer=None,
        recurrent_regularizer=None,
        bias_regularizer=None,
        activity_regularizer=None,
        kernel_constraint=None,
        recurrent_constraint=None,
        bias_constraint=None,
        dropout=0.0,
        recurrent_dropout=0.0,
        seed=None,
        return_sequences=False,
        return_state=False,
        go_backwards=False,
        stateful=False,
        unroll=False,
        reset_after=True,
        zero_output_for_mask=False,
        time_major=False,
        implementation=2,
        use_cudnn="auto",
        layer_norm=False,
        layer_norm_epsilon=1e-5,
        gamma_initializer="ones",
        beta_initializer="zeros",
        gamma_regularizer=None,
        beta_regularizer=None,
        gamma_constraint=None,
        beta_constraint=None,
        **kwargs,
    ):
        kwargs = validation.layer_kwargs(kwargs, "GRU")
        flags = {
            name: validation.check_bool(name, value)
            for name, value in (
                ("return_sequences", return_sequences),
                ("return_state", return_state),
                ("go_backwards", go_backwards),
                ("stateful", stateful),
                ("unroll", unroll),
                ("zero_output_for_mask", zero_output_for_mask),
                ("time_major", time_major),
            )
        }
        use_cudnn = validation.check_choice(
            "use_cudnn", use_cudnn, ("auto", True, False)
        )
        cell = GRUCell(
            units,
            activation=activation,
            recurrent_activation=recurrent_activation,
            use_bias=use_bias,
            kernel_initializer=kernel_initializer,
            recurrent_initializer=recurrent_initializer,
            bias_initializer=bias_initializer,
            kernel_regularizer=kernel_regularizer,
            recurrent_regularizer=recurrent_regularizer,
            bias_regularizer=bias_regularizer,
            kernel_constraint=kernel_constraint,
            recurrent_constraint=recurrent_constraint,
            bias_constraint=bias_constraint,
            dropout=dropout,
            recurrent_dropout=recurrent_dropout,
            reset_after=reset_after,
            seed=seed,
            implementation=implementation,
            layer_norm=layer_norm,
            layer_norm_epsilon=layer_norm_epsilon,
            gamma_initializer=gamma_initializer,
            beta_initializer=beta_initializer,
            gamma_regularizer=gamma_regularizer,
            beta_regularizer=beta_regularizer,
            gamma_constraint=gamma_constraint,
            beta_constraint=beta_constraint,
            dtype=kwargs.get("dtype"),
            trainable=kwargs.get("trainable", True),
            name="gru_cell",
        )
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            super().__init__(activity_regularizer=activity_regularizer, **kwargs)
        for warning in caught:
            # Keras' warnings about the arguments (`input_shape`), shown at
            # the line that built the layer rather than here.
            warnings.warn(warning.message, warning.category, stacklevel=2)
        self.return_sequences = flags["return_sequences"]
        self.return_state = flags["return_state"]
        self.go_backwards = flags["go_backwards"]
        self.stateful = flags["stateful"]
        self.unroll = flags["unroll"]
        self.zero_output_for_mask = flags["zero_output_for_mask"]
        self.time_major = flags["time_major"]
        self.use_cudnn = use_cudnn
        # The weights live in `self.cell`, as in `keras.layers.GRU`: the
        # attribute name is part of the `.weights.h5` layout.
        self.cell = cell
        # Whether the next layer receives the mask: as the installed
        # keras.layers.GRU does (not from Keras 3.16 on).
        self.supports_masking = BUILTIN_PASSES_MASKS_ON
        self.state_size = [cell.units]
        self.states = None
        self._expected_batch_size = None

    def __call__(self, inputs, *args, **kwargs):
        # Checked before Keras converts the inputs, so that strings or
        # objects get our message, not a backend's conversion error.
        validation.check_dtype(inputs)
        return super().__call__(inputs, *args, **kwargs)

    def build(self, inputs_shape, initial_state_shape=None):
        inputs_shape = tuple(inputs_shape)
        validation.check_sequence(inputs_shape, self.time_major)
        batch = inputs_shape[1] if self.time_major else inputs_shape[0]
        time = inputs_shape[0] if self.time_major else inputs_shape[1]
        if self.unroll and time is None:
            raise ValueError(_UNROLL_NEEDS_TIME.format(shape=inputs_shape))
        if not self.cell.built:
            self.cell.build((batch, inputs_shape[-1]))
        if self.stateful:
            if self.states is not None:
                self.reset_state()
            else:
                if batch is None:
                    raise ValueError(
                        "When using `stateful=True`, the batch size must be "
                        "static. Received inputs of shape "
                        f"{inputs_shape} (pass `batch_size` to "
                        "`keras.Input`)."
                    )
                self._create_state_variables(batch)

    def call(self, inputs, initial_state=None, mask=None, training=None):
        input_dim = self.cell.kernel.shape[0]
        validation.check_sequence(tuple(inputs.shape), self.time_major, input_dim)
        if self.time_major:
            time, batch = inputs.shape[0], inputs.shape[1]
        else:
            batch, time = inputs.shape[0], inputs.shape[1]
        if self.unroll and time is None:
            raise ValueError(_UNROLL_NEEDS_TIME.format(shape=tuple(inputs.shape)))
        # On the backend's device: on PyTorch a tensor passed from the CPU
        # to a layer on a GPU moves there (keras.layers.GRU's first op
        # moves it too); elsewhere this changes nothing.
        inputs = ops.convert_to_tensor(inputs)
        if not keras.backend.is_float_dtype(inputs.dtype):
            # Integer and boolean inputs are computed in the float dtype.
            inputs = ops.cast(inputs, self.compute_dtype)
        if isinstance(mask, (list, tuple)):
            mask = mask[0]
        if mask is not None:
            validation.check_mask(mask, batch, time, self.time_major)
            mask = ops.convert_to_tensor(mask)
        if self.stateful and batch is not None:
            if batch != self._expected_batch_size:
                raise ValueError(
                    "A stateful GRU needs the batch size of its state: "
                    f"expected batch size {self._expected_batch_size}, "
                    f"received inputs of shape {tuple(inputs.shape)}."
                )
        dynamic_batch = ops.shape(inputs)[1 if self.time_major else 0]
        if initial_state is not None:
            h0 = ops.convert_to_tensor(
                validation.check_initial_state(initial_state, batch, self.cell.units)
            )
        elif self.stateful:
            # A copy, so that assigning the new state later leaves the
            # autograd graph of this call intact on PyTorch.
            h0 = ops.copy(self.states[0].value)
        else:
            h0 = self.get_initial_state(dynamic_batch)[0]
        h0 = ops.cast(h0, self.compute_dtype)

        # Time-major from here on: the loop slices axis 0.
        sequence = inputs if self.time_major else ops.transpose(inputs, (1, 0, 2))
        if mask is not None:
            # (`run_sequence` casts it to bool.)
            if not self.time_major:
                mask = ops.transpose(mask, (1, 0))

        input_masks, recurrent_masks = self._sequence_dropout_masks(
            sequence[0], h0, training
        )
        cell = self.cell
        # Weights read once, before the loop: no variable reads inside it
        # (TensorFlow under XLA cannot differentiate a loop that reads a
        # variable), and under mixed precision they arrive already cast.
        # (`ops.copy`, since TensorFlow's `convert_to_tensor` hands a
        # variable back unread.)
        kernel = ops.copy(cell.kernel)
        recurrent_kernel = ops.copy(cell.recurrent_kernel)
        bias = None if cell.bias is None else ops.copy(cell.bias)
        projection_bias, candidate_bias = recurrence.split_bias(
            bias, cell.reset_after, cell.units
        )

        if self.go_backwards:
            sequence = ops.flip(sequence, axis=0)
            if mask is not None:
                mask = ops.flip(mask, axis=0)

        weights = recurrence.GRUWeights(
            kernel,
            recurrent_kernel,
            projection_bias,
            candidate_bias,
            input_masks,
            recurrent_masks,
            **{name: ops.copy(w) for name, w in cell.norm_weights.items()},
        )
        last_output, outputs, state = sequence_module.run_sequence(
            sequence,
            h0,
            weights,
            cell.spec,
            mask=mask,
            zero_output_for_mask=self.zero_output_for_mask,
            return_sequences=self.return_sequences,
            unroll=self.unroll,
            training=bool(training),
        )

        if self.stateful:
            self.states[0].assign(ops.cast(state, self.states[0].dtype))
        if self.return_sequences:
            output = outputs if self.time_major else ops.transpose(outputs, (1, 0, 2))
        else:
            output = last_output
        if self.return_state:
            return output, state
        return output

    def get_config(self):
        cell = self.cell
        config = {
            "units": cell.units,
            "activation": activations.serialize(cell.activation),
            "recurrent_activation": activations.serialize(cell.recurrent_activation),
            "use_bias": cell.use_bias,
            "kernel_initializer": initializers.serialize(cell.kernel_initializer),
            "recurrent_initializer": initializers.serialize(cell.recurrent_initializer),
            "bias_initializer": initializers.serialize(cell.bias_initializer),
            "kernel_regularizer": regularizers.serialize(cell.kernel_regularizer),
            "recurrent_regularizer": regularizers.serialize(cell.recurrent_regularizer),
            "bias_regularizer": regularizers.serialize(cell.bias_regularizer),
            "activity_regularizer": regularizers.serialize(self.activity_regularizer),
            "kernel_constraint": constraints.serialize(cell.kernel_constraint),
            "recurrent_constraint": constraints.serialize(cell.recurrent_constraint),
            "bias_constraint": constraints.serialize(cell.bias_constraint),
            "dropout": cell.dropout,
            "recurrent_dropout": cell.recurrent_dropout,
            "seed": cell.seed,
            "return_sequences": self.return_sequences,
            "return_state": self.return_state,
            "go_backwards": self.go_backwards,
            "stateful": self.stateful,
            "unroll": self.unroll,
            "reset_after": cell.reset_after,
            "zero_output_for_mask": self.zero_output_for_mask,
            "implementation": cell.implementation,
            "use_cudnn": self.use_cudnn,
            **cell.layer_norm_config(),
        }
        # `time_major` is Keras 2 only: written when set, so that a default
        # config also loads into keras.layers.GRU.
        if self.time_major:
            config["time_major"] = True
        base_config = super().get_config()
        return {**base_config, **config}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def set_weights(self, weights):
        """Sets the weights, all or none; see `GRUCell.set_weights`."""
        # The layer's weights are the cell's, in the same order.
        self.cell.set_weights(weights)

    def compute_output_shape(self, inputs_shape, initial_state_shape=None):
        if self.time_major:
            time, batch = inputs_shape[0], inputs_shape[1]
        else:
            batch, time = inputs_shape[0], inputs_shape[1]
        units = self.cell.units
        if not self.return_sequences:
            output_shape = (batch, units)
        elif self.time_major:
            output_shape = (time, batch, units)
        else:
            output_shape = (batch, time, units)
        if self.return_state:
            return output_shape, (batch, units)
        return output_shape

    def compute_mask(self, inputs, mask=None):
        if isinstance(mask, (list, tuple)):
            mask = mask[0]
        output_mask = mask if self.return_sequences else None
        if self.return_state:
            return [output_mask, None]
        return output_mask

    def get_initial_state(self, batch_size):
        """Zero state `[(batch_size, units)]` in the compute dtype."""
        return [ops.zeros((batch_size, self.cell.units), dtype=self.compute_dtype)]

    # State of a stateful layer.

    def _create_state_variables(self, batch_size):
        # Not tracked as weights (set past the layer's attribute tracking),
        # as in keras.layers.GRU: weight lists and weight files stay the
        # same with and without `stateful`.
        states = [
            keras.Variable(
                self.get_initial_state(batch_size)[0],
                trainable=False,
                dtype=self.variable_dtype,
                name="rnn_state",
            )
        ]
        object.__setattr__(self, "states", states)
        self._expected_batch_size = batch_size

    def reset_state(self):
        """Sets the stored state of a stateful layer to zeros."""
        if self.states is not None:
            for v in self.states:
                v.assign(ops.zeros_like(v.value))

    def reset_states(self, states=None):
        """Resets a stateful layer's state (Keras 2 semantics).

        Args:
            states: `None` for zeros, or the new state: a NumPy array or
                tensor of shape `(batch, units)`, or a list holding one.

        Raises:
            ValueError: when `states` is given to a layer that is not
                stateful or not built, or has the wrong count or shape.
        """
        if states is None:
            self.reset_state()
            return
        if not self.stateful:
            raise ValueError(
                "Received an invalid value for argument `states`: "
                "`reset_states(states)` needs a layer built with "
                f"`stateful=True`, got stateful={self.stateful}."
            )
        if self.states is None:
            raise ValueError(
                "Received an invalid value for argument `states`: the layer "
                "is not built yet, so it has no state to set. Call it on "
                "inputs (or `build` it) first."
            )
        value = validation.check_initial_state(
            states, self._expected_batch_size, self.cell.units, name="states"
        )
        self.states[0].assign(ops.cast(value, self.states[0].dtype))

    # Dropout masks (Keras 2 API), forwarded to the cell that owns them.

    def get_dropout_mask_for_cell(self, inputs, training, count=1):
        """Input dropout mask `(batch, features)`, cached until reset.

        Args:
            inputs: The layer's input sequence (in its layout, so
                `(time, batch, features)` with `time_major=True`) or one
                step `(batch, features)`.
            training: Whether dropout applies; when false the mask is ones.
            count: How many masks to return.

        Returns:
            `None` when `dropout == 0`, else a mask or a list of `count`.
            The next call of the layer uses (then clears) the cached mask.
        """
        return self.cell.get_dropout_mask_for_cell(self._step(inputs), training, count)

    def get_recurrent_dropout_mask_for_cell(self, inputs, training, count=1):
        """Recurrent dropout mask `(batch, units)`, cached until reset.

        Args:
            inputs: The input sequence, one step, or the state; only its
                batch size is used.
            training: Whether dropout applies; when false the mask is ones.
            count: How many masks to return.

        Returns:
            `None` when `recurrent_dropout == 0`, else a mask or a list.
        """
        return self.cell.get_recurrent_dropout_mask_for_cell(
            self._step(inputs), training, count
        )

    def reset_dropout_mask(self):
        """Clears the cached input dropout mask."""
        self.cell.reset_dropout_mask()

    def reset_recurrent_dropout_mask(self):
        """Clears the cached recurrent dropout mask."""
        self.cell.reset_recurrent_dropout_mask()

    def _step(self, inputs):
        """One step `(batch, features)` of a sequence in the layer's layout."""
        if len(inputs.shape) != 3:
            return inputs
        return inputs[0] if self.time_major else inputs[:, 0, :]

    def _sequence_dropout_masks(self, step_input, h0, training):
        """Masks for one call: cached ones if prepared, then cleared."""
        cell = self.cell
        count = cell.dropout_mask_count
        try:
            input_masks = recurrent_masks = None
            if training and cell.applied_dropout > 0:
                masks = cell.get_dropout_mask_for_cell(step_input, True, count)
                input_masks = tuple(masks) if count > 1 else (masks,)
            if training and cell.applied_recurrent_dropout > 0:
                masks = cell.get_recurrent_dropout_mask_for_cell(h0, True, count)
                recurrent_masks = tuple(masks) if count > 1 else (masks,)
        finally:
            cell.reset_dropout_mask()
            cell.reset_recurrent_dropout_mask()
        return input_masks, recurrent_masks


# `keras.layers.GRU` exposes the cell's configuration on the layer.
def _cell_property(name):
    return property(
        lambda self: getattr(self.cell, name),
        doc=f"`{name}` of the cell; see `GRUCell`.",
    )


for _name in (
    "units",
    "activation",
    "recurrent_activation",
    "use_bias",
    "kernel_initializer",
    "recurrent_initializer",
    "bias_initializer",
    "kernel_regularizer",
    "recurrent_regularizer",
    "bias_regularizer",
    "kernel_constraint",
    "recurrent_constraint",
    "bias_constraint",
    "dropout",
    "recurrent_dropout",
    "reset_after",
    "seed",
    "implementation",
    "layer_norm",
    "layer_norm_epsilon",
    "gamma_initializer",
    "beta_initializer",
    "gamma_regularizer",
    "beta_regularizer",
    "gamma_constraint",
    "beta_constraint",
):
    setattr(GRU, _name, _cell_property(_name))
del _name
