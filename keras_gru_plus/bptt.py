"""The GRU state sequence with a hand-written backward pass (BPTT).

`gru_states` runs the recurrence forward with `keras.ops.scan` and carries
only the state. Its gradient, given through `keras.ops.custom_gradient`,
is derived from the documented equations (see `recurrence.py`):

- Everything that does not depend on the gradient of the next step is
  recomputed after the forward loop in a vectorized way: the recurrent
  matmul of every step at once, `(time * batch, units) x (units, 3 * units)`,
  then the gates and the activation slopes. (PyTorch and JAX keep the gates
  of the forward steps instead, except over long sequences: see
  `keeps_gates`.)
- Only the recurrence of `dL/dh` is sequential: a reverse loop with one
  fused matmul per step (two with `reset_after=False`).
- The weight gradients are single large matmuls after the loop,
  `dR = H_prev^T dA`, the way fused RNN kernels get their speed.
- Sequences long enough for blocks (`scan.block_size`: 100 steps from 200
  steps on; 25 from 50 on PyTorch and TensorFlow) go backward one block at
  a time, last block first: the recompute (or the kept gates), the
  sequential part and the matmuls of one block, then the next, so the
  vectorized intermediates stay block sized (less memory, and in cache;
  for how the blocks loop, see `_block_loops`). Given the input
  projection, they also project
  their inputs one block at a time, forward and backward, and return the
  gradients of the inputs and the input kernel block by block: the
  projection of the whole sequence and its gradient, three times the
  width of the state, are never held. Measured on a training step at
  1,000 steps (batch 32, 64 features, 128 units, 2 CPUs): peak memory
  TensorFlow 332 -> 232 MB, PyTorch 380 -> 183 MB, JAX 328 -> 146 MB;
  time TensorFlow 141 -> 109 ms, JAX 151 -> 104 ms, PyTorch 359 ->
  341 ms.

This avoids storing autodiff intermediates of every step, and it lets
TensorFlow compile the training step with XLA: autodiff through its
`while_loop` needs a bounded loop, which `keras.ops.scan` does not give.

The slopes of the activations are taken from their outputs, so this path
serves the activations listed in `_SLOPES`; the layer falls back to
autodiff for any other.
"""

import keras
from keras import activations
from keras import ops

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


def supports(activation, recurrent_activation, recurrent_masks):
    """Whether `gru_states` can serve this configuration."""
    return (
        slope_of(activation) is not None
        and slope_of(recurrent_activation) is not None
        and (recurrent_masks is None or len(recurrent_masks) == 1)
    )


def keeps_gates(n_steps):
    """Whether the forward steps keep their gates for the backward pass.

    PyTorch and JAX keep them rather than recomputing them (one large
    matmul and the activations), except over long sequences, which go
    backward in blocks of `scan.BLOCK_STEPS` so that memory stays block
    sized. Measured on JAX (100 steps, batch 32, 2 CPUs): training steps
    1-5% faster across the benchmark's configurations, but 1.5% slower
    with `reset_after=False`. On TensorFlow keeping them measured no
    faster.
    """
    return (keras.backend.backend() in ("torch", "jax")
            and (n_steps is None or n_steps < 2 * scan.BLOCK_STEPS))


def _block_loops(n_steps):
    """How the blocked passes over `n_steps` loop: `(outer, inner_unrolled)`.

    - PyTorch: Python loops.
    - JAX: a `scan` of blocks, each a `scan` of steps (XLA compiled
      unrolled blocks into a far larger program: peak memory of a training
      step 589 MB against 326 MB).
    - TensorFlow: the steps of a block are a loop. Over the few blocks of
      a shorter sequence (`scan.SHORT_BLOCK_STEPS`), a Python loop of
      blocks, so that TensorFlow runs the vectorized work of one block
      (projection, recompute, weight gradients) on the second core while
      the steps of the next run. Over long sequences a `scan` of blocks,
      which holds one block at a time. Measured on a training step over
      1,000 steps, against a `scan` of unrolled blocks: 8% slower, peak
      memory 232 -> 134 MB, first call (building the graph) 2.7 -> 0.5 s;
      a Python loop of the 10 blocks was as fast but peaked at 265 MB.
    """
    backend = keras.backend.backend()
    if backend == "torch":
        return scan.python_loop, True
    if backend == "jax" or n_steps >= 2 * scan.BLOCK_STEPS:
        return scan.scan, False
    return scan.python_loop, False


