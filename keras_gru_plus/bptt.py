"""The GRU state sequence with a hand-written backward pass (BPTT).

`gru_states` projects the inputs and runs the recurrence forward, carrying
only the state. Its gradient, given through `keras.ops.custom_gradient`, is
written from the backward equations in `recurrence`'s docstring, whose
names the code below uses (`f_z`, `f_hh`, `by_gate`, `q`, `delta`):

- What does not depend on the gradient of the next step is computed for a
  whole block of steps at once: the gates (kept from the forward steps
  where the plan says `keep_gates`, else recomputed with one large
  recurrent matmul) and the factors `f_z`, `f_hh`, `by_gate` or `q`.
- Only the recurrence of `dL/dh` is sequential: a reverse loop with one
  fused matmul per step (two with `reset_after=False`).
- The weight gradients are single large matmuls after that loop,
  `dR = H^T delta`, `dW = X^T delta_x`: how fused RNN kernels get their
  speed.
- The plan (`policy.plan`) cuts the sequence into blocks: each block is
  projected, run forward, and later gone back through on its own, last
  block first, so that no array of the whole sequence wider than the state
  is held, and the vectorized intermediates stay block sized (in cache,
  freed block by block). With no blocks, the whole sequence is one block,
  projected before the custom gradient (autodiff goes through that
  projection).

Under a graph compiler that unrolls the Python loops and bakes each slice's
offset into the kernels it compiles (PyTorch's `torch.compile`), every step
reading its slice of a block's arrays is a kernel of its own. There the plan
has each step project its own inputs (`step_inputs`, over one block): the
forward steps keep their states (and their gates, where kept) one array per
step (`scan.Steps`), each reverse step reads those or recomputes its gates
from them (`_grads_by_step`), and the steps' kernels are alike, compiled
once; what the weights' gradients take is stacked after the loop. The step
mask and the gradient of every step's output (`return_sequences`), which
the steps read elementwise, are copied one array per step through a matmul
(`scan.copied_steps`); the inputs are read as slices by the matmul of their
projection (which takes them where they lie).

This stores no autodiff intermediates of every step, and it lets TensorFlow
compile the training step with XLA: autodiff through its `while_loop`
needs a bounded loop, which `keras.ops.scan` does not give.

With layer normalization the same passes go through its gradients (the
equations in `recurrence` and `layer_norm`): the input side's after the
reverse loop, vectorized, and the recurrent side's in each reverse step
and again, vectorized, for the weights' gradients.

The slopes of the activations are taken from their outputs, so this path
serves the activations listed in `_SLOPES`; the plan falls back to autodiff
for any other.
"""

import math
from typing import Any
from typing import NamedTuple

from keras import activations
from keras import ops

from keras_gru_plus import layer_norm
from keras_gru_plus import policy
from keras_gru_plus import recurrence
from keras_gru_plus import scan


def _tanh_slope(y):
    return 1.0 - y * y


def _sigmoid_slope(y):
    return y * (1.0 - y)


def _relu_slope(y):
    return ops.cast(y > 0, y.dtype)


def _linear_slope(y):
    return ops.ones_like(y)


def _hard_sigmoid_slope(y):
    # Keras 3: relu6(x + 3) / 6, slope 1/6 strictly inside (0, 1).
    return ops.cast((y > 0) & (y < 1), y.dtype) / 6.0


_SLOPES = (
    (activations.tanh, _tanh_slope),
    (ops.tanh, _tanh_slope),
    (activations.sigmoid, _sigmoid_slope),
    (ops.sigmoid, _sigmoid_slope),
    (activations.relu, _relu_slope),
    (ops.relu, _relu_slope),
    (activations.linear, _linear_slope),
    (activations.hard_sigmoid, _hard_sigmoid_slope),
    (ops.hard_sigmoid, _hard_sigmoid_slope),
)


def slope_of(activation):
    """`dy/dx` as a function of the output `y`, or `None` if unknown."""
    for known, slope in _SLOPES:
        if activation is known:
            return slope
    return None


def supports(spec):
    """Whether both activations of `spec` have a known slope."""
    return (
        slope_of(spec.activation) is not None
        and slope_of(spec.recurrent_activation) is not None
    )


class _Tensors(NamedTuple):
    """The tensors of one call, as the custom gradient takes them.

    `x`: the raw inputs `(time, batch, input_dim)`, or their projection
    `(time, batch, 3 * units)` when `kernel` is `None` (one block, projected
    before: see `gru_states`); `mask` the step mask as
    0/1 floats `(time, batch, 1)` (with a gradient slot, like every input),
    `recurrent_mask` one `(batch, units)` dropout mask, `input_masks` a
    tuple of one or three `(batch, input_dim)` masks. The rest as in
    `recurrence.GRUWeights`. With the projection made before, the kernel
    and input masks are `None`; the projection bias too without layer
    normalization, with which `x` is `x W` and its normalization and bias
    are made inside (see `_projected_before`).
    """

    x: Any
    h0: Any
    kernel: Any = None
    recurrent_kernel: Any = None
    projection_bias: Any = None
    candidate_bias: Any = None
    input_gamma: Any = None
    input_beta: Any = None
    recurrent_gamma: Any = None
    recurrent_beta: Any = None
    mask: Any = None
    recurrent_mask: Any = None
    input_masks: Any = None


