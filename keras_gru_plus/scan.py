"""The engine's loops: `scan`, `final_carry`, `python_loop`, and the one
loop over blocks of steps, `blocks_loop`.

How each loop runs on the backend in use is the policy's
(`policy.current()`): a Python loop on eager backends, TensorFlow's loops
indexed by step and in groups of unrolled steps, which state-only loop.

Keras' TensorFlow `scan` fails when it is given several `xs` whose length
is unknown when traced (its static-length check dereferences `None`), as
in a `tf.function` with a `None` time dimension. There the arrays, which
share their time and batch axes, are packed into one along the last axis
(each flattened after its batch axis) and split again inside the step.
"""

import math

from keras import ops

from keras_gru_plus import policy


def scan(
    step, init, xs, reverse=False, parallel=1, indexed=False, ys_like=None, stack=True
):
    """`keras.ops.scan(step, init, xs, reverse=reverse)` for a tuple `xs`.

    `step(carry, xs_t) -> (carry, y_t)`. On TensorFlow, `y_t` must have the
    structure and shapes of the carry (a tensor, or a tuple of tensors);
    Keras' TensorFlow `scan` requires it.

    How it loops is the policy's (`policy.current()`): a Python loop where
    `python_loops`; otherwise `keras.ops.scan`, whose `unroll` Keras passes
    to TensorFlow's `while_loop` as `parallel_iterations`: `parallel` steps
    may run at once there (the plans give 1 on the other backends).

    `indexed`: for loops that autodiff does not go through (the
    hand-written backward pass). Where the policy has `indexed_loops`, the
    loop goes over step numbers and each step slices its inputs from `xs`,
    instead of Keras' `scan` copying every array of `xs` into a TensorArray
    first; with a single tensor as the carry and a length known when traced,
    over groups of `step_groups` unrolled steps.

    `ys_like`: for an indexed loop whose steps emit a tuple `y_t` not shaped
    like the carry, arrays shaped like it. Where the policy has
    `indexed_loops` such a loop goes over groups of unrolled steps, or is a
    Python loop where there are fewer than two groups (a length known when
    traced).

    `stack`: where the policy has `python_loops`, `False` leaves each
    per-step output as `Steps` (one array per step) instead of stacking it.
    """
    current = policy.current()
    if current.python_loops:
        return python_loop(step, init, xs, reverse, stack=stack)
    n_steps = xs[0].shape[0]
    if indexed and current.indexed_loops:
        groups = policy.whole_blocks(n_steps, current.step_groups)
        if groups and not isinstance(init, (tuple, list)):
            return unrolled_blocks(
                step,
                init,
                xs,
                groups,
                reverse=reverse,
                ys_like=ys_like,
                indexed=True,
                parallel=parallel,
            )
        if ys_like is not None:
            if n_steps is None:
                raise ValueError(
                    "scan: steps whose outputs are not shaped like the carry "
                    "need a length known when traced; received None."
                )
            return python_loop(step, init, xs, reverse)

        def indexed_step(carry, t):
            return step(carry, tuple(x[t] for x in xs))

        steps = ops.arange(ops.shape(xs[0])[0])
        return ops.scan(indexed_step, init, steps, reverse=reverse, unroll=parallel)
    if n_steps is not None or len(xs) == 1:
        return ops.scan(step, init, tuple(xs), reverse=reverse, unroll=parallel)
    return ops.scan(
        _unpacking(step, xs), init, _pack(xs), reverse=reverse, unroll=parallel
    )


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


class Blocks(tuple):
    """One time-major sequence as the arrays of its blocks, in order: what
    a Python loop over blocks (`blocks_loop`) returns per step output,
    instead of joining the blocks into one array of the whole sequence, and
    takes back as an input cut the same way. An array of the whole
    sequence is a fresh allocation of megabytes, which eager PyTorch pays
    for in page faults; `joined` makes one where it is needed.
    """


