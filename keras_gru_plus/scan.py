"""`keras.ops.scan` over several time-major arrays, on every backend.

Keras' TensorFlow `scan` fails when it is given several `xs` whose length
is unknown when traced (its static-length check dereferences `None`), as
in a `tf.function` with a `None` time dimension. There the arrays, which
share their time and batch axes, are packed into one along the last axis
(each flattened after its batch axis) and split again inside the step.
"""

import math

import keras
from keras import ops

# Steps unrolled per iteration of TensorFlow's indexed loops (`scan` with
# `indexed=True`: the training passes). Keras' TensorFlow `scan` reads and
# writes its carry and outputs through TensorArrays at every iteration;
# over groups of unrolled steps that cost is paid once per group. Measured
# on training steps (batch 32, 100 steps, 64 features, 128 units, 2 CPUs):
# 3-8% faster in every configuration of the benchmark (base 14.2 -> 13.5
# ms, masked 15.6 -> 14.4, 1,000 steps 138 -> 127 ms, 512 units 83 ->
# 80 ms); groups of 3 or 10 steps were slower than 5. The cost: a larger
# graph, the first training call at 100 steps 0.6 -> 1.1 s.
SUB_BLOCK_STEPS = 5


def scan(step, init, xs, reverse=False, parallel=1, indexed=False):
    """`keras.ops.scan(step, init, xs, reverse=reverse)` for a tuple `xs`.

    `step(carry, xs_t) -> (carry, y_t)`. On TensorFlow, `y_t` must have the
    structure and shapes of the carry (a tensor, or a tuple of tensors);
    Keras' TensorFlow `scan` requires it.

    `parallel`: on TensorFlow, how many steps may run at once (Keras passes
    `scan`'s `unroll` to `tf.while_loop` as `parallel_iterations`): work
    of later steps that does not wait on the carry runs alongside the
    current step. Other backends ignore it.

    `indexed`: on TensorFlow, the loop goes over step numbers and each step
    slices its inputs from `xs`, instead of Keras' `scan` copying every
    array of `xs` into a TensorArray first. For loops that autodiff does
    not go through (the hand-written backward pass): TensorFlow would
    differentiate each slice into an array of the whole sequence. Measured
    in a training step at 1,000 steps: peak memory 438 -> 342 MB, time
    2-4% lower. With a single tensor as the carry and a length known when
    traced, the loop goes over groups of `SUB_BLOCK_STEPS` unrolled steps.
    """
    if keras.backend.backend() == "torch":
        # Eager: a plain loop does what keras' torch `scan` does, without
        # its per-step tree flattening (a large share of a small step).
        return python_loop(step, init, xs, reverse)
    unroll = parallel if keras.backend.backend() == "tensorflow" else 1
    n_steps = xs[0].shape[0]
    if (indexed and keras.backend.backend() == "tensorflow"
            and not isinstance(init, (tuple, list))
            and n_steps is not None and n_steps >= 2 * SUB_BLOCK_STEPS):
        # Groups of unrolled steps (see `SUB_BLOCK_STEPS`).
        return unrolled_blocks(step, init, xs, SUB_BLOCK_STEPS,
                               reverse=reverse, indexed=True,
                               parallel=parallel)
    if indexed and keras.backend.backend() == "tensorflow":
        def indexed_step(carry, t):
            return step(carry, tuple(x[t] for x in xs))

        steps = ops.arange(ops.shape(xs[0])[0])
        return ops.scan(indexed_step, init, steps, reverse=reverse,
                        unroll=unroll)
    if xs[0].shape[0] is not None or len(xs) == 1:
        return ops.scan(step, init, tuple(xs), reverse=reverse, unroll=unroll)
    return ops.scan(_unpacking(step, xs), init, _pack(xs), reverse=reverse,
                    unroll=unroll)


def _pack(xs):
    """`(time, batch, ...)` arrays as one `(time, batch, n)` array: each
    flattened after its batch axis, then concatenated (bools as 0/1)."""
    dtype = next(x.dtype for x in xs if x.dtype != "bool")
    flat = []
    for x in xs:
        x = ops.cast(x, dtype)
        if len(x.shape) > 3:
            x = ops.reshape(x, ops.shape(x)[:2] + (math.prod(x.shape[2:]),))
        flat.append(x)
    return ops.concatenate(flat, axis=-1)