# The weights among the `_Tensors`, which get gradients summed over blocks.
_WEIGHTS = (
    "kernel",
    "recurrent_kernel",
    "projection_bias",
    "candidate_bias",
    "input_gamma",
    "input_beta",
    "recurrent_gamma",
    "recurrent_beta",
)


def gru_states(
    x, initial_state, weights, spec, mask=None, plan=None, return_sequences=True
):
    """The state after every step, `(time, batch, units)`, time-major, or
    the last one alone.

    Args:
        x: the inputs before their projection, `(time, batch, input_dim)`.
            The inputs of masked steps must be finite (the gradients there
            are then exact zeros, without a select over the backward pass's
            products); `sequence.run_sequence` zeroes them.
        initial_state: `(batch, units)`.
        weights: the `recurrence.GRUWeights` of the call, with at most one
            recurrent dropout mask.
        spec: the `recurrence.GRUSpec`; both activations with a known slope.
        mask: `None` or `(time, batch)` boolean; a masked step keeps the
            state.
        plan: the `policy.Plan` (runner `"bptt"`), or `None` to choose it.
        return_sequences: whether to return every state, or the last alone
            (then no gradient of every step's output is made: the reverse
            loop starts from the last state's).

    Returns:
        The states `(time, batch, units)`, or the last `(batch, units)`,
        differentiable with respect to `x`, the initial state, the kernels,
        the biases and the layer-norm gains and shifts.
    """
    _check_weights(weights, spec)
    _check_plan(plan)
    if plan is None:
        plan = policy.plan(
            x.shape[0],
            training=True,
            return_sequences=True,
            layer_norm=spec.layer_norm,
        )
    if plan.block is None and not plan.step_inputs:
        x, weights = _projected_before(x, weights, spec)
    named = _Tensors(
        x,
        initial_state,
        **{name: getattr(weights, name) for name in _WEIGHTS},
        mask=None
        if mask is None
        else ops.expand_dims(ops.cast(mask, initial_state.dtype), -1),
        recurrent_mask=None
        if weights.recurrent_masks is None
        else weights.recurrent_masks[0],
    )
    # Custom gradients take positional tensors only: the one place where
    # the tensors are flattened, and rebuilt by name.
    fields = [f for f, value in zip(_Tensors._fields, named) if value is not None]
    input_masks = tuple(weights.input_masks or ())

    @ops.custom_gradient
    def states_fn(*args):
        t = _Tensors(
            **dict(zip(fields, args)), input_masks=tuple(args[len(fields) :]) or None
        )
        h_last, h_prev, kept = _forward(t, spec, plan)
        out = _states(h_prev, h_last) if return_sequences else h_last

        def grad(*grad_args, upstream=None):
            if upstream is None:
                (upstream,) = grad_args
            grads = _backward(upstream, h_prev, kept, t, spec, plan, return_sequences)
            # Masks get zeros.
            return tuple(
                grads[name] if name in grads else ops.zeros_like(getattr(t, name))
                for name in fields
            ) + tuple(ops.zeros_like(m) for m in input_masks)

        return out, grad

    return states_fn(*(getattr(named, f) for f in fields), *input_masks)


def _states(h_prev, h_last):
    """The state after every step, `(time, batch, units)`: the state before
    each step (an array or `scan.Blocks`) but the first, then the last."""
    if isinstance(h_prev, scan.Steps):
        return scan.stacked(list(h_prev[1:]) + [h_last])
    first, *rest = scan.pieces(h_prev)
    return ops.concatenate([first[1:]] + rest + [ops.expand_dims(h_last, 0)], 0)


def _check_weights(weights, spec):
    """What the hand-written backward pass takes."""
    if weights.candidate_bias is not None and not spec.reset_after:
        raise ValueError(
            "gru_states: a candidate bias (rb_h) exists only with "
            "reset_after=True (recurrence.split_bias gives None otherwise); "
            "received a candidate bias with reset_after=False."
        )
    if weights.recurrent_masks is not None and len(weights.recurrent_masks) > 1:
        raise ValueError(
            "gru_states takes one recurrent dropout mask; received "
            f"{len(weights.recurrent_masks)} (one per gate goes through "
            "autodiff)."
        )


def _check_plan(plan):
    """A given plan's steps project their own inputs over one block only
    (`policy.plan` gives no other)."""
    if plan is not None and plan.step_inputs and plan.block is not None:
        raise ValueError(
            "gru_states: a plan whose steps project their own inputs "
            "(step_inputs=True) runs over one block; received block="
            f"{plan.block}."
        )


