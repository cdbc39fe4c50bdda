"""`GRUCell`: one step of the GRU, and the owner of its weights."""

import keras
from keras import activations
from keras import constraints
from keras import initializers
from keras import ops
from keras import regularizers

from keras_gru_plus import recurrence
from keras_gru_plus import validation


def _applied_rate(rate):
    """The dropout rate applied in training for a stored `rate`.

    `keras.layers.GRUCell` drops units only when `0 < rate < 1`, so a rate
    of 1.0 (which would leave nothing to rescale: kept units are divided by
    `1 - rate`) applies no dropout at all; so here, on every backend.
    """
    return rate if rate < 1.0 else 0.0


class GRUCell(keras.Layer):
    """Cell class for the GRU layer: one time step.

    The same weights, gate order and equations as `keras.layers.GRUCell`,
    written with `keras.ops` only. Gates are ordered (z, r, h): update,
    reset, candidate. With `reset_after=True` (default):

    ```
    z  = recurrent_activation(x W_z + b_z + h R_z + rb_z)
    r  = recurrent_activation(x W_r + b_r + h R_r + rb_r)
    hh = activation(x W_h + b_h + r * (h R_h + rb_h))
    h' = z * h + (1 - z) * hh
    ```

    With `reset_after=False` the candidate is
    `activation(x W_h + b_h + (r * h) R_h)` and there is no recurrent bias.

    With `layer_norm=True` (Ba, Kiros & Hinton 2016, arXiv 1607.06450) the
    input projection and the recurrent projection are normalized
    separately and per gate, each gate over its `units` values, before the
    biases and before the reset gate:

    ```
    LN(v) = gamma * (v - mean(v)) / sqrt(var(v) + epsilon) + beta
    z  = recurrent_activation(LNx_z(x W_z) + b_z + LNh_z(h R_z) + rb_z)
    r  = recurrent_activation(LNx_r(x W_r) + b_r + LNh_r(h R_r) + rb_r)
    hh = activation(LNx_h(x W_h) + b_h + r * (LNh_h(h R_h) + rb_h))
    hh = activation(LNx_h(x W_h) + b_h + LNh_h((r * h) R_h))  # reset_after=False
    h' = z * h + (1 - z) * hh
    ```

    (`var` the population variance; the statistics are computed in
    float32 under mixed precision.)

    Weights: `kernel` `(input_dim, 3 * units)`, `recurrent_kernel`
    `(units, 3 * units)`, `bias` `(2, 3 * units)` (row 0 input bias, row 1
    recurrent bias) when `reset_after=True`, else `(3 * units,)`; with
    `layer_norm=True` then `input_norm_gamma`, `input_norm_beta`,
    `recurrent_norm_gamma`, `recurrent_norm_beta`, each `(3 * units,)` in
    gate order (z, r, h): the gains and shifts of `LNx` and `LNh`.

    The cell can drive `keras.layers.RNN` and `keras.layers.StackedRNNCells`.
    `keras_gru_plus.GRU` uses the same step function over a whole sequence.

    Dropout is variational: one mask per sequence, the same at every step.
    `keras_gru_plus.GRU` draws the masks before its loop and clears them
    after. Under `keras.layers.RNN` they are drawn by `get_initial_state`,
    which that loop calls once per sequence when it is not stateful and
    gets no `initial_state`; otherwise the masks of the last
    `get_initial_state` call stay cached: call `reset_dropout_mask()` and
    `reset_recurrent_dropout_mask()` between batches there (or use
    `keras_gru_plus.GRU`). With no mask cached at all, masks are drawn at
    each step (not variational; not possible inside a JAX-traced loop).

    Args:
        units: Positive integer, dimensionality of the output space.
        activation: Activation function of the candidate. Default: `"tanh"`.
            `None` means linear.
        recurrent_activation: Activation function of the gates. Default:
            `"sigmoid"`. `None` means linear.
        use_bias: Boolean, whether the cell uses a bias. Default: `True`.
        kernel_initializer: Initializer for `kernel`. Default:
            `"glorot_uniform"`.
        recurrent_initializer: Initializer for `recurrent_kernel`. Default:
            `"orthogonal"`.
        bias_initializer: Initializer for `bias`. Default: `"zeros"`.
        kernel_regularizer: Regularizer for `kernel`. Default: `None`.
        recurrent_regularizer: Regularizer for `recurrent_kernel`. Default:
            `None`.
        bias_regularizer: Regularizer for `bias`. Default: `None`.
        kernel_constraint: Constraint for `kernel`. Default: `None`.
        recurrent_constraint: Constraint for `recurrent_kernel`. Default:
            `None`.
        bias_constraint: Constraint for `bias`. Default: `None`.
        dropout: Float in [0, 1], fraction of the input units to drop.
            `1.0` is accepted and, as in `keras.layers.GRUCell`, drops
            nothing. Default: `0.0`.
        recurrent_dropout: Float in [0, 1], fraction of the state units to
            drop in the recurrent matmul; `1.0` drops nothing. Default:
            `0.0`.
        reset_after: Whether the reset gate is applied after the recurrent
            matmul (`True`, cuDNN compatible) or before it (`False`).
            Default: `True`.
        seed: Integer or `None`, seed of the dropout masks. Default: `None`.
        implementation: Legacy Keras 2 argument, 0, 1 or 2. `1` draws three
            dropout masks per kind, one per gate; `0` and `2` draw one
            shared by the three gates. The numbers are otherwise identical.
            Default: `2`.
        layer_norm: Boolean, whether the input and recurrent projections
            are layer-normalized per gate (see above). With `False` the
            weights and the config are those of `keras.layers.GRUCell`.
            A gate of one unit normalizes to its shift `beta` alone (and
            of two units to `beta +- gamma`): it wants several units.
            Default: `False`.
        layer_norm_epsilon: Float > 0 added to the variance of each
            normalization. Under float16 (mixed precision) keep it at
            1e-9 or more: a gate whose values are all equal (a zero
            initial state) has `1 / sqrt(epsilon)` as its inverse
            deviation, which must fit float16 (at most 65504). Default:
            `1e-5`.
        gamma_initializer: Initializer for the gains `input_norm_gamma`
            and `recurrent_norm_gamma`. Default: `"ones"`.
        beta_initializer: Initializer for the shifts `input_norm_beta` and
            `recurrent_norm_beta`. Default: `"zeros"`.
        gamma_regularizer: Regularizer for the gains. Default: `None`.
        beta_regularizer: Regularizer for the shifts. Default: `None`.
        gamma_constraint: Constraint for the gains. Default: `None`.
        beta_constraint: Constraint for the shifts. Default: `None`.
        **kwargs: `keras.Layer` arguments (`name`, `dtype`, `trainable`).

    Call arguments:
        inputs: A 2-D tensor `(batch, input_dim)`.
        states: The previous state `(batch, units)`, or a list holding it.
        training: Python boolean, whether dropout applies.

    Returns:
        `(h, new_states)`: the new state `(batch, units)` as the output, and
        the new state in the same structure as `states`.

    Example:

    >>> import numpy as np
    >>> import keras
    >>> import keras_gru_plus
    >>> rnn = keras.layers.RNN(keras_gru_plus.GRUCell(4))
    >>> tuple(rnn(np.ones((2, 5, 3), "float32")).shape)
    (2, 4)
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
        kernel_constraint=None,
        recurrent_constraint=None,
        bias_constraint=None,
        dropout=0.0,
        recurrent_dropout=0.0,
        reset_after=True,
        seed=None,
        implementation=2,
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
        kwargs = validation.layer_kwargs(kwargs, "GRUCell")
        layer_norm = validation.check_bool("layer_norm", layer_norm)
        layer_norm_epsilon = validation.check_epsilon(
            "layer_norm_epsilon", layer_norm_epsilon
        )
        units = validation.check_units(units)
        dropout = validation.check_rate("dropout", dropout)
        recurrent_dropout = validation.check_rate(
            "recurrent_dropout", recurrent_dropout
        )
        use_bias = validation.check_bool("use_bias", use_bias)
        reset_after = validation.check_bool("reset_after", reset_after)
        implementation = validation.check_choice(
            "implementation", implementation, (0, 1, 2)
        )
        seed = validation.check_seed(seed)
        super().__init__(**kwargs)
        self.units = units
        self.dropout = dropout
        self.recurrent_dropout = recurrent_dropout
        self.use_bias = use_bias
        self.reset_after = reset_after
        self.implementation = implementation
        self.seed = seed
        self.activation = activations.get(activation)
        self.recurrent_activation = activations.get(recurrent_activation)
        self.kernel_initializer = initializers.get(kernel_initializer)
        self.recurrent_initializer = initializers.get(recurrent_initializer)
        self.bias_initializer = initializers.get(bias_initializer)
        self.kernel_regularizer = regularizers.get(kernel_regularizer)
        self.recurrent_regularizer = regularizers.get(recurrent_regularizer)
        self.bias_regularizer = regularizers.get(bias_regularizer)
        self.kernel_constraint = constraints.get(kernel_constraint)
        self.recurrent_constraint = constraints.get(recurrent_constraint)
        self.bias_constraint = constraints.get(bias_constraint)
        self.layer_norm = layer_norm
        self.layer_norm_epsilon = layer_norm_epsilon
        self.gamma_initializer = initializers.get(gamma_initializer)
        self.beta_initializer = initializers.get(beta_initializer)
        self.gamma_regularizer = regularizers.get(gamma_regularizer)
        self.beta_regularizer = regularizers.get(beta_regularizer)
        self.gamma_constraint = constraints.get(gamma_constraint)
        self.beta_constraint = constraints.get(beta_constraint)
        self.seed_generator = keras.random.SeedGenerator(seed=self.seed)
        self.state_size = self.units
        self.output_size = self.units
        # Masks per sequence, cached until reset; keyed by (count, training).
        self._dropout_masks = {}
        self._recurrent_dropout_masks = {}

    @property
    def applied_dropout(self):
        """The input dropout rate applied in training (1.0 applies none)."""
        return _applied_rate(self.dropout)

    @property
    def applied_recurrent_dropout(self):
        """The recurrent dropout rate applied in training (1.0 applies none)."""
        return _applied_rate(self.recurrent_dropout)

    @property
    def dropout_mask_count(self):
        """Masks drawn per dropout kind: one per gate with implementation 1."""
        return 3 if self.implementation == 1 else 1

    @property
    def spec(self):
        """The `recurrence.GRUSpec` of the cell: units, activations,
        `reset_after`, layer normalization."""
        return recurrence.GRUSpec(
            self.units,
            self.activation,
            self.recurrent_activation,
            self.reset_after,
            self.layer_norm,
            self.layer_norm_epsilon,
        )

    @property
    def norm_weights(self):
        """The layer-norm weights by their `recurrence.GRUWeights` names
        (`input_gamma`, ...), empty without `layer_norm`."""
        if not self.layer_norm:
            return {}
        return {
            "input_gamma": self.input_norm_gamma,
            "input_beta": self.input_norm_beta,
            "recurrent_gamma": self.recurrent_norm_gamma,
            "recurrent_beta": self.recurrent_norm_beta,
        }

    def build(self, input_shape):
        input_dim = input_shape[-1]
        if input_dim is None:
            raise ValueError(
                "Received an invalid value for argument `inputs`, expected a "
                f"known last (features) dimension, got shape {input_shape}."
            )
        self.kernel = self.add_weight(
            shape=(input_dim, 3 * self.units),
            name="kernel",
            initializer=self.kernel_initializer,
            regularizer=self.kernel_regularizer,
            constraint=self.kernel_constraint,
        )
        self.recurrent_kernel = self.add_weight(
            shape=(self.units, 3 * self.units),
            name="recurrent_kernel",
            initializer=self.recurrent_initializer,
            regularizer=self.recurrent_regularizer,
            constraint=self.recurrent_constraint,
        )
        if self.use_bias:
            # reset_after=True keeps separate input and recurrent biases as
            # rows of one (2, 3 * units) array. The shape differs on purpose
            # from CuDNNGRU's flat (6 * units,) so weight files tell them
            # apart.
            bias_shape = (2, 3 * self.units) if self.reset_after else (3 * self.units,)
            self.bias = self.add_weight(
                shape=bias_shape,
                name="bias",
                initializer=self.bias_initializer,
                regularizer=self.bias_regularizer,
                constraint=self.bias_constraint,
            )
        else:
            self.bias = None
        if self.layer_norm:
            # Gains and shifts of LNx and LNh, gates (z, r, h).
            for side in ("input", "recurrent"):
                for kind in ("gamma", "beta"):
                    setattr(
                        self,
                        f"{side}_norm_{kind}",
                        self.add_weight(
                            shape=(3 * self.units,),
                            name=f"{side}_norm_{kind}",
                            initializer=getattr(self, f"{kind}_initializer"),
                            regularizer=getattr(self, f"{kind}_regularizer"),
                            constraint=getattr(self, f"{kind}_constraint"),
                        ),
                    )

    def call(self, inputs, states, training=False):
        nested = isinstance(states, (list, tuple))
        h_tm1 = states[0] if nested else states
        input_masks = self.step_masks(inputs, h_tm1, training, recurrent=False)
        recurrent_masks = self.step_masks(inputs, h_tm1, training, recurrent=True)
        projection_bias, candidate_bias = recurrence.split_bias(
            self.bias, self.reset_after, self.units
        )
        weights = recurrence.GRUWeights(
            self.kernel,
            self.recurrent_kernel,
            projection_bias,
            candidate_bias,
            input_masks,
            recurrent_masks,
            **self.norm_weights,
        )
        (projected,) = recurrence.projected_arrays(inputs, weights, self.spec, False)
        h = recurrence.gru_step(
            h_tm1,
            projected,
            self.recurrent_kernel,
            candidate_bias,
            self.spec,
            recurrent_masks,
            recurrence.recurrent_norms(weights, self.spec),
        )
        return h, ([h] if nested else h)

    def get_config(self):
        config = {
            "units": self.units,
            "activation": activations.serialize(self.activation),
            "recurrent_activation": activations.serialize(self.recurrent_activation),
            "use_bias": self.use_bias,
            "kernel_initializer": initializers.serialize(self.kernel_initializer),
            "recurrent_initializer": initializers.serialize(self.recurrent_initializer),
            "bias_initializer": initializers.serialize(self.bias_initializer),
            "kernel_regularizer": regularizers.serialize(self.kernel_regularizer),
            "recurrent_regularizer": regularizers.serialize(self.recurrent_regularizer),
            "bias_regularizer": regularizers.serialize(self.bias_regularizer),
            "kernel_constraint": constraints.serialize(self.kernel_constraint),
            "recurrent_constraint": constraints.serialize(self.recurrent_constraint),
            "bias_constraint": constraints.serialize(self.bias_constraint),
            "dropout": self.dropout,
            "recurrent_dropout": self.recurrent_dropout,
            "reset_after": self.reset_after,
            "seed": self.seed,
            "implementation": self.implementation,
        }
        config.update(self.layer_norm_config())
        base_config = super().get_config()
        return {**base_config, **config}

    def layer_norm_config(self):
        """The layer-norm arguments of the config; empty with
        `layer_norm=False`, so that such configs stay those of
        `keras.layers.GRUCell` and `keras.layers.GRU`."""
        if not self.layer_norm:
            return {}
        return {
            "layer_norm": True,
            "layer_norm_epsilon": self.layer_norm_epsilon,
            "gamma_initializer": initializers.serialize(self.gamma_initializer),
            "beta_initializer": initializers.serialize(self.beta_initializer),
            "gamma_regularizer": regularizers.serialize(self.gamma_regularizer),
            "beta_regularizer": regularizers.serialize(self.beta_regularizer),
            "gamma_constraint": constraints.serialize(self.gamma_constraint),
            "beta_constraint": constraints.serialize(self.beta_constraint),
        }

    def set_weights(self, weights):
        """Sets the weights from NumPy arrays, all or none.

        Args:
            weights: a list of arrays in the order of `layer.weights`
                (`kernel`, `recurrent_kernel`, `bias`, then the four
                layer-norm weights with `layer_norm=True`), as
                `get_weights()` returns them, also from `keras.layers.GRU`.

        Raises:
            ValueError: when the count or any shape is wrong; then no
                weight is changed.
        """
        validation.check_weights(self, weights)
        super().set_weights(weights)

    def get_initial_state(self, batch_size=None):
        """Zero state `[(batch_size, units)]` in the compute dtype.

        With dropout, this also draws the sequence's dropout masks: loops
        such as `keras.layers.RNN` ask for the initial state once per
        sequence, before the loop, so the steps then share one mask
        (variational dropout) and no random state changes inside a traced
        loop.
        """
        state = ops.zeros((batch_size, self.units), dtype=self.compute_dtype)
        drops = self.applied_dropout > 0 or self.applied_recurrent_dropout > 0
        if self.built and drops:
            self.reset_dropout_mask()
            self.reset_recurrent_dropout_mask()
            count = self.dropout_mask_count
            input_like = ops.zeros(
                (batch_size, self.kernel.shape[0]), dtype=self.compute_dtype
            )
            self.get_dropout_mask_for_cell(input_like, True, count)
            self.get_recurrent_dropout_mask_for_cell(state, True, count)
        return [state]

    # Dropout masks (the Keras 2 `DropoutRNNCellMixin` API).

    def get_dropout_mask_for_cell(self, inputs, training, count=1):
        """Returns the input dropout mask, drawing and caching it if needed.

        Args:
            inputs: The step input `(batch, input_dim)` whose shape the mask
                takes. A 3-D `(batch, time, input_dim)` sequence is accepted
                too: the mask is one step's, used at every step.
            training: Whether dropout applies. When false the mask is ones.
            count: How many masks to return (Keras 2 used 3, one per gate).

        Returns:
            `None` when `dropout == 0`; else one `(batch, input_dim)` mask
            (`count=1`) or a list of `count` masks, with kept entries scaled
            by `1 / (1 - dropout)`. The same masks come back until
            `reset_dropout_mask()`.
        """
        if self.applied_dropout == 0:
            return None
        step = inputs[:, 0, :] if len(inputs.shape) == 3 else inputs
        return self._cached_masks(
            self._dropout_masks, step, self.applied_dropout, training, count
        )

    def get_recurrent_dropout_mask_for_cell(self, inputs, training, count=1):
        """Returns the recurrent dropout mask, drawing and caching it if needed.

        Args:
            inputs: A tensor whose first axis is the batch, such as the
                previous state `(batch, units)`; the mask is
                `(batch, units)`.
            training: Whether dropout applies. When false the mask is ones.
            count: How many masks to return.

        Returns:
            `None` when `recurrent_dropout == 0`; else one `(batch, units)`
            mask or a list of `count`, scaled by
            `1 / (1 - recurrent_dropout)`, cached until
            `reset_recurrent_dropout_mask()`.
        """
        if self.applied_recurrent_dropout == 0:
            return None
        like = ops.zeros((ops.shape(inputs)[0], self.units), dtype=self.compute_dtype)
        return self._cached_masks(
            self._recurrent_dropout_masks,
            like,
            self.applied_recurrent_dropout,
            training,
            count,
        )

    def reset_dropout_mask(self):
        """Clears the cached input dropout mask; the next call draws anew."""
        self._dropout_masks = {}

    def reset_recurrent_dropout_mask(self):
        """Clears the cached recurrent dropout mask."""
        self._recurrent_dropout_masks = {}

    def step_masks(self, inputs, h_tm1, training, recurrent):
        """The masks one step applies, as a tuple, or `None` for no dropout.

        Uses masks cached by the `get_*_mask_for_cell` methods, and draws
        fresh ones (not cached) when the driving loop prepared none.
        """
        if recurrent:
            rate = self.applied_recurrent_dropout
        else:
            rate = self.applied_dropout
        if not training or rate == 0:
            return None
        cache = self._recurrent_dropout_masks if recurrent else self._dropout_masks
        masks = cache.get((self.dropout_mask_count, True))
        if masks is None:
            like = h_tm1 if recurrent else inputs
            masks = self._draw_masks(like, rate, self.dropout_mask_count)
        return masks

    def _cached_masks(self, cache, like, rate, training, count):
        key = (count, bool(training))
        if key not in cache:
            if training:
                cache[key] = self._draw_masks(like, rate, count)
            else:
                cache[key] = tuple(ops.ones_like(like) for _ in range(count))
        masks = cache[key]
        return masks[0] if count == 1 else list(masks)

    def _draw_masks(self, like, rate, count):
        ones = ops.ones_like(like)
        return tuple(
            keras.random.dropout(ones, rate=rate, seed=self.seed_generator)
            for _ in range(count)
        )