def _unpacking(step, xs):
    """Wraps `step` to take one packed array and split it back into `xs`."""
    shapes = [tuple(x.shape[2:]) for x in xs]
    is_bool = [x.dtype == "bool" for x in xs]

    def packed_step(carry, packed):
        parts, start = [], 0
        for shape, as_bool in zip(shapes, is_bool):
            width = math.prod(shape)
            part = packed[..., start : start + width]
            if len(shape) > 1:
                part = ops.reshape(part, (-1,) + shape)
            parts.append(part > 0.5 if as_bool else part)
            start += width
        return step(carry, tuple(parts))

    return packed_step


# Steps per block of the loops over long sequences (`block_size`). The
# training passes and the inference loops (but on TensorFlow, which
# projects each step inside its inference loops) take their inputs one
# block at a time (projection, recompute, gradients), so no array of
# the whole sequence wider than the state is held. Measured on 1,000 steps
# (batch 32, 64 features, 128 units, 2 CPUs): backward in blocks against
# one block, training steps 25% faster on PyTorch and 7% on JAX, the same
# on TensorFlow; projecting in blocks too, training 141 -> 109 ms on
# TensorFlow, 151 -> 104 ms on JAX, peak memory 332 -> 232 MB, 328 ->
# 146 MB, and 380 -> 183 MB on PyTorch; the state-only inference loop on
# JAX 44 -> 24 ms. On 100 steps one block is as fast or faster on JAX and
# TensorFlow.
BLOCK_STEPS = 100

# Steps per block over shorter sequences (at least two blocks), on
# PyTorch and TensorFlow:
# - PyTorch: blocks spare arrays of the whole sequence, each a fresh
#   allocation of megabytes that eager PyTorch pays for. Training keeps the
#   forward gates there (`bptt.keeps_gates`), so nothing is recomputed.
#   Measured on 100 steps (batch 32, 64 features, 128 units, 2 CPUs):
#   training 5-12% faster across the benchmark's configurations (base
#   41.7 -> 38.6 ms), wide (512 units) unchanged; state-only predict 5%
#   faster.
# - TensorFlow: the training passes loop over blocks in Python
#   (`bptt._block_loops`), so TensorFlow runs one block's vectorized work
#   on the second core while the steps of the next block run. Measured on
#   100 steps: training steps 2-13% faster across the benchmark's
#   configurations; blocks of 10, 20, 34 and 50 steps gained less.
SHORT_BLOCK_STEPS = 25


def block_size(n_steps):
    """Steps per block of a loop over `n_steps`, or `None` for one block.

    Sequences of at least two blocks, with a length known when traced.
    """
    if n_steps is None:
        return None
    if n_steps >= 2 * BLOCK_STEPS:
        return BLOCK_STEPS
    if (keras.backend.backend() in ("torch", "tensorflow")
            and n_steps >= 2 * SHORT_BLOCK_STEPS):
        return SHORT_BLOCK_STEPS
    return None