def _projected_before(x, weights, spec):
    """One block (without the plan's `step_inputs`, whose steps project
    their own inputs): the projection of the whole sequence is made before the
    custom gradient, through autodiff, which skips the gradient of inputs
    that need none (eager PyTorch would otherwise pay one more matmul of the
    whole sequence: training at 20 steps measured 5% slower) and keeps the
    projection for the backward pass's recompute. Blocks project inside,
    block by block, so that no projection of the whole sequence is held.

    Returns `(projection, weights)`, the weights without what the
    projection took: the kernel and input masks, and the projection bias
    too without layer normalization. With it, the projection is `x W`
    alone: its normalization and bias stay inside, and their gradients are
    the hand-written ones of `recurrence`'s equations, as in blocks.
    """
    if spec.layer_norm:
        projected = recurrence.raw_projection(
            x, weights.kernel, spec.units, weights.input_masks
        )
        return projected, weights._replace(kernel=None, input_masks=None)
    (projected,) = recurrence.projected_arrays(x, weights, spec, False)
    return projected, weights._replace(
        kernel=None, projection_bias=None, input_masks=None
    )


def _block_loop(plan):
    """`(loop, options)` for `scan.blocks_loop`: how the plan's blocks
    loop (a Python loop, or an indexed `scan`)."""
    if plan.block_loop == "python":
        return scan.python_loop, {}
    return scan.scan, {"indexed": True}


def _block_projection(x_b, t, spec):
    """`(projection, stats)`: a block's inputs projected as the loops take
    them, packed, and the statistics of their input normalization (or
    `None`). `x_b` holds the raw inputs, or without a kernel in `t` what
    `gru_states` projected before (see `_projected_before`)."""
    raw = x_b
    if t.kernel is not None:
        raw = recurrence.raw_projection(x_b, t.kernel, spec.units, t.input_masks)
    return recurrence.finish_projection(
        raw, t.projection_bias, recurrence.input_norm(t, spec)
    )


def _loop_arrays(x_b, t, spec, split):
    """`(arrays, stats)`: the block's projection (`_block_projection`) as
    the loops take it, split per gate with `split`, and its statistics."""
    projected, stats = _block_projection(x_b, t, spec)
    if split:
        return recurrence.split_gates(projected, spec.units), stats
    return (projected,), stats


def _forward(t, spec, plan):
    """The forward loop, block by block: project the block, run its steps.

    Returns `(h_last, h_prev, kept)`: the last state, the state before each
    step `(time, batch, units)` (what the backward pass multiplies by), and
    the gates `(z, r, hh[, rec_h])` of every step, then the statistics of
    its recurrent normalizations (flat, see `_flat_stats`) and those of its
    input normalization `(n, s)`, if the plan keeps them, else `None`.
    Where the blocks loop in Python, `h_prev` and the kept gates are
    `scan.Blocks`, which the backward pass takes back cut the same way;
    with the plan's `step_inputs`, `scan.Steps` (the steps project their
    own inputs).
    """
    keep = None if t.mask is None else t.mask > 0
    if keep is not None and plan.step_inputs:
        keep = scan.Steps(m > 0 for m in scan.copied_steps(t.mask))
    norms = recurrence.recurrent_norms(t, spec)
    step = _forward_step(t, spec, plan, norms, keep is not None)
    # With kept gates the backward pass needs the inputs' projection only
    # for its normalization's statistics: kept too, it is not recomputed.
    input_norm = recurrence.input_norm(t, spec) if plan.keep_gates else None

    # What one step emits with kept gates: those and the statistics of its
    # normalizations (else the state alone).
    gates_like = None
    if plan.keep_gates:
        gates_like = (t.h0,) * (4 + spec.reset_after) + _stats_like(t.h0, norms)

    def run_block(h, parts):
        arrays, input_stats = (parts[0],), None
        if not plan.step_inputs:
            arrays, input_stats = _loop_arrays(parts[0], t, spec, plan.split_gates)
        h, ys = scan.scan(
            step,
            h,
            arrays + tuple(parts[1:]),
            indexed=True,
            ys_like=gates_like,
            stack=not plan.step_inputs,
        )
        if not plan.keep_gates:
            return h, (ys,), ()
        return h, ys + tuple(input_stats or ()), ()

    step_like = (t.h0,)
    if plan.keep_gates:
        step_like = gates_like
        if input_norm is not None:
            step_like += layer_norm.stats_like(
                ops.shape(t.h0)[:-1], input_norm, t.h0.dtype
            )
    loop, options = _block_loop(plan)
    h_last, ys, _ = scan.blocks_loop(
        run_block,
        t.h0,
        (t.x,) + (() if keep is None else (keep,)),
        plan.block,
        step_like=step_like,
        loop=loop,
        **options,
    )
    return h_last, ys[0], (ys[1:] if plan.keep_gates else None)


