"""The GRU over a whole time-major sequence: loops, masks, outputs."""

import keras
from keras import ops

from keras_gru_plus import bptt
from keras_gru_plus import recurrence
from keras_gru_plus import scan

# Steps of a TensorFlow inference loop that may run at once (the
# `parallel_iterations` of its `while_loop`). Measured with the projection
# inside the loop (batch 32, 100 steps, 64 features, 128 units, 2 CPUs):
# state only 4.6 -> 3.4 ms (`fori_loop`, which runs 10); with outputs
# (`scan`) 5.6 ms projecting before the loop, 6.7 ms inside with 1 step,
# 4.8 ms with 4, no faster with 10 or 32.
PARALLEL_STEPS = 4

# Steps per block of TensorFlow's inference loop with `return_sequences`:
# a `scan` of blocks whose steps are unrolled, each block's states stacked
# once. Keras' TensorFlow `scan` reads and writes its carry and outputs
# through TensorArrays at every iteration; in blocks that cost is paid once
# per block. Measured on the layer (batch 32, 100 steps, 64 features, 128
# units, 2 CPUs): predict 15% faster (4.90 -> 4.17 ms, keras 5.19 ms);
# blocks of 5 or 20 steps, or 1 or 4 blocks at once, gained less.
SEQUENCE_BLOCK_STEPS = 10
PARALLEL_BLOCKS = 2


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
    projection=None,
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
    - `inference` over a sequence of at least two blocks
      (`scan.block_size`, known length), given `projection`: the inputs
      are projected one block at a time, and the blocks' steps run in a
      loop of their own (`_inference_in_blocks`);
    - TensorFlow's inference, given `projection`, projects the inputs one
      step at a time inside its loops instead, and with `return_sequences`
      (a length known when traced, at least two blocks) loops over blocks
      of `SEQUENCE_BLOCK_STEPS` unrolled steps;
    - training with the usual activations: `bptt.gru_states`, with the
      hand-written backward pass (over a sequence long enough for its
      blocks, given `projection`, projecting one block at a time);
    - otherwise `keras.ops.scan` with autodiff (inference graphs then hold
      no custom-gradient ops, which exporters such as tf2onnx reject).

    Args:
        x: packed projected inputs `(time, batch, 3 * units)`; split per
            gate here where that layout is faster (`split_layout`). With
            `projection`, the inputs before the projection.
        initial_state: `(batch, units)`.
        recurrent_kernel, candidate_bias, activation, recurrent_activation,
            reset_after, recurrent_masks: as for `recurrence.gru_step`.
        mask: `None` or a boolean `(time, batch)` tensor.
        zero_output_for_mask: output zeros at masked steps.
        return_sequences: whether to return the output of every step.
        unroll: a Python loop; needs a static number of time steps.
        inference: the caller does not train (`training` is false).
        projection: `None`, or `(kernel, bias, input_masks)`, the
            arguments of `recurrence.project_inputs` that project `x`.

    Returns:
        `(last_output, outputs, final_state)`: `outputs` is
        `(time, batch, units)` or `None` when `return_sequences=False`.
    """

    step_kernel = recurrence.kernel_parts(recurrent_kernel, reset_after)
    units = recurrent_kernel.shape[0]
    project = None
    if projection is not None:
        in_kernel, in_bias, input_masks = projection

        def project(steps):
            return recurrence.project_inputs(steps, in_kernel, in_bias, units,
                                             input_masks)

    def cell(h, x_t):
        return recurrence.gru_step(
            h, x_t, step_kernel, candidate_bias, activation,
            recurrent_activation, reset_after, recurrent_masks,
        )

    # The loops carry the state alone and emit the state after each step;
    # the outputs of masked steps are derived after the loop (below), so
    # the carry and the emitted value share one structure, as the
    # TensorFlow `scan` requires.
    n_gates = 3 if recurrence.split_layout() else 1
    if mask is not None:
        mask = ops.cast(mask, "bool")
        if not inference:
            # Masked steps change nothing, so their inputs are zeroed before
            # anything is computed from them: a NaN or inf there (padding)
            # then reaches no gradient, the kernel's included.
            x = ops.where(ops.expand_dims(mask, -1), x, 0)

    def loop_inputs(projected, mask):
        if n_gates == 3:
            projected = recurrence.split_gates(projected, units)
        arrays = projected if n_gates == 3 else (projected,)
        if mask is not None:
            arrays = arrays + (ops.expand_dims(mask, -1),)
        return arrays

    def step_input(xs_t):
        return tuple(xs_t[:n_gates]) if n_gates > 1 else xs_t[0]

    if mask is None:

        def step(h, xs_t):
            h_new = cell(h, step_input(xs_t))
            return h_new, h_new

    else:

        def step(h, xs_t):
            h_next = ops.where(xs_t[-1], cell(h, step_input(xs_t)), h)
            return h_next, h_next

    n_steps = x.shape[0]
    if (inference and project is not None and not unroll
            and keras.backend.backend() == "tensorflow"):
        # TensorFlow projects each step's inputs inside the loop: its
        # `while_loop` runs the projections of later steps, which do not
        # wait on the state, on another core alongside the recurrence of
        # the current step (see `PARALLEL_STEPS`).
        xs = (x,) + ((ops.expand_dims(mask, -1),) if mask is not None
                     else ())

        def projected_step(h, xs_t):
            return step(h, (project(xs_t[0]),) + tuple(xs_t[1:]))

        if (return_sequences and n_steps is not None
                and n_steps >= 2 * SEQUENCE_BLOCK_STEPS):
            h, states = scan.unrolled_blocks(
                projected_step, initial_state, xs, SEQUENCE_BLOCK_STEPS,
                parallel=PARALLEL_BLOCKS)
        elif return_sequences:
            h, states = scan.scan(projected_step, initial_state, xs,
                                  parallel=PARALLEL_STEPS)
        else:
            h = scan.final_carry(projected_step, initial_state, xs)
            states = None
        return _masked_outputs(h, states, h, mask, zero_output_for_mask)

    if (inference and not unroll and project is not None
            and scan.block_size(n_steps) is not None):
        h, states = _inference_in_blocks(step, initial_state, x, mask,
                                         project, loop_inputs,
                                         return_sequences)
        return _masked_outputs(h, states, h, mask, zero_output_for_mask)
    use_bptt = not inference and not unroll and bptt.supports(
        activation, recurrent_activation, recurrent_masks)
    recurrent_mask = None if recurrent_masks is None else recurrent_masks[0]
    if (use_bptt and projection is not None
            and scan.block_size(n_steps) is not None
            and (input_masks is None or len(input_masks) == 1)):
        # Long sequences: the projection goes block by block in the
        # forward and backward passes of `gru_states`.
        states = bptt.gru_states(
            x, initial_state, recurrent_kernel, candidate_bias, activation,
            recurrent_activation, reset_after, mask=mask,
            recurrent_mask=recurrent_mask,
            projection=(in_kernel, in_bias,
                        None if input_masks is None else input_masks[0]),
        )
        h = states[-1]
        if not return_sequences:
            states = None
        return _masked_outputs(h, states, h, mask, zero_output_for_mask)
    if project is not None:
        x = project(x)
    xs = loop_inputs(x, mask)
    x = xs[:n_gates] if n_gates == 3 else xs[0]

    if unroll:
        h, states = scan.python_loop(step, initial_state, xs)
    elif inference and not return_sequences:
        # Only the final state: a loop that stores nothing per step
        # (still differentiable by autodiff, for gradients at inference).
        h = scan.final_carry(step, initial_state, xs)
        states = None
    elif use_bptt:
        states = bptt.gru_states(
            x, initial_state, recurrent_kernel, candidate_bias, activation,
            recurrent_activation, reset_after, mask=mask,
            recurrent_mask=recurrent_mask,
        )
        h = states[-1]
    else:
        h, states = scan.scan(step, initial_state, xs)
    if not return_sequences:
        states = None
    return _masked_outputs(h, states, h, mask, zero_output_for_mask)


def _inference_in_blocks(step, initial_state, x, mask, project,
                         loop_inputs, return_sequences):
    """The inference loop, projecting one block of steps at a time.

    Inside a block, the projection is one matmul and the steps a loop of
    their own (unrolled but on JAX, where a nested `scan` compiles
    smaller). A shorter last block runs after the others.

    Returns:
        `(h, states)`: the state after the last step, and the state after
        every step `(time, batch, units)` with `return_sequences`, else
        `None`.
    """
    unrolled = keras.backend.backend() != "jax"

    def run_block(h, parts):
        # `parts`: the inputs of the block's steps, their mask if any.
        arrays = loop_inputs(project(parts[0]),
                             parts[1] if mask is not None else None)
        if not return_sequences:
            return scan.final_carry(step, h, arrays, unrolled=unrolled), ()
        if unrolled:
            h, states = scan.python_loop(step, h, arrays)
        else:
            h, states = scan.scan(step, h, arrays)
        return h, (states,)

    h, ys = scan.blocks_loop(
        run_block, initial_state,
        (x,) + ((mask,) if mask is not None else ()),
        scan.block_size(x.shape[0]), n_out=int(return_sequences))
    return h, (ys[0] if return_sequences else None)


def _masked_outputs(h, states, final_state, mask, zero_output_for_mask):
    """`(last_output, outputs, final_state)` with masked steps' outputs."""
    if mask is None:
        return h, states, final_state
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
    if states is not None:
        outputs = ops.where(keep, states, ops.zeros_like(states))
    return last_output, outputs, final_state