class Steps(tuple):
    """One time-major sequence as one array per step, in order: what a
    Python loop returns per step output where it is not to stack them
    (`python_loop`'s `stack=False`).

    Traced by `torch.compile`, a step that reads its slice of a stacked
    array bakes the slice's offset into its compiled kernel: one kernel per
    step, each compiled on its own. A step that reads arrays of its own
    compiles to the kernel of every other step, compiled once (see
    `policy.BackendPolicy.step_inputs`).
    """


def stacked(arrays):
    """`ops.stack(arrays)` (along a new first axis), written as the
    concatenation of each array's view with a leading axis of 1.

    The same array, for the paths of `Steps`, which run traced by
    `torch.compile`: Dynamo traces the Python of every `keras.ops` call, and
    `ops.stack` first flattens its list as a nested structure (Keras'
    `tree`, through PyTorch's pytree), where `ops.concatenate` checks its
    arrays one by one. Counted in Dynamo's `trace_source` log (Keras 3.15.1,
    PyTorch 2.13), 10 arrays: 977 lines stacked, 339 concatenated; 3
    arrays: 402 and 115.
    """
    return ops.concatenate([a[None] for a in arrays], 0)


def copied_steps(a):
    """A time-major array `a` as `Steps`, each step's array a copy made by
    a matmul by `[[1]]` (exact, every value times one, where matmuls keep
    the dtype's full precision: PyTorch's default, and not TF32).

    For the steps that `torch.compile` traces (the plan's `step_inputs`):
    Inductor bakes the offset of a step's slice into the kernel that reads
    it elementwise, so that every step compiles a kernel of its own, but
    hands a matmul its operand as a pointer and strides: one kernel for all
    steps, and a step that reads its copy reads an array of its own.

    The matmul must stay one: Inductor turns a batched matmul whose inner
    size is 1 into a product, and PyTorch folds `(..., n, 1) @ (1, 1)` into
    one matrix product only where the axes before the last are contiguous.
    So `a` is first made contiguous after its time axis (two reshapes, a
    copy where `a` is a transposed view, such as the gradient of the
    layer's batch-major outputs); per step the slice is viewed `(..., 1)`
    by indexing (`ops.reshape` traces as 330 lines of Keras' dispatch a
    call in Dynamo's `trace_source` log, indexing as a few).
    """
    one = ops.ones((1, 1), a.dtype)
    a = ops.reshape(ops.reshape(a, (-1,)), a.shape)
    return Steps((a[t][..., None] @ one)[..., 0] for t in range(a.shape[0]))


def pieces(a):
    """The arrays of `Blocks` in order, or `[a]`."""
    return list(a) if isinstance(a, Blocks) else [a]


def _length(a):
    """The steps of an array or `Blocks` (`None` when unknown)."""
    lengths = [p.shape[0] for p in pieces(a)]
    return None if None in lengths else sum(lengths)


def joined(a):
    """`a` as one array: `Steps` stacked, `Blocks` concatenated along time,
    an array as it is."""
    if isinstance(a, Steps):
        return stacked(a)
    parts = pieces(a)
    return parts[0] if len(parts) == 1 else ops.concatenate(parts, 0)