def _forward_step(t, spec, plan, norms, masked):
    """The step of `_forward`'s loop: `(h, xs_t) -> (h_new, y_t)`.

    `xs_t` holds the step's projected inputs (per gate with the plan's
    `split_gates`), or with `step_inputs` its raw inputs, then its mask
    where `masked`. `y_t` is the state before the step, or with kept gates
    `(h, z, r, hh[, rec_h])`, the statistics of the recurrent
    normalizations and, with `step_inputs`, the input normalization's.
    """
    step_kernel = recurrence.kernel_parts(t.recurrent_kernel, spec.reset_after)
    split = plan.split_gates

    def step(h, xs):
        h_in = h if t.recurrent_mask is None else h * t.recurrent_mask
        input_stats = None
        if plan.step_inputs:
            arrays, input_stats = _loop_arrays(xs[0], t, spec, split)
            xs = arrays + tuple(xs[1:])
        gates = recurrence.gate_values(
            h_in,
            tuple(xs[:3]) if split else xs[0],
            step_kernel,
            t.candidate_bias,
            spec,
            recurrent_norm=norms,
            keep_stats=plan.keep_gates,
        )
        h_new = gates.hh + gates.z * (h - gates.hh)
        if masked:
            h_new = ops.where(xs[-1], h_new, h)
        if not plan.keep_gates:
            # The state alone, shaped like the carry (TensorFlow's `scan`).
            return h_new, h
        kept = (gates.rec_h,) if spec.reset_after else ()
        kept += _flat_stats(gates) + tuple(input_stats or ())
        return h_new, (h, gates.z, gates.r, gates.hh) + kept

    return step


def _backward(upstream, h_prev, kept, t, spec, plan, sequences):
    """The gradients of every tensor of `t` but the masks, by field name,
    block by block, last block first. `upstream`: the gradient of every
    state `(time, batch, units)` (`sequences`), or of the last alone."""
    # The sequences the blocks cut, by name, then the kept gates.
    named = {
        "upstream": upstream if sequences else None,
        "h_prev": h_prev,
        "x": t.x,
        "mask": t.mask,
    }
    names = [name for name, value in named.items() if value is not None]
    seqs = tuple(named[name] for name in names) + tuple(kept or ())
    summed = [name for name in _WEIGHTS if getattr(t, name) is not None]

    def run_block(dh, parts):
        block = dict(zip(names, parts))
        upstream_b, mask_b = block.get("upstream"), block.get("mask")
        h_prev_b, x_b = block["h_prev"], block["x"]
        if plan.step_inputs:
            dh_b, d_x, grads = _grads_by_step(
                dh, upstream_b, h_prev_b, x_b, mask_b, t, spec, kept
            )
            return dh_b, (d_x,), tuple(grads[name] for name in summed)
        # The projection is needed to recompute the gates, and its input
        # normalization's statistics for its gradients, unless both were
        # kept (the statistics after the gates).
        if kept is not None:
            arrays = None
            kept_b, input_stats = _input_stats_apart(tuple(parts[len(names) :]), t)
        else:
            kept_b = None
            arrays, input_stats = _loop_arrays(x_b, t, spec, plan.split_gates)
        dh_b, delta_x, grads = _block_grads(
            dh, upstream_b, h_prev_b, arrays, mask_b, t, spec, kept_b, plan.keep_deltas
        )
        d_x, projection_grads = _projection_grads(delta_x, x_b, t, spec, input_stats)
        grads.update(projection_grads)
        return dh_b, (d_x,), tuple(grads[name] for name in summed)

    loop, options = _block_loop(plan)
    dh0, (dx,), totals = scan.blocks_loop(
        run_block,
        ops.zeros_like(t.h0) if sequences else upstream,
        seqs,
        plan.block,
        step_like=(t.x[0],),
        total_like=tuple(getattr(t, n) for n in summed),
        loop=loop,
        reverse=True,
        **options,
    )
    return {"x": scan.joined(dx), "h0": dh0, **dict(zip(summed, totals))}


def _grads_by_step(dh_next, upstream, h_prev, x, keep, t, spec, kept=None):
    """`_block_grads` and `_projection_grads` of one block of raw inputs
    `x`, made step by step (the plan's `step_inputs`): each reverse step
    reads its `scan.Steps` state and kept gates (or recomputes them,
    projecting its inputs through a matmul), so that a compiler that bakes
    slice offsets into kernels compiles the same kernels for every step
    (the step mask and the gradient of every step's output, which the steps
    read elementwise, copied one array per step: `scan.copied_steps`). What
    the weights' gradients take is stacked after.

    Returns `(dh_before_first, d_x, grads)`, the grads by name.
    """
    norms = recurrence.recurrent_norms(t, spec)
    if upstream is not None:
        upstream = scan.copied_steps(upstream)
    if keep is not None:
        keep = scan.copied_steps(keep)
    variant = _STEP_VARIANTS[spec.reset_after]
    factors, through_recurrence, weight_grads, with_deltas = variant
    back_step = _back_step(
        through_recurrence(t.recurrent_kernel, spec, norms),
        t.recurrent_mask,
        keep is not None,
        upstream is not None,
        with_deltas,
    )
    per_step = [None] * len(h_prev)
    for i in reversed(range(len(h_prev))):
        h_in = h_prev[i] if t.recurrent_mask is None else h_prev[i] * t.recurrent_mask
        gates, input_stats = _step_gates(h_in, x[i], t, spec, norms, kept, i)
        z, factors_i, saved = factors(h_prev[i], h_in, gates, spec)
        xs = (() if upstream is None else (upstream[i],)) + (z,) + factors_i
        if keep is not None:
            xs += (keep[i] > 0,)
        dh_next, ys = back_step(dh_next, xs)
        per_step[i] = (ys, h_in, saved, input_stats or ())
    ys, h_in, saved, input_stats = _stacked(per_step)
    g, deltas = (ys[0], ys[1:]) if with_deltas else (ys, None)
    delta_x, grads = weight_grads(g, h_in, saved, t, spec, norms, deltas)
    d_x, projection_grads = _projection_grads(delta_x, x, t, spec, input_stats or None)
    grads.update(projection_grads)
    return dh_next, d_x, grads


