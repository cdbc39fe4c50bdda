"""The GRU recurrence as small pure functions over `keras.ops`.

Conventions shared by every function here, and by `keras.layers.GRU`:

- Gate order in every fused weight is (z, r, h): update gate, reset gate,
  candidate. `kernel` is `(input_dim, 3 * units)`, `recurrent_kernel` is
  `(units, 3 * units)`.
- `reset_after=True` (the default, cuDNN compatible) keeps two biases, one
  for the input projection and one for the recurrent projection, stored as a
  `(2, 3 * units)` array; the reset gate multiplies the *result* of the
  recurrent matmul:

      z  = recurrent_activation(x W_z + b_z + h R_z + rb_z)
      r  = recurrent_activation(x W_r + b_r + h R_r + rb_r)
      hh = activation(x W_h + b_h + r * (h R_h + rb_h))
      h' = z * h + (1 - z) * hh

- `reset_after=False` (the original 2014 formulation) has one `(3 * units,)`
  bias and applies the reset gate *before* the recurrent matmul:

      hh = activation(x W_h + b_h + (r * h) R_h)

The sequence functions work time-major, `(time, batch, ...)`: the layer
moves the time axis to the front once, and the loop slices along axis 0.
The input projection of all time steps is one matmul per gate made before
the loop, so each step only does the recurrent matmul.
"""

from keras import ops

from keras_gru_plus import bptt
from keras_gru_plus import scan


def split_bias(bias, reset_after):
    """Splits the stored bias into `(input_bias, recurrent_bias)`.

    Either may be `None`: no bias at all when `use_bias=False`, and no
    recurrent bias when `reset_after=False`.
    """
    if bias is None:
        return None, None
    if reset_after:
        return bias[0], bias[1]
    return bias, None


def split_gates(tensor, units):
    """Splits the last axis of a fused `(..., 3 * units)` tensor into z, r, h."""
    return (
        tensor[..., :units],
        tensor[..., units : 2 * units],
        tensor[..., 2 * units :],
    )


def project_inputs(inputs, kernel, input_bias, units, input_masks=None):
    """Input projection of every step, one array per gate.

    Args:
        inputs: `(..., input_dim)` tensor: one step `(batch, input_dim)` or a
            time-major sequence `(time, batch, input_dim)`.
        kernel: `(input_dim, 3 * units)` input kernel, gates (z, r, h).
        input_bias: `(3 * units,)` input bias or `None`.
        units: number of units.
        input_masks: `None`, or a tuple of one or three `(batch, input_dim)`
            dropout masks. One mask is shared by the three gates; three
            masks apply one per gate (z, r, h).

    Returns:
        A tuple `(x_z, x_r, x_h)` of `(..., units)` tensors.
    """
    kernels = split_gates(kernel, units)
    biases = (
        split_gates(input_bias, units)
        if input_bias is not None
        else (None, None, None)
    )
    if input_masks is None:
        gate_inputs = (inputs, inputs, inputs)
    elif len(input_masks) == 1:
        dropped = inputs * input_masks[0]
        gate_inputs = (dropped, dropped, dropped)
    else:
        gate_inputs = tuple(inputs * m for m in input_masks)
    projected = []
    for x, w, b in zip(gate_inputs, kernels, biases):
        p = ops.matmul(x, w)
        if b is not None:
            p = p + b
        projected.append(p)
    return tuple(projected)


def gru_step(
    h_tm1,
    x_gates,
    recurrent_kernel,
    recurrent_bias,
    activation,
    recurrent_activation,
    reset_after,
    recurrent_masks=None,
):
    """One GRU step from the projected inputs.

    Args:
        h_tm1: `(batch, units)` previous state.
        x_gates: `(x_z, x_r, x_h)`, each `(batch, units)`, the projected
            inputs of this step with the input bias included.
        recurrent_kernel: `(units, 3 * units)` recurrent kernel, gates
            (z, r, h).
        recurrent_bias: `(3 * units,)` recurrent bias (`reset_after=True`
            only) or `None`.
        activation: candidate activation, a callable.
        recurrent_activation: gate activation, a callable.
        reset_after: which formula variant to use; see the module docstring.
        recurrent_masks: `None`, or a tuple of one or three `(batch, units)`
            recurrent dropout masks. They multiply the state entering the
            recurrent matmul only; the final interpolation uses the
            undropped `h_tm1`, as in Keras.

    Returns:
        The new state `h`, `(batch, units)`.
    """
    units = h_tm1.shape[-1]
    if units is None:
        units = recurrent_kernel.shape[0]
    x_z, x_r, x_h = x_gates
    if recurrent_masks is None or len(recurrent_masks) == 1:
        h_in = h_tm1 if recurrent_masks is None else h_tm1 * recurrent_masks[0]
        if reset_after:
            # One fused matmul for the three gates.
            inner = ops.matmul(h_in, recurrent_kernel)
            if recurrent_bias is not None:
                inner = inner + recurrent_bias
            rec_z, rec_r, rec_h = split_gates(inner, units)
        else:
            # z and r share one matmul; the candidate needs r first.
            inner = ops.matmul(h_in, recurrent_kernel[:, : 2 * units])
            rec_z, rec_r = inner[:, :units], inner[:, units:]
        h_in_candidate = h_in
    else:
        # Three masks, one per gate (`implementation=1`): no fused matmul.
        h_z, h_r, h_in_candidate = (h_tm1 * m for m in recurrent_masks)
        r_z, r_r, r_h = split_gates(recurrent_kernel, units)
        b_z, b_r, b_h = (
            split_gates(recurrent_bias, units)
            if recurrent_bias is not None
            else (None, None, None)
        )
        rec_z = ops.matmul(h_z, r_z)
        rec_r = ops.matmul(h_r, r_r)
        if b_z is not None:
            rec_z = rec_z + b_z
            rec_r = rec_r + b_r
        if reset_after:
            rec_h = ops.matmul(h_in_candidate, r_h)
            if b_h is not None:
                rec_h = rec_h + b_h

    z = recurrent_activation(x_z + rec_z)
    r = recurrent_activation(x_r + rec_r)
    if reset_after:
        candidate_in = r * rec_h
    else:
        candidate_in = ops.matmul(
            r * h_in_candidate, recurrent_kernel[:, 2 * units :]
        )
    hh = activation(x_h + candidate_in)
    # Previous state and candidate mixed by the update gate.
    return z * h_tm1 + (1 - z) * hh