def in_blocks(xs, block):
    """Time-major arrays cut into whole blocks of `block` steps.

    Returns `(blocks, rest)`: each array's whole blocks as
    `(n_blocks, block, ...)`, and the steps after the last whole block, or
    `None` when the length is a multiple of `block` (a static length).
    """
    n_steps = xs[0].shape[0]
    head = (n_steps // block) * block
    blocks = tuple(
        ops.reshape(x if head == n_steps else x[:head],
                    (head // block, block) + ops.shape(x)[1:])
        for x in xs)
    rest = tuple(x[head:] for x in xs) if head < n_steps else None
    return blocks, rest


def blocks_loop(run_block, init, xs, block, n_out, loop=None, reverse=False,
                **loop_options):
    """A loop over the blocks of `block` steps of time-major arrays.

    `run_block(carry, xs_b) -> (carry, ys_b)` runs the steps of one block
    (in reverse order with `reverse=True`, as the blocks go then):
    `xs_b` are the arrays of `xs` cut to the block's steps, `ys_b` a tuple
    of `n_out` per-step outputs `(steps, ...)`, each step's output shaped
    like the carry (as TensorFlow's `scan` wants it). The whole blocks go
    through `loop` (`scan`, with `loop_options`, or `python_loop`); a
    shorter block after them, if any, runs after the loop (before it with
    `reverse=True`).

    The length of `xs` must be known when traced and hold at least one
    whole block.

    Returns:
        `(carry, ys)`: the carry after the last step, and the `n_out`
        outputs of every step `(time, ...)`. With `n_out=0` the blocks go
        forward through a state-only loop (`final_carry`, which takes no
        `loop` and no `reverse`) and `ys` is `()`.
    """
    n_steps = xs[0].shape[0]
    if n_steps is None or n_steps < block:
        raise ValueError(
            "blocks_loop needs a length known when traced and at least one "
            f"whole block of {block} steps; received {n_steps} steps.")
    if n_out == 0 and (reverse or loop is not None):
        raise ValueError(
            "blocks_loop with n_out=0 runs a forward state-only loop; "
            f"received reverse={reverse}, loop={loop}.")
    blocks, rest = in_blocks(xs, block)
    ys_rest = None
    if reverse and rest is not None:
        init, ys_rest = run_block(init, rest)
    if n_out == 0:
        carry = final_carry(lambda c, b: (run_block(c, b)[0], None), init,
                            blocks)
        ys = ()
    else:
        def outer(carry, b):
            carry, ys_b = run_block(carry[0], b)
            # One flat tuple as both carry and output: TensorFlow's `scan`
            # wants every output shaped like the carry.
            return (carry,) + tuple(ys_b), (carry,) + tuple(ys_b)

        zeros = ops.broadcast_to(ops.expand_dims(ops.zeros_like(init), 0),
                                 (block,) + tuple(ops.shape(init)))
        last, ys = (loop or scan)(outer, (init,) + (zeros,) * n_out, blocks,
                                  reverse=reverse, **loop_options)
        carry = last[0]
        ys = tuple(ops.reshape(y, (-1,) + tuple(ops.shape(y)[2:]))
                   for y in ys[1:])
    if rest is not None:
        if not reverse:
            carry, ys_rest = run_block(carry, rest)
        ys = tuple(ops.concatenate([a, b], 0) for a, b in zip(ys, ys_rest))
    return carry, ys


def unrolled_blocks(step, init, xs, block, reverse=False, **loop_options):
    """`scan(step, init, xs)` as a loop over blocks of `block` unrolled
    steps (`blocks_loop`, whose preconditions hold): the loop's own cost
    per iteration is paid once per block.

    `step(carry, xs_t) -> (carry, y_t)`, with a single tensor as the carry
    and `y_t` shaped like it. `loop_options` go to the `scan` of blocks.
    """
    def run_block(carry, parts):
        carry, ys = python_loop(step, carry, parts, reverse)
        return carry, (ys,)

    carry, (ys,) = blocks_loop(run_block, init, xs, block, n_out=1,
                               reverse=reverse, **loop_options)
    return carry, ys


def final_carry(step, init, xs, unrolled=False):
    """The carry after the last step, storing nothing per step.

    `unrolled=True` takes a Python loop (a static number of steps).
    """
    if unrolled or keras.backend.backend() == "torch":
        carry = init
        for t in range(xs[0].shape[0]):
            carry = step(carry, tuple(x[t] for x in xs))[0]
        return carry

    if keras.backend.backend() == "jax":
        # `lax.scan` with no per-step output: what jax2onnx can export
        # (its `fori_loop` converter rejects arrays closed over by the body).
        carry, _ = ops.scan(lambda c, x_t: (step(c, x_t)[0], None), init,
                            tuple(xs))
        return carry

    def body(t, carry):
        return step(carry, tuple(x[t] for x in xs))[0]

    return ops.fori_loop(0, ops.shape(xs[0])[0], body, init)


def python_loop(step, init, xs, reverse=False):
    """The scan as a plain Python loop (unrolled when traced).

    A step may emit a tuple of tensors; each is stacked apart.
    """
    steps = range(xs[0].shape[0])
    if reverse:
        steps = reversed(steps)
    carry, ys = init, []
    for t in steps:
        carry, y = step(carry, tuple(x[t] for x in xs))
        ys.append(y)
    if reverse:
        ys.reverse()
    if isinstance(ys[0], tuple):
        return carry, tuple(ops.stack(list(y)) for y in zip(*ys))
    return carry, ops.stack(ys)
