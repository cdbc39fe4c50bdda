"""The GRU over a whole time-major sequence: a short pipeline.

1. The plan: `policy.plan` picks the runner and its blocks from what the
   call knows (length, training, `return_sequences`, `unroll`, dropout,
   activations).
2. The mask: cast to booleans; in training the inputs of masked steps are
   zeroed, so a NaN or inf there (padding) reaches no gradient.
3. The runner named by the plan (`RUNNERS`) gives the final state and, with
   `return_sequences`, the state after every step.
4. The outputs of masked steps are derived from the states (`_masked_outputs`).

Every runner's loop carries the state alone and emits one state per step
(after it; before it in the training forward pass, whose backward pass
multiplies by it), so the carry and the emitted value share one
structure, as Keras' TensorFlow `scan` requires. A masked step keeps the
state by a select on it, or in the inference runners, where the plan
says `hold="gate"`, through its inputs (`recurrence.held_by_gate`).
"""

from keras import ops

from keras_gru_plus import bptt
from keras_gru_plus import policy
from keras_gru_plus import recurrence
from keras_gru_plus import scan


def run_sequence(
    x,
    initial_state,
    weights,
    spec,
    mask=None,
    zero_output_for_mask=False,
    return_sequences=True,
    unroll=False,
    training=False,
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
        x: the inputs `(time, batch, input_dim)`, before their projection.
        initial_state: `(batch, units)`.
        weights: the `recurrence.GRUWeights` of the call (weights read once,
            dropout masks drawn for the call).
        spec: the `recurrence.GRUSpec` (units, activations, `reset_after`).
        mask: `None` or a boolean `(time, batch)` tensor.
        zero_output_for_mask: output zeros at masked steps.
        return_sequences: whether to return the output of every step.
        unroll: a Python loop; needs a static number of time steps.
        training: whether the call trains (the hand-written backward pass
            serves training; inference graphs hold no custom-gradient ops,
            which exporters such as tf2onnx reject).

    Returns:
        `(last_output, outputs, final_state)`: `outputs` is
        `(time, batch, units)` or `None` when `return_sequences=False`.
    """
    weights, spec = recurrence.centered_for_norms(weights, spec)
    weights = recurrence.shifts_in_biases(weights, spec)
    chosen = policy.plan(
        x.shape[0],
        bool(training),
        return_sequences,
        unroll,
        recurrent_mask_count=len(weights.recurrent_masks or ()),
        known_slopes=bptt.supports(spec),
        layer_norm=spec.layer_norm,
        gate_can_hold=mask is not None
        and recurrence.gate_can_hold(
            spec.activation, spec.recurrent_activation, initial_state.dtype
        ),
    )
    if mask is not None:
        mask = ops.cast(mask, "bool")
        if training:
            x = ops.where(ops.expand_dims(mask, -1), x, 0)
    h, states = RUNNERS[chosen.runner](
        chosen, x, initial_state, weights, spec, mask, return_sequences
    )
    return _masked_outputs(
        h, states if return_sequences else None, mask, zero_output_for_mask
    )


def _step_function(weights, spec, masked, split, exact_hold=False):
    """The loop step `(h, xs_t) -> (h_next, h_next)`: `xs_t` holds the
    step's projected inputs (one packed array, or three per gate with
    `split`), then its mask `(batch, 1)` if `masked`. `exact_hold`: the
    inputs hold masked steps through the update gate (`_loop_inputs`)."""
    step_kernel = recurrence.kernel_parts(weights.recurrent_kernel, spec.reset_after)
    norms = recurrence.recurrent_norms(weights, spec)

    def step(h, xs_t):
        x_t = tuple(xs_t[:3]) if split else xs_t[0]
        h_next = recurrence.gru_step(
            h,
            x_t,
            step_kernel,
            weights.candidate_bias,
            spec,
            weights.recurrent_masks,
            norms,
            exact_hold,
        )
        if masked:
            h_next = ops.where(xs_t[-1], h_next, h)
        return h_next, h_next

    return step


def _keep(mask):
    """The mask `(time, batch)` as the loops take it, `(time, batch, 1)`
    (also what `scan`'s packing of arrays of unknown length takes), or
    `None`."""
    return None if mask is None else ops.expand_dims(mask, -1)


def _loop_inputs(x, weights, spec, keep, split, hold="select"):
    """The arrays a loop takes: the projection of `x` (split per gate with
    `split`), then the mask `keep` `(..., 1)` (`_keep`) if any. With
    `hold="gate"` the mask goes into the projection instead
    (`recurrence.held_by_gate`) and no mask array follows."""
    arrays = recurrence.projected_arrays(x, weights, spec, split)
    if keep is None:
        return arrays
    if hold == "gate":
        return recurrence.held_by_gate(arrays, keep, spec.units)
    return arrays + (keep,)


def _unrolled(plan, x, h0, weights, spec, mask, return_sequences):
    """`unroll=True`: a Python loop over the projected steps, autodiff."""
    step = _step_function(weights, spec, mask is not None, plan.split_gates)
    return scan.python_loop(
        step, h0, _loop_inputs(x, weights, spec, _keep(mask), plan.split_gates)
    )


def _autodiff(plan, x, h0, weights, spec, mask, return_sequences):
    """Training without the hand-written backward pass: `keras.ops.scan`."""
    step = _step_function(weights, spec, mask is not None, plan.split_gates)
    arrays = _loop_inputs(x, weights, spec, _keep(mask), plan.split_gates)
    return scan.scan(step, h0, arrays)


def _bptt(plan, x, h0, weights, spec, mask, return_sequences):
    """Training with the hand-written backward pass (`bptt.gru_states`)."""
    out = bptt.gru_states(
        x, h0, weights, spec, mask=mask, plan=plan, return_sequences=return_sequences
    )
    if not return_sequences:
        return out, None
    return out[-1], out


def _inference(plan, x, h0, weights, spec, mask, return_sequences):
    """Inference, one block of steps at a time (`plan.block`; `None`: the
    whole sequence): the block's projection is one matmul, its steps a loop
    (a state-only loop without `return_sequences`)."""
    step = _held_step(plan, weights, spec, mask)
    keep = _keep(mask)

    def run_block(h, parts):
        arrays = _loop_inputs(
            parts[0],
            weights,
            spec,
            parts[1] if keep is not None else None,
            plan.split_gates,
            plan.hold,
        )
        if not return_sequences:
            return scan.final_carry(step, h, arrays), (), ()
        h, states = scan.scan(step, h, arrays)
        return h, (states,), ()

    h, ys, _ = scan.blocks_loop(
        run_block,
        h0,
        (x,) + (() if keep is None else (keep,)),
        plan.block,
        step_like=(h0,) if return_sequences else (),
    )
    return h, (scan.joined(ys[0]) if return_sequences else None)


def _step_projection(plan, x, h0, weights, spec, mask, return_sequences):
    """Inference whose steps project their own inputs, inside the loop
    (`policy.BackendPolicy.project_in_step`): the projections of later
    steps, which do not wait on the state, run beside the recurrence.
    With `return_sequences`, over blocks of `plan.block` unrolled steps
    when the plan has them."""
    step = _held_step(plan, weights, spec, mask)
    keep = _keep(mask)
    xs = (x,) + (() if keep is None else (keep,))

    def projected_step(h, xs_t):
        keep_t = xs_t[1] if keep is not None else None
        arrays = _loop_inputs(
            xs_t[0], weights, spec, keep_t, plan.split_gates, plan.hold
        )
        return step(h, arrays)

    if not return_sequences:
        return scan.final_carry(projected_step, h0, xs), None
    if plan.block is not None:
        return scan.unrolled_blocks(
            projected_step, h0, xs, plan.block, parallel=plan.parallel
        )
    return scan.scan(projected_step, h0, xs, parallel=plan.parallel)


def _held_step(plan, weights, spec, mask):
    """The step of an inference runner: masked steps hold the state by a
    select on it, or (`plan.hold == "gate"`) through their inputs."""
    # `run_sequence` plans the gate hold for masked calls only.
    gate = plan.hold == "gate"
    return _step_function(
        weights, spec, mask is not None and not gate, plan.split_gates, gate
    )


# The runners by the names the plans give (`policy.RUNNERS`). Each takes
# `(plan, x, h0, weights, spec, mask, return_sequences)` and returns
# `(final_state, states)`, `states` the state after every step
# `(time, batch, units)` (or `None` where not asked for).
RUNNERS = {
    "unrolled": _unrolled,
    "step_projection": _step_projection,
    "inference": _inference,
    "bptt": _bptt,
    "autodiff": _autodiff,
}


def _masked_outputs(h, states, mask, zero_output_for_mask):
    """`(last_output, outputs, final_state)` with masked steps' outputs."""
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
    if states is not None:
        outputs = ops.where(keep, states, ops.zeros_like(states))
    return last_output, outputs, h