def run_sequence(
    x_gates,
    initial_state,
    recurrent_kernel,
    recurrent_bias,
    activation,
    recurrent_activation,
    reset_after,
    mask=None,
    recurrent_masks=None,
    zero_output_for_mask=False,
    return_sequences=True,
    unroll=False,
    inference=False,
):
    """Runs the recurrence over a time-major sequence.

    The steps are taken in the order of axis 0; the caller reverses the
    inputs (and the mask) for `go_backwards`, and the outputs come back in
    the order the steps were taken, as in Keras.

    Masked steps (`mask[t, b] == False`) keep the previous state. Their
    output is zeros with `zero_output_for_mask=True`, and otherwise the
    output of the previous step, zeros before the first step (the Keras
    convention on TensorFlow and PyTorch).

    Args:
        x_gates: `(x_z, x_r, x_h)`, each `(time, batch, units)`.
        initial_state: `(batch, units)`.
        recurrent_kernel, recurrent_bias, activation, recurrent_activation,
            reset_after, recurrent_masks: as for `gru_step`.
        mask: `None` or a boolean `(time, batch)` tensor.
        zero_output_for_mask: output zeros at masked steps.
        return_sequences: whether to return the output of every step.
        unroll: a Python loop instead of `keras.ops.scan`; needs a static
            number of time steps.
        inference: the caller does not train (`training` is false). With
            `return_sequences=False` the loop then keeps only the state.

    Returns:
        `(last_output, outputs, final_state)`: `outputs` is
        `(time, batch, units)` or `None` when `return_sequences=False`.
    """

    def cell(h, xs):
        return gru_step(
            h,
            xs,
            recurrent_kernel,
            recurrent_bias,
            activation,
            recurrent_activation,
            reset_after,
            recurrent_masks,
        )

    # The loop carries the state alone and emits the state after each step;
    # the outputs of masked steps are derived after the loop (below), so
    # the carry and the emitted value share one structure, as the
    # TensorFlow `scan` requires.
    if mask is None:
        xs = tuple(x_gates)

        def step(h, xs):
            h_new = cell(h, xs)
            return h_new, h_new

    else:
        mask = ops.cast(mask, "bool")
        xs = tuple(x_gates) + (ops.expand_dims(mask, -1),)

        def step(h, xs):
            *gates, m = xs
            h_next = ops.where(m, cell(h, gates), h)
            return h_next, h_next

    if unroll:
        h = initial_state
        states = []
        for t in range(x_gates[0].shape[0]):
            h, _ = step(h, tuple(x[t] for x in xs))
            states.append(h)
        states = ops.stack(states)
    elif inference and not return_sequences:
        # Only the final state: a loop that stores nothing per step
        # (still differentiable by autodiff, for gradients at inference).
        def body(t, h):
            return step(h, tuple(x[t] for x in xs))[0]

        h = ops.fori_loop(0, ops.shape(xs[0])[0], body, initial_state)
        states = None
    elif bptt.supports(activation, recurrent_activation, recurrent_masks):
        # The same recurrence with a hand-written backward pass.
        states = bptt.gru_states(
            x_gates,
            initial_state,
            recurrent_kernel,
            recurrent_bias,
            activation,
            recurrent_activation,
            reset_after,
            mask=mask,
            recurrent_mask=None if recurrent_masks is None
            else recurrent_masks[0],
        )
        h = states[-1]
    else:
        h, states = scan.scan(step, initial_state, xs)
    if not return_sequences:
        states = None

    if mask is None:
        return h, states, h
    # A masked step outputs zeros (`zero_output_for_mask`) or repeats the
    # previous output, which is the state after the last unmasked step, or
    # zeros when no step was unmasked yet.
    if zero_output_for_mask:
        keep = mask
    else:
        keep = ops.cumsum(ops.cast(mask, "int32"), axis=0) > 0
    keep = ops.expand_dims(keep, -1)
    last_output = ops.where(keep[-1], h, ops.zeros_like(h))
    outputs = None
    if return_sequences:
        outputs = ops.where(keep, states, ops.zeros_like(states))
    return last_output, outputs, h