def _indexed(loop):
    """`indexed=True` for `scan.scan` (see there), nothing for a Python
    loop."""
    return {"indexed": True} if loop is scan.scan else {}


def _weight_grad(a, b):
    """`sum_t a_t^T b_t` for `(time, batch, k)` and `(time, batch, n)`."""
    k, n = a.shape[-1], b.shape[-1]
    return ops.matmul(
        ops.transpose(ops.reshape(a, (-1, k))), ops.reshape(b, (-1, n))
    )


def _x_grads(per_gate, split):
    """Gradients for the inputs as they came: per gate, or packed."""
    if split:
        return list(per_gate)
    return [ops.concatenate(per_gate, axis=-1)]


def gru_states(
    x,
    initial_state,
    recurrent_kernel,
    candidate_bias,
    activation,
    recurrent_activation,
    reset_after,
    mask=None,
    recurrent_mask=None,
    projection=None,
):
    """The state after every step, `(time, batch, units)`, time-major.

    Args:
        x: packed projected inputs `(time, batch, 3 * units)` from
            `recurrence.project_inputs`, or the same split per gate; with
            `projection`, the inputs before their projection
            `(time, batch, input_dim)`.
        initial_state: `(batch, units)`.
        recurrent_kernel: `(units, 3 * units)`, gates (z, r, h).
        candidate_bias: `rb_h` `(units,)` (`reset_after=True` only) or `None`.
        activation, recurrent_activation: callables with a known slope.
        reset_after: the formula variant.
        mask: `None` or `(time, batch)` boolean; a masked step keeps the
            state. The inputs of masked steps must be finite (the gradients
            there are then exact zeros, without a select over the backward
            pass's products); `sequence.run_sequence` zeroes them.
        recurrent_mask: `None` or one `(batch, units)` dropout mask.
        projection: `None`, or `(kernel, bias, input_mask)` for a sequence
            long enough to go in blocks (`scan.block_size`): the input kernel,
            the projection bias (`recurrence.split_bias`) or `None`, and
            `None` or one `(batch, input_dim)` dropout mask. The inputs are
            then projected one block at a time, in the forward loop and
            again in the backward pass, so that neither the projection of
            the whole sequence nor its gradient is ever held.

    Returns:
        The states `(time, batch, units)`, differentiable with respect to
        `x`, the initial state, the kernel and the candidate bias, and the
        arrays of `projection` if given.
    """
    act_slope = slope_of(activation)
    rec_slope = slope_of(recurrent_activation)
    units = recurrent_kernel.shape[0]
    dtype = initial_state.dtype
    has_bias = candidate_bias is not None
    has_mask = mask is not None
    has_rmask = recurrent_mask is not None
    has_db = reset_after and has_bias
    raw = projection is not None
    if has_bias and not reset_after:
        raise ValueError(
            "gru_states: a candidate bias (rb_h) exists only with "
            "reset_after=True (recurrence.split_bias gives None otherwise); "
            "received a candidate bias with reset_after=False.")
    if raw and scan.block_size(x.shape[0]) is None:
        raise ValueError(
            "gru_states projects block by block only over a sequence long "
            "enough for blocks (scan.block_size), of a length known when "
            f"traced; received inputs of shape {tuple(x.shape)}.")

    # Tensors go in one flat list (custom gradients take positional
    # tensors only); masks as 0/1 floats so every input has a gradient slot.
    # `split`: whether the projected inputs are split per gate; `n_x`: how
    # many arrays `x` is.
    split = recurrence.split_layout() if raw else isinstance(x, (list, tuple))
    n_x = 3 if split and not raw else 1
    args = (list(x) if n_x == 3 else [x]) + [initial_state, recurrent_kernel]
    if has_bias:
        args.append(candidate_bias)
    if has_mask:
        args.append(ops.expand_dims(ops.cast(mask, dtype), -1))
    if has_rmask:
        args.append(recurrent_mask)
    if raw:
        args += [a for a in projection if a is not None]

    def unpack(args):
        x = tuple(args[:n_x]) if n_x == 3 else args[0]
        h0, kernel = args[n_x], args[n_x + 1]
        rest = list(args[n_x + 2 :])
        bias = rest.pop(0) if has_bias else None
        m = rest.pop(0) if has_mask else None
        rmask = rest.pop(0) if has_rmask else None
        proj = None
        if raw:
            proj = tuple(rest.pop(0) if a is not None else None
                         for a in projection)
        return x, h0, kernel, bias, m, rmask, proj

    def gates(h_in, x_t, kernel, bias):
        return recurrence.gate_values(h_in, x_t, kernel, bias, activation,
                                      recurrent_activation, reset_after)

    def project_block(x_b, proj):
        """A block of raw inputs, dropped out, and its projection (a tuple
        laid out as the loops take it)."""
        p_kernel, p_bias, p_mask = proj
        x_in = x_b if p_mask is None else x_b * p_mask
        projected = recurrence.project_inputs(x_in, p_kernel, p_bias, units)
        if split:
            return x_in, recurrence.split_gates(projected, units)
        return x_in, (projected,)

    @ops.custom_gradient
    def states_fn(*args):
        x, h0, kernel, bias, m, rmask, proj = unpack(args)
        # The mask as booleans, compared once for all steps.
        keep = (m > 0) if has_mask else None
        step_kernel = recurrence.kernel_parts(kernel, reset_after)
        x_arrays = tuple(x) if n_x == 3 else (x,)
        keep_gates = keeps_gates(x_arrays[0].shape[0])
        n_gate_x = 3 if split else 1

        def step(h, xs):
            h_in = h if rmask is None else h * rmask
            x_t = tuple(xs[:n_gate_x]) if split else xs[0]
            z, r, n, rec_h = gates(h_in, x_t, step_kernel, bias)
            h_new = n + z * (h - n)
            if has_mask:
                h_new = ops.where(xs[-1], h_new, h)
            if keep_gates:
                return h_new, (h_new, z, r, n) + (
                    (rec_h,) if reset_after else ())
            return h_new, h_new

        if raw:
            states = _forward_in_blocks(step, h0, x, keep, proj,
                                        keep_gates)
        else:
            _, states = scan.scan(step, h0,
                                  x_arrays + ((keep,) if has_mask else ()),
                                  indexed=True)
        kept = None
        if keep_gates:
            states, kept = states[0], states[1:]

        def grad(*grad_args, upstream=None):
            if upstream is None:
                (upstream,) = grad_args
            return _backward(upstream, states, x_arrays, h0, kernel, bias, m,
                             rmask, proj, kept)

        return states, grad

    def _forward_in_blocks(step, h0, x, keep, proj, keep_gates):
        # The forward loop over raw inputs, one block at a time: project
        # the block, then its steps (see `_block_loops`). What the steps
        # emit (the state, and the gates if kept, all `(batch, units)`)
        # goes as a tuple. (The gates are kept only where the steps are a
        # Python loop.)
        outer_loop, unrolled = _block_loops(x.shape[0])

        def tuple_step(h, xs):
            h, y = step(h, xs)
            return h, (y if keep_gates else (y,))

        def run_block(h, parts):
            arrays = project_block(parts[0], proj)[1]
            if has_mask:
                arrays = arrays + (parts[1],)
            if unrolled:
                return scan.python_loop(tuple_step, h, arrays)
            # (`step`, whose output has the carry's structure unless gates
            # are kept, which TensorFlow's `scan` requires.)
            h, ys = scan.scan(step, h, arrays, indexed=True)
            return h, (ys if keep_gates else (ys,))

        _, ys = scan.blocks_loop(
            run_block, h0, (x,) + ((keep,) if has_mask else ()),
            scan.block_size(x.shape[0]),
            n_out=(4 + reset_after) if keep_gates else 1,
            loop=outer_loop, **_indexed(outer_loop))
        return ys if keep_gates else ys[0]

    def _backward(upstream, states, x_arrays, h0, kernel, bias, m, rmask,
                  proj, kept):
        h_prev = ops.concatenate([ops.expand_dims(h0, 0), states[:-1]], 0)
        n_steps = states.shape[0]
        block = scan.block_size(n_steps)
        if block is None:
            dh0, dx, d_kernel, d_bias = _block_grads(
                ops.zeros_like(h0), upstream, h_prev, x_arrays, m, kernel,
                bias, rmask, unrolled=False, kept=kept)
            summed = [d_kernel] + ([d_bias] if has_db else [])
        else:
            dh0, dx, summed = _blocked(block, h0, upstream, h_prev, x_arrays,
                                       m, kernel, bias, rmask, proj, kept)
        grads = list(dx) + [dh0] + summed[:1 + has_db]
        if m is not None:
            grads.append(ops.zeros_like(m))
        if rmask is not None:
            grads.append(ops.zeros_like(rmask))
        if proj is not None:
            grads += summed[1 + has_db :]
            if proj[2] is not None:
                grads.append(ops.zeros_like(proj[2]))
        return tuple(grads)

    def _blocked(block, h0, upstream, h_prev, x_arrays, m, kernel, bias,
                 rmask, proj, kept):
        # Blocks of `block` steps, last block first: the vectorized work of
        # a block stays small (in cache, and freed block by block). A
        # shorter block at the end of the sequence, if any, runs first,
        # outside the loop. How blocks and steps loop: `_block_loops`.
        #
        # Returns `(dh0, dx, summed)`: `dx` the gradients laid out as the
        # x arrays, `summed` the gradients of the weights, summed over
        # the steps: recurrent kernel, candidate bias (if any), then with
        # `proj` input kernel and projection bias (if any).
        outer_loop, unrolled = _block_loops(upstream.shape[0])

        def grads_of(dh, parts):
            # `parts`: upstream, h_prev, the x arrays, the mask if any, the
            # kept gates if any.
            x_b = tuple(parts[2 : 2 + n_x])
            if proj is not None:
                x_in, x_b = project_block(x_b[0], proj)
            dh_b, dx_b, dk_b, db_b = _block_grads(
                dh, parts[0], parts[1], x_b,
                parts[2 + n_x] if has_mask else None, kernel, bias, rmask,
                unrolled=unrolled,
                kept=None if kept is None
                else tuple(parts[2 + n_x + has_mask :]))
            summed = [dk_b] + ([db_b] if has_db else [])
            if proj is not None:
                # Through the projection: `x_in W + b`, `x_in` the dropped
                # out inputs.
                d_proj = (dx_b[0] if len(dx_b) == 1
                          else ops.concatenate(dx_b, axis=-1))
                d_in = d_proj @ ops.transpose(proj[0])
                if proj[2] is not None:
                    d_in = d_in * proj[2]
                dx_b = [d_in]
                summed.append(_weight_grad(x_in, d_proj))
                if proj[1] is not None:
                    summed.append(ops.sum(d_proj, axis=(0, 1)))
            return dh_b, dx_b, summed

        seqs = ((upstream, h_prev) + x_arrays + ((m,) if has_mask else ())
                + (tuple(kept) if kept is not None else ()))
        blocks, rest = scan.in_blocks(seqs, block)
        dh = ops.zeros_like(h0)
        tail = None
        if rest is not None:
            tail = grads_of(dh, rest)
            dh = tail[0]

        def outer(carry, b):
            dh_b, dx_b, summed_b = grads_of(carry[0], b)
            out = (dh_b,) + tuple(dx_b) + tuple(summed_b)
            # TensorFlow's `scan` wants each output shaped like the carry.
            return out, out

        weights = [kernel] + ([bias] if has_db else [])
        if proj is not None:
            weights += [a for a in proj[:2] if a is not None]
        init = ((dh,)
                + tuple(ops.zeros_like(a[0]) for a in blocks[2 : 2 + n_x])
                + tuple(ops.zeros_like(w) for w in weights))
        last, ys = outer_loop(outer, init, blocks, reverse=True,
                              **_indexed(outer_loop))
        dx = [ops.reshape(d, (-1,) + ops.shape(d)[2:])
              for d in ys[1 : 1 + n_x]]
        summed = [ops.sum(d, axis=0) for d in ys[1 + n_x :]]
        if tail is not None:
            dx = [ops.concatenate([a, b], axis=0) for a, b in zip(dx, tail[1])]
            summed = [a + b for a, b in zip(summed, tail[2])]
        return last[0], dx, summed

    def _block_grads(dh_next, upstream, h_prev, x_arrays, m, kernel, bias,
                     rmask, unrolled, kept=None):
        """Gradients over consecutive steps, given dL/dh after the last.

        `kept`: the gates `(z, r, hh[, rec_h])` the forward steps kept, or
        `None` to recompute them.

        Returns `(dh_before_first, dx, d_kernel, d_bias)`, with `dx` a list
        laid out as `x_arrays` and `d_bias` `None` without a candidate bias.
        """
        x = x_arrays if split else x_arrays[0]
        h_in = h_prev if rmask is None else h_prev * rmask
        if kept is None:
            # Recomputed for all steps at once: one large recurrent matmul.
            z, r, n, rec_h = gates(h_in, x, kernel, bias)
        else:
            z, r, n = kept[:3]
            rec_h = kept[3] if reset_after else None
        # d(loss)/d(pre-activation) = d(loss)/d(h_new) * factor.
        f_z = (h_prev - n) * rec_slope(z)
        f_n = (1 - z) * act_slope(n)
        kernel_t = ops.transpose(kernel)
        if reset_after:
            # d(loss)/d[pre_z, pre_r, rec_h] = dh_new * factors.
            factors = ops.concatenate(
                [f_z, f_n * rec_h * rec_slope(r), f_n * r], axis=-1)
            # Eager backends free these now (rec_h keeps the whole
            # recurrent matmul alive), lowering the backward's peak memory.
            del n, r, rec_h, f_z
            # Viewed per gate `(..., 3, units)`, so that a step multiplies
            # by broadcasting dh_new rather than concatenating three copies
            # (a concatenation costs more than the multiply on PyTorch).
            by_gate = ops.reshape(
                factors, ops.shape(factors)[:-1] + (3, units))
            del factors
            loop_xs = (upstream, z, by_gate)
        else:
            q = h_in * rec_slope(r)
            kernel_zr_t = kernel_t[: 2 * units]
            kernel_h_t = kernel_t[2 * units :]
            loop_xs = (upstream, z, f_z, f_n, q, r)
        if m is not None:
            loop_xs = loop_xs + (m > 0,)

        def back_step(carry, xs):
            g = xs[0] + carry
            dh_new = ops.where(xs[-1], g, 0) if has_mask else g
            if reset_after:
                da = ops.reshape(dh_new[..., None, :] * xs[2],
                                 (-1, 3 * units))
                dh_in = da @ kernel_t
            else:
                _, _, fz, fn, qt, rt = xs[:6]
                d_rh = (dh_new * fn) @ kernel_h_t
                dzr = ops.concatenate([dh_new * fz, d_rh * qt], -1)
                dh_in = d_rh * rt + dzr @ kernel_zr_t
            if rmask is not None:
                dh_in = dh_in * rmask
            dh_prev = dh_in + dh_new * xs[1]
            if has_mask:
                dh_prev = ops.where(xs[-1], dh_prev, g)
            return dh_prev, dh_new

        if unrolled:
            dh_first, dh_new = scan.python_loop(back_step, dh_next, loop_xs,
                                                reverse=True)
        else:
            dh_first, dh_new = scan.scan(back_step, dh_next, loop_xs,
                                         reverse=True, indexed=True)
        del loop_xs
        # Vectorized over all steps from here on. Masked steps get exact
        # zeros: `dh_new` is zero there, and the values it multiplies are
        # finite given finite inputs there (see `gru_states`' `mask`).
        d_bias = None
        if reset_after:
            da = ops.reshape(dh_new[..., None, :] * by_gate,
                             ops.shape(dh_new)[:-1] + (3 * units,))
            del by_gate
            dn = dh_new * f_n
            dx = [da[..., :units], da[..., units : 2 * units], dn]
            d_kernel = _weight_grad(h_in, da)
            if bias is not None:
                d_bias = ops.sum(da[..., 2 * units :], axis=(0, 1))
        else:
            dn = dh_new * f_n
            d_rh = dn @ kernel_h_t
            dzr = ops.concatenate([dh_new * f_z, d_rh * q], -1)
            dx = [dzr[..., :units], dzr[..., units:], dn]
            d_kernel = ops.concatenate(
                [_weight_grad(h_in, dzr), _weight_grad(r * h_in, dn)], -1)
        return dh_first, _x_grads(dx, split), d_kernel, d_bias

    return states_fn(*args)