def in_blocks(xs, block):
    """Time-major arrays cut into whole blocks of `block` steps.

    Returns `(blocks, rest)`: each array's whole blocks as
    `(n_blocks, block, ...)`, and the steps after the last whole block, or
    `None` when the length is a multiple of `block` (a static length).
    `Blocks` are joined first: a Python loop over blocks made them, and a
    policy overridden between a forward and its backward pass can hand
    them to a `scan`.
    """
    xs = tuple(joined(x) for x in xs)
    n_steps = xs[0].shape[0]
    head = (n_steps // block) * block
    blocks = tuple(
        ops.reshape(
            x if head == n_steps else x[:head],
            (head // block, block) + ops.shape(x)[1:],
        )
        for x in xs
    )
    rest = tuple(x[head:] for x in xs) if head < n_steps else None
    return blocks, rest


def blocks_loop(
    run_block,
    init,
    xs,
    block,
    step_like=(),
    total_like=(),
    loop=None,
    reverse=False,
    **loop_options,
):
    """The one loop over blocks of `block` steps of time-major arrays.

    `run_block(carry, xs_b) -> (carry, ys_b, totals_b)` runs the steps of
    one block (in reverse order with `reverse=True`, as the blocks go then):
    `xs_b` are the arrays of `xs` cut to the block's steps, `ys_b` a tuple
    of per-step outputs `(steps, ...)` shaped like the arrays of
    `step_like` after the time axis, `totals_b` a tuple of per-block values
    shaped like `total_like` (summed over the blocks). The whole blocks go
    through `loop` (`scan`, with `loop_options`, or `python_loop`); a
    shorter block after them, if any, runs after the loop (before it with
    `reverse=True`). With `block=None` the whole sequence is one block: one
    call of `run_block`, no loop.

    Without outputs (`step_like` and `total_like` empty) the blocks go
    forward through a state-only loop (`final_carry`, which takes no `loop`
    and no `reverse`).

    The length of `xs` must be known when traced and hold at least one
    whole block (`policy.whole_blocks` gives two).

    Where the blocks loop in Python (`loop` is `python_loop`, or every
    loop of the policy is), `xs` may hold `Blocks`, and `ys` are `Blocks`.

    Returns:
        `(carry, ys, totals)`: the carry after the last step, the per-step
        outputs of every step `(time, ...)` (or their `Blocks`), and the
        totals.
    """
    if block is None:
        carry, ys, totals = run_block(init, xs)
        return carry, tuple(ys), tuple(totals)
    state_only = not step_like and not total_like
    _check_blocks(_length(xs[0]), block, state_only, reverse, loop)
    if not state_only and (loop is python_loop or policy.current().python_loops):
        return _python_blocks(run_block, init, xs, block, reverse)
    blocks, rest = in_blocks(xs, block)
    rest_out = None
    if reverse and rest is not None:
        init, *rest_out = run_block(init, rest)
    if state_only:
        carry = final_carry(lambda c, b: (run_block(c, b)[0], None), init, blocks)
        ys = totals = ()
    else:
        carry, ys, totals = _whole_blocks(
            run_block,
            init,
            blocks,
            step_like,
            total_like,
            loop or scan,
            reverse=reverse,
            **loop_options,
        )
    if rest is not None:
        if not reverse:
            carry, *rest_out = run_block(carry, rest)
        ys_rest, totals_rest = rest_out
        ys = tuple(ops.concatenate([a, b], 0) for a, b in zip(ys, ys_rest))
        totals = tuple(a + b for a, b in zip(totals, totals_rest))
    return carry, ys, totals


def _check_blocks(n_steps, block, state_only, reverse, loop):
    """`blocks_loop`'s preconditions."""
    if n_steps is None or n_steps < block:
        raise ValueError(
            "blocks_loop needs a length known when traced and at least one "
            f"whole block of {block} steps; received {n_steps} steps."
        )
    if state_only and (reverse or loop is not None):
        raise ValueError(
            "blocks_loop without outputs runs a forward state-only loop; "
            f"received reverse={reverse}, loop={loop}."
        )


def _python_blocks(run_block, init, xs, block, reverse):
    """`blocks_loop` as a Python loop over the blocks, each a slice of
    `block` steps (the last one shorter where the length is not a
    multiple) of every array of `xs`, or the block of a `Blocks` input cut
    the same way. The per-step outputs stay `Blocks`: no array of the whole
    sequence is made here.
    """
    n_steps = _length(xs[0])
    starts = range(0, n_steps, block)

    def part(x, i, start):
        if isinstance(x, Blocks):
            if x[i].shape[0] != min(block, n_steps - start):
                raise ValueError(
                    f"Blocks of {[p.shape[0] for p in x]} steps; expected "
                    f"blocks of {block} of {n_steps} steps."
                )
            return x[i]
        return x[start : start + block]

    order = range(len(starts))
    carry, ys, totals = init, [None] * len(starts), None
    for i in reversed(order) if reverse else order:
        carry, ys_b, totals_b = run_block(
            carry, tuple(part(x, i, starts[i]) for x in xs)
        )
        ys[i] = tuple(ys_b)
        totals = (
            tuple(totals_b)
            if totals is None
            else tuple(a + b for a, b in zip(totals, totals_b))
        )
    return carry, tuple(Blocks(y) for y in zip(*ys)), totals


def _whole_blocks(
    run_block, init, blocks, step_like, total_like, loop, reverse=False, **loop_options
):
    """`blocks_loop`'s `loop` over the whole blocks `(n_blocks, block, ...)`:
    `(carry, ys, totals)`."""
    block = blocks[0].shape[1]

    def outer(carry, b):
        carry, ys_b, totals_b = run_block(carry[0], b)
        # One flat tuple as both carry and output: TensorFlow's `scan`
        # wants every output shaped like the carry.
        out = (carry,) + tuple(ys_b) + tuple(totals_b)
        return out, out

    zeros = tuple(
        ops.broadcast_to(
            ops.expand_dims(ops.zeros_like(a), 0), (block,) + tuple(ops.shape(a))
        )
        for a in step_like
    ) + tuple(ops.zeros_like(a) for a in total_like)
    last, outs = loop(outer, (init,) + zeros, blocks, reverse=reverse, **loop_options)
    n_ys = len(step_like)
    # The length stays known when traced (a `-1` with an unknown batch size
    # would leave it unknown on TensorFlow, for the loops after this one).
    steps = blocks[0].shape[0] * block
    ys = tuple(
        ops.reshape(y, (steps,) + tuple(ops.shape(y)[2:])) for y in outs[1 : 1 + n_ys]
    )
    totals = tuple(ops.sum(t, axis=0) for t in outs[1 + n_ys :])
    return last[0], ys, totals


def unrolled_blocks(step, init, xs, block, reverse=False, ys_like=None, **loop_options):
    """`scan(step, init, xs)` as a loop over blocks of `block` unrolled
    steps (`blocks_loop`, whose preconditions hold): the loop's own cost
    per iteration is paid once per block.

    `step(carry, xs_t) -> (carry, y_t)`, with a single tensor as the carry
    and `y_t` shaped like it, or a tuple shaped like the arrays of
    `ys_like`. `loop_options` go to the `scan` of blocks.
    """

    def run_block(carry, parts):
        carry, ys = python_loop(step, carry, parts, reverse)
        return carry, (ys if ys_like is not None else (ys,)), ()

    carry, ys, _ = blocks_loop(
        run_block,
        init,
        xs,
        block,
        step_like=(init,) if ys_like is None else ys_like,
        reverse=reverse,
        **loop_options,
    )
    if ys_like is None:
        return carry, joined(ys[0])
    return carry, tuple(joined(y) for y in ys)


def final_carry(step, init, xs):
    """The carry after the last step, storing nothing per step.

    The loop is the policy's: a Python loop where `python_loops`, else its
    `state_loop`, a `scan` without per-step outputs or
    `keras.ops.fori_loop`.
    """
    current = policy.current()
    if current.python_loops:
        carry = init
        for t in range(xs[0].shape[0]):
            carry = step(carry, tuple(x[t] for x in xs))[0]
        return carry
    if current.state_loop == "scan":
        carry, _ = ops.scan(lambda c, x_t: (step(c, x_t)[0], None), init, tuple(xs))
        return carry

    def body(t, carry):
        return step(carry, tuple(x[t] for x in xs))[0]

    return ops.fori_loop(0, ops.shape(xs[0])[0], body, init)


def python_loop(step, init, xs, reverse=False, stack=True):
    """The scan as a plain Python loop (unrolled when traced).

    A step may emit a tuple of tensors; each is stacked apart, or with
    `stack=False` left as `Steps`.
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
    gather = ops.stack if stack else Steps
    if isinstance(ys[0], tuple):
        return carry, tuple(gather(list(y)) for y in zip(*ys))
    return carry, gather(ys)