def _step_gates(h_in, x_i, t, spec, norms, kept, i):
    """`(gates, input_stats)` of step `i`: its kept gates, statistics and
    input statistics (`_forward_step`'s `y_t`, without the state), or
    recomputed from its state entering `R` and its raw inputs `x_i`."""
    if kept is None:
        arrays, input_stats = _loop_arrays(x_i, t, spec, False)
        return _gates(h_in, arrays, t, spec, None, norms), input_stats
    kept_i, input_stats = _input_stats_apart(tuple(a[i] for a in kept), t)
    return _gates(h_in, None, t, spec, kept_i, norms), input_stats


def _input_stats_apart(kept, t):
    """`(gates and their statistics, input statistics)` of what the
    forward steps kept: the input normalization's `(n, s)` come last, or
    `None` without layer normalization."""
    if t.input_gamma is None:
        return kept, None
    return kept[:-2], kept[-2:]


def _stacked(parts):
    """One structure of nested lists and tuples from the same structure
    per step, each array stacked over the steps."""
    first = parts[0]
    if isinstance(first, (list, tuple)):
        return type(first)(_stacked(list(p)) for p in zip(*parts))
    return scan.stacked(parts)


def _projection_grads(delta_x, x, t, spec, stats=None):
    """Through the projection `x W + b`, or `LNx(x W) + b`
    (`_block_projection`), given `delta_x` = dL/d(projection)
    `(steps, batch, 3 * units)` and the input normalization's `stats`.

    Returns `(d_x, grads)`: `grads` those of `kernel`, `projection_bias`,
    `input_gamma`, `input_beta` by name (the ones `t` has). Without a kernel
    in `t`, `d_x` is the gradient of what was projected before.
    """
    grads = {}
    if t.projection_bias is not None:
        grads["projection_bias"] = ops.sum(delta_x, axis=(0, 1))
    if stats is not None:
        norm = recurrence.input_norm(t, spec)
        grads["input_gamma"], grads["input_beta"] = layer_norm.parameter_grads(
            delta_x, stats, norm
        )
        # dL/d(x W), through the normalization.
        delta_x = layer_norm.backward(delta_x, stats, norm)
    if t.kernel is None:
        return delta_x, grads
    masks = t.input_masks
    if masks is None or len(masks) == 1:
        x_in = x if masks is None else x * masks[0]
        d_x = delta_x @ ops.transpose(t.kernel)
        if masks is not None:
            d_x = d_x * masks[0]
        grads["kernel"] = _weight_grad(x_in, delta_x)
    else:
        # One mask per gate (`implementation=1`): gate g sees `x * m_g`.
        per_gate = recurrence.split_gates(delta_x, spec.units)
        kernels = recurrence.split_gates(t.kernel, spec.units)
        d_x = None
        for d, k, m in zip(per_gate, kernels, masks):
            term = (d @ ops.transpose(k)) * m
            d_x = term if d_x is None else d_x + term
        grads["kernel"] = ops.concatenate(
            [_weight_grad(x * m, d) for d, m in zip(per_gate, masks)], -1
        )
    return d_x, grads


def _weight_grad(a, b):
    """`sum_t a_t^T b_t` for `(time, batch, k)` and `(time, batch, n)`.

    The operator, not `ops.matmul`: Keras 3.15.1's `ops.matmul` on PyTorch
    casts to `dtypes.result_type("float64", "float64")`, which is "float32",
    so a float64 layer's kernel gradients lost half their digits."""
    k, n = a.shape[-1], b.shape[-1]
    return ops.transpose(ops.reshape(a, (-1, k))) @ ops.reshape(b, (-1, n))


