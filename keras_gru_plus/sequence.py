"""The GRU over a whole time-major sequence: loops, masks, outputs."""

from keras import ops

from keras_gru_plus import bptt
from keras_gru_plus import recurrence
from keras_gru_plus import scan


def run_sequence(
    x,
    initial_state,
    recurrent_kernel,
    candidate_bias,
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

    Which loop runs:
    - `unroll=True`: a Python loop, autodiff;
    - `inference` without `return_sequences`: a loop that keeps only the
      state (`keras.ops.fori_loop`), autodiff;
    - training with the usual activations: `bptt.gru_states`, with the
      hand-written backward pass;
    - otherwise `keras.ops.scan` with autodiff (inference graphs then hold
      no custom-gradient ops, which exporters such as tf2onnx reject).

    Args:
        x: packed projected inputs `(time, batch, 3 * units)`; split per
            gate here where that layout is faster (`split_layout`).
        initial_state: `(batch, units)`.
        recurrent_kernel, candidate_bias, activation, recurrent_activation,
            reset_after, recurrent_masks: as for `recurrence.gru_step`.
        mask: `None` or a boolean `(time, batch)` tensor.
        zero_output_for_mask: output zeros at masked steps.
        return_sequences: whether to return the output of every step.
        unroll: a Python loop; needs a static number of time steps.
        inference: the caller does not train (`training` is false).

    Returns:
        `(last_output, outputs, final_state)`: `outputs` is
        `(time, batch, units)` or `None` when `return_sequences=False`.
    """

    step_kernel = recurrence.kernel_parts(recurrent_kernel, reset_after)

    def cell(h, x_t):
        return recurrence.gru_step(
            h, x_t, step_kernel, candidate_bias, activation,
            recurrent_activation, reset_after, recurrent_masks,
        )

    # The loops carry the state alone and emit the state after each step;
    # the outputs of masked steps are derived after the loop (below), so
    # the carry and the emitted value share one structure, as the
    # TensorFlow `scan` requires.
    units = recurrent_kernel.shape[0]
    if recurrence.split_layout():
        x = recurrence.split_gates(x, units)
    gate_arrays = tuple(x) if isinstance(x, tuple) else (x,)
    n_gates = len(gate_arrays)

    def step_input(xs_t):
        return tuple(xs_t[:n_gates]) if n_gates > 1 else xs_t[0]

    if mask is None:
        xs = gate_arrays

        def step(h, xs_t):
            h_new = cell(h, step_input(xs_t))
            return h_new, h_new

    else:
        mask = ops.cast(mask, "bool")
        xs = gate_arrays + (ops.expand_dims(mask, -1),)

        def step(h, xs_t):
            h_next = ops.where(xs_t[-1], cell(h, step_input(xs_t)), h)
            return h_next, h_next

    if unroll:
        h = initial_state
        states = []
        for t in range(xs[0].shape[0]):
            h, _ = step(h, tuple(v[t] for v in xs))
            states.append(h)
        states = ops.stack(states)
    elif inference and not return_sequences:
        # Only the final state: a loop that stores nothing per step
        # (still differentiable by autodiff, for gradients at inference).
        h = scan.final_carry(step, initial_state, xs)
        states = None
    elif not inference and bptt.supports(
        activation, recurrent_activation, recurrent_masks
    ):
        states = bptt.gru_states(
            x, initial_state, recurrent_kernel, candidate_bias, activation,
            recurrent_activation, reset_after, mask=mask,
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