def _block_grads(
    dh_next, upstream, h_prev, x_arrays, keep, t, spec, kept, keep_deltas=False
):
    """The gradients over consecutive steps, given dL/dh after the last.

    `upstream`: the gradient of each step's output `(steps, batch, units)`,
    or `None` where only the last state's reaches the loop (through
    `dh_next`). `x_arrays`: the projected inputs of the steps (to recompute
    the gates). `kept`: the gates the forward steps kept, or `None`.
    `keep_deltas`: with layer normalization and `kept`, the reverse steps
    emit what reaches each recurrent product through its normalization
    (the plan's `keep_deltas`), for the weights' gradients.
    `keep`: the 0/1 step mask `(steps, batch, 1)` or `None`.

    Returns `(dh_before_first, delta_x, grads)`: `delta_x` =
    dL/d(projection) `(steps, batch, 3 * units)`, `grads` those of
    `recurrent_kernel`, `candidate_bias`, `recurrent_gamma`,
    `recurrent_beta` by name (the ones `t` has).
    """
    h_in = h_prev if t.recurrent_mask is None else h_prev * t.recurrent_mask
    norms = recurrence.recurrent_norms(t, spec)
    factors, through_recurrence, weight_grads = _VARIANTS[spec.reset_after]
    z, per_step, saved = factors(
        h_prev, h_in, _gates(h_in, x_arrays, t, spec, kept, norms), spec
    )
    with_upstream = upstream is not None
    loop_xs = ((upstream,) if with_upstream else ()) + (z,) + per_step
    del z, per_step
    masked = keep is not None
    if masked:
        loop_xs = loop_xs + (keep > 0,)
    # With layer normalization the steps compute the gradients that reach
    # `h R` (through the normalizations): kept where the plan says (where
    # the forward kept its gates, and the loops may emit more than the
    # carry), so that the weights' gradients do not recompute them over
    # the block.
    keep_deltas = keep_deltas and norms is not None and kept is not None
    back_step = _back_step(
        through_recurrence(t.recurrent_kernel, spec, norms),
        t.recurrent_mask,
        masked,
        with_upstream,
        keep_deltas,
    )
    # (On PyTorch `scan` is a Python loop; on TensorFlow an indexed one.)
    ys_like = None
    if keep_deltas:
        batch = ops.shape(dh_next)[:-1]
        ys_like = (dh_next,) + tuple(
            ops.zeros(batch + (math.prod(n.gamma.shape),), dh_next.dtype) for n in norms
        )
    dh_first, ys = scan.scan(
        back_step, dh_next, loop_xs, reverse=True, indexed=True, ys_like=ys_like
    )
    del loop_xs
    g, deltas = (ys[0], ys[1:]) if keep_deltas else (ys, None)
    # From here on vectorized over all steps. Masked steps get exact zeros:
    # `g` is zero there, and the values it multiplies are finite given
    # finite inputs there (see `gru_states`' `x`).
    delta_x, grads = weight_grads(g, h_in, saved, t, spec, norms, deltas)
    return dh_first, delta_x, grads


def _gates(h_in, x_arrays, t, spec, kept, norms):
    """The `recurrence.Gates` of every step: kept, or recomputed at once
    (one large recurrent matmul), with the statistics of `norms`."""
    if kept is not None:
        n_gates = 3 + spec.reset_after
        stats = kept[n_gates:]
        return recurrence.Gates(
            *kept[:3],
            kept[3] if spec.reset_after else None,
            tuple(zip(stats[::2], stats[1::2])),
        )
    x = x_arrays if len(x_arrays) == 3 else x_arrays[0]
    return recurrence.gate_values(
        h_in,
        x,
        t.recurrent_kernel,
        t.candidate_bias,
        spec,
        recurrent_norm=norms,
        keep_stats=True,
    )


def _back_step(through_recurrence, recurrent_mask, masked, with_upstream, keep_deltas):
    """The step of the reverse loop: `(dL/dh_t, xs_t) -> (dL/dh_{t-1}, g_t)`,
    or `(dL/dh_{t-1}, (g_t, *deltas_t))` with `keep_deltas`.

    `xs_t` is `(upstream_t, z_t, *factors_t)` (without `upstream_t` where
    only the last state has a gradient: it comes in as `dL/dh_t` of the
    last step), then the step's mask when `masked`; `g_t` is the gradient
    reaching `h_t` (zero at masked steps). `through_recurrence(g_t,
    factors_t)` is `(dh, deltas)`: the part of dL/dh_{t-1} that goes
    through `R`, and the gradients it made on the way: those reaching the
    recurrent products `h R` (the blocks' variants), or with
    `_step_through_reset_after` what reaches `LN(h R)`, before the
    normalization's backward pass.
    """

    def back_step(dh_next, xs):
        keep = xs[-1] if masked else None
        xs = xs[:-1] if masked else xs
        if with_upstream:
            upstream, z, *factors = xs
            g_all = upstream + dh_next
        else:
            z, *factors = xs
            g_all = dh_next
        g = ops.where(keep, g_all, 0) if masked else g_all
        dh_in, deltas = through_recurrence(g, factors)
        if recurrent_mask is not None:
            dh_in = dh_in * recurrent_mask
        dh_prev = dh_in + g * z
        if masked:
            # A masked step passed the state through, and its gradient.
            dh_prev = ops.where(keep, dh_prev, g_all)
        return dh_prev, ((g,) + deltas if keep_deltas else g)

    return back_step


# The three parts of the backward pass that depend on the formula variant,
# `reset_after=True` then `False`: the factors (before the reverse loop),
# the step's path through `R` (inside it), the gradients of the weights
# (after it). `saved` holds what `weight_grads` needs: a list, which the
# `reset_after=True` variant empties as it goes, so that eager backends free
# `by_gate` (three times the state's width) once it is used. With layer
# normalization the factors carry the statistics `(n, s)` of each recurrent
# normalization too (`recurrence.Gates.stats`), flattened after the others,
# and `norms` (`recurrence.recurrent_norms`) is not `None`.


def _flat_stats(gates):
    """The statistics of `gates` as one flat tuple `(n_1, s_1, n_2, ...)`,
    which a reverse step takes after its other factors (`_back_step`):
    `(n, s)` at `factors[1:3]` (`reset_after=True`; `factors[3:5]` in
    `_step_factors_reset_after`'s), or `(n_zr, s_zr, n_h, s_h)` at
    `factors[4:8]`."""
    return tuple(a for stats in gates.stats for a in stats)


def _stats_like(h, norms):
    """Arrays shaped like one step's flat statistics (`_flat_stats`) of
    `norms`, for a state `h` `(batch, units)` (`layer_norm.stats_like`)."""
    like = ()
    for norm in norms or ():
        like += layer_norm.stats_like(ops.shape(h)[:-1], norm, h.dtype)
    return like


def _through_norm(delta, stats, norm):
    """`LNback(delta)` with a norm, else `delta`."""
    return delta if norm is None else layer_norm.backward(delta, stats, norm)


def _parts_reset_after(h_prev, gates, spec):
    """`(f_z, f_r, f_h, f_hh)`, each `(..., units)`: what `g` = dL/dh_t
    multiplies to reach the pre-activations of z and r, the candidate's
    recurrent term `rec_h`, and its input term:
    `f_z = (h_prev - hh) * z'`, `f_r = f_hh * rec_h * r'`, `f_h = f_hh * r`,
    `f_hh = (1 - z) * hh'`."""
    z, r, hh, rec_h = gates[:4]
    rec_slope = slope_of(spec.recurrent_activation)
    f_hh = (1 - z) * slope_of(spec.activation)(hh)
    return (h_prev - hh) * rec_slope(z), f_hh * rec_h * rec_slope(r), f_hh * r, f_hh


def _factors_reset_after(h_prev, h_in, gates, spec):
    """`(z, (by_gate, *stats), saved)`: `by_gate` `(..., 3, units)` holds
    `[f_z, f_r, f_h]` (`_parts_reset_after`), so that `delta = g * by_gate`."""
    *by_gate, f_hh = _parts_reset_after(h_prev, gates, spec)
    # Stacked per gate, so that a step multiplies by broadcasting `g` rather
    # than concatenating three copies (a concatenation costs more than the
    # multiply on PyTorch). What is not returned (r, hh, rec_h: the whole
    # recurrent matmul) is freed on return on eager backends, lowering the
    # backward pass's peak memory.
    by_gate = ops.stack(by_gate, axis=-2)
    return gates.z, (by_gate,) + _flat_stats(gates), [by_gate, f_hh, gates.stats]


def _through_reset_after(recurrent_kernel, spec, norms):
    kernel_t = ops.transpose(recurrent_kernel)
    units = spec.units
    norm = None if norms is None else norms[0]

    def through(g, factors):
        # delta_t = [delta_z, delta_r, delta_rec_h], then LNback, then R^T.
        delta = ops.reshape(g[..., None, :] * factors[0], (-1, 3 * units))
        delta = _through_norm(delta, factors[1:3], norm)
        return delta @ kernel_t, (delta,)

    return through


def _weight_grads_reset_after(g, h_in, saved, t, spec, norms, deltas=None):
    by_gate = saved.pop(0)
    delta = ops.reshape(
        g[..., None, :] * by_gate, ops.shape(g)[:-1] + (3 * spec.units,)
    )
    del by_gate
    return _grads_reset_after(
        delta, g * saved.pop(0), h_in, saved, t, spec, norms, deltas
    )


def _grads_reset_after(delta, delta_hh, h_in, saved, t, spec, norms, deltas=None):
    """The gradients of `_weight_grads_reset_after` from `delta` (what
    reaches the recurrent products, before their normalization) and
    `delta_hh` (what reaches the candidate's input term); `saved` holds the
    recurrent normalization's statistics with layer normalization."""
    units = spec.units
    delta_x = ops.concatenate([delta[..., : 2 * units], delta_hh], axis=-1)
    grads = {}
    if t.candidate_bias is not None:
        grads["candidate_bias"] = ops.sum(delta[..., 2 * units :], axis=(0, 1))
    if norms is not None:
        (stats,) = saved.pop(0)
        grads["recurrent_gamma"], grads["recurrent_beta"] = layer_norm.parameter_grads(
            delta, stats, norms[0]
        )
        delta = deltas[0] if deltas else layer_norm.backward(delta, stats, norms[0])
    grads["recurrent_kernel"] = _weight_grad(h_in, delta)
    return delta_x, grads


def _factors_reset_before(h_prev, h_in, gates, spec):
    """`(z, (f_z, f_hh, q, r, *stats), saved)`, `q = h_in * r'`."""
    z, r, hh = gates[:3]
    rec_slope = slope_of(spec.recurrent_activation)
    f_z = (h_prev - hh) * rec_slope(z)
    f_hh = (1 - z) * slope_of(spec.activation)(hh)
    q = h_in * rec_slope(r)
    return z, (f_z, f_hh, q, r) + _flat_stats(gates), [f_z, f_hh, q, r, gates.stats]


def _through_reset_before(recurrent_kernel, spec, norms):
    kernel_t = ops.transpose(recurrent_kernel)
    kernel_zr_t = kernel_t[: 2 * spec.units]
    kernel_h_t = kernel_t[2 * spec.units :]
    norm_zr, norm_h = (None, None) if norms is None else norms

    def through(g, factors):
        f_z, f_hh, q, r = factors[:4]
        delta_a_hh = _through_norm(g * f_hh, factors[6:8], norm_h)
        d_rh = delta_a_hh @ kernel_h_t
        delta_zr = ops.concatenate([g * f_z, d_rh * q], -1)
        delta_a_zr = _through_norm(delta_zr, factors[4:6], norm_zr)
        return d_rh * r + delta_a_zr @ kernel_zr_t, (delta_a_zr, delta_a_hh)

    return through


def _weight_grads_reset_before(g, h_in, saved, t, spec, norms, deltas=None):
    f_z, f_hh, q, r, stats = saved
    norm_zr, norm_h = (None, None) if norms is None else norms
    stats_zr, stats_h = stats or (None, None)
    kernel_h_t = ops.transpose(t.recurrent_kernel[:, 2 * spec.units :])
    delta_hh = g * f_hh
    # The normalized deltas the reverse steps kept (`_through_reset_before`
    # order: zr, hh), or the normalizations' backward passes again.
    delta_a_hh = deltas[1] if deltas else _through_norm(delta_hh, stats_h, norm_h)
    d_rh = delta_a_hh @ kernel_h_t
    delta_zr = ops.concatenate([g * f_z, d_rh * q], -1)
    delta_a_zr = deltas[0] if deltas else _through_norm(delta_zr, stats_zr, norm_zr)
    delta_x = ops.concatenate([delta_zr, delta_hh], axis=-1)
    grads = {
        "recurrent_kernel": ops.concatenate(
            [_weight_grad(h_in, delta_a_zr), _weight_grad(r * h_in, delta_a_hh)], -1
        )
    }
    if norms is not None:
        zr, hh = (
            layer_norm.parameter_grads(delta_zr, stats_zr, norm_zr),
            layer_norm.parameter_grads(delta_hh, stats_h, norm_h),
        )
        grads["recurrent_gamma"] = ops.concatenate([zr[0], hh[0]], 0)
        if norm_zr.beta is not None:
            grads["recurrent_beta"] = ops.concatenate([zr[1], hh[1]], 0)
    return delta_x, grads


# The reset_after variant of `_grads_by_step`'s reverse steps, traced by
# `torch.compile` step by step: the factors stay three arrays, and a step
# concatenates `g` times each into its `delta`, which it emits for the
# weights' gradients. The blocks' variant (stacked factors, a broadcast,
# a reshape) traces as 741 lines of Keras' dispatch a step, this as 117
# (Dynamo's `trace_source` log, Keras 3.15.1, PyTorch 2.13; see
# `scan.stacked`); compiled, both are one kernel.


def _step_factors_reset_after(h_prev, h_in, gates, spec):
    """`(z, (f_z, f_r, f_h, *stats), saved)`, `saved` `[f_hh, stats]`."""
    *parts, f_hh = _parts_reset_after(h_prev, gates, spec)
    return gates.z, tuple(parts) + _flat_stats(gates), [f_hh, gates.stats]


def _step_through_reset_after(recurrent_kernel, spec, norms):
    kernel_t = ops.transpose(recurrent_kernel)
    norm = None if norms is None else norms[0]

    def through(g, factors):
        # delta_t = [delta_z, delta_r, delta_rec_h], then LNback, then R^T;
        # the step emits delta_t before the normalization.
        delta = ops.concatenate([g * f for f in factors[:3]], -1)
        return _through_norm(delta, factors[3:5], norm) @ kernel_t, (delta,)

    return through


def _step_weight_grads_reset_after(g, h_in, saved, t, spec, norms, deltas):
    """`_weight_grads_reset_after` from the steps' `deltas`."""
    return _grads_reset_after(deltas[0], g * saved.pop(0), h_in, saved, t, spec, norms)


_VARIANTS = {
    True: (_factors_reset_after, _through_reset_after, _weight_grads_reset_after),
    False: (_factors_reset_before, _through_reset_before, _weight_grads_reset_before),
}
# `_grads_by_step`'s, each with whether its steps emit their deltas (the
# reset_before variant's steps already concatenate once and no more).
_STEP_VARIANTS = {
    True: (
        _step_factors_reset_after,
        _step_through_reset_after,
        _step_weight_grads_reset_after,
        True,
    ),
    False: _VARIANTS[False] + (False,),
}
