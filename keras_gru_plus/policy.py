"""The engine's policy: every choice that depends on the backend, in one place.

The math (`recurrence`, `bptt`, `sequence`, `scan`) never asks which backend
it runs on. It asks this module, in two ways:

- `current()`: the backend's entry of `POLICIES`, a table of measured
  choices (block sizes, input layout, which loops run how). Each entry
  carries the measurement that chose it.
- `plan(...)`: from what one call of the layer knows (its length, training
  or not, `return_sequences`, `unroll`, its dropout, whether the activations
  have a hand-written backward pass), the one `Plan` that the sequence
  runs: which runner, blocks of how many steps, keep the forward gates or
  recompute them, how the blocks loop. Every threshold derives from the
  table entry, so changing one number changes every rule built on it.

`override(**fields)` replaces entries of the table for a block of code, and
`recording()` lists the plans chosen inside one; tests use both to run each
plan on small inputs and to check which plan ran.

All measurements below were taken on the project's 2-CPU machine
(`OMP_NUM_THREADS=1`), with batch 32, 64 features and 128 units, medians of
interleaved runs, unless they say otherwise.
"""

import contextlib
import dataclasses
import functools

import keras
from keras import ops

from keras_gru_plus import tracing


@dataclasses.dataclass(frozen=True)
class BackendPolicy:
    """The measured choices of one backend (see `POLICIES`).

    Attributes:
        block_steps: steps per block of the loops over long sequences (from
            two blocks on).
        short_block_steps: steps per block over shorter sequences (from two
            blocks on), or `None` for one block.
        norm_block_steps: with layer normalization, steps per block of the
            training passes (from two blocks on) where that is shorter than
            the blocks above, or `None`.
        split_gates: whether the loops take the input projection as three
            per-gate arrays `(time, batch, units)` instead of one packed
            `(time, batch, 3 * units)`.
        keep_gates: whether the training forward pass keeps its gates for
            the backward pass (below long blocks, over a length known when
            traced) instead of recomputing them. Its steps then emit more
            than the carry, which Keras' TensorFlow `scan` does not take:
            the indexed loops take it (`scan.scan`'s `ys_like`).
        step_inputs: whether the training passes over one block of Python
            loops (no blocks) have each step project its own inputs, and
            keep the states (and the gates, where kept) one array per step
            (`scan.Steps`), from which each reverse step takes its gates
            (`bptt._grads_by_step`): a graph compiler that bakes a slice's
            offset into each step's kernels then compiles one set of
            kernels for every step (the step mask and the gradient of every
            step's output copied one array per step, `scan.copied_steps`).
        keep_norm_deltas: with layer normalization and kept gates, whether
            the reverse steps of the training pass also emit the gradients
            that reach the recurrent products through their normalizations
            (for the weights' gradients) instead of the weights' gradients
            taking the normalizations' backward pass again over each block
            (not with `step_inputs`).
        python_loops: whether every loop is a Python loop (eager backends).
        indexed_loops: whether loops that autodiff does not go through read
            their inputs by step number (`scan.scan`'s `indexed`).
        step_groups: steps per group of unrolled steps in the indexed loops
            (from two groups on), or `None`.
        state_loop: the loop that keeps only the state where the loops are
            not Python loops: `"scan"` (no per-step output) or `"fori"`
            (`ops.fori_loop`).
        project_in_step: whether inference projects each step's inputs
            inside its loop, instead of before it (or per block).
        parallel_steps: how many steps of that loop may run at once (Keras
            passes `scan`'s `unroll` to TensorFlow's `while_loop` as
            `parallel_iterations`; on JAX it would unroll instead).
        sequence_block_steps: with `return_sequences`, steps per block of
            unrolled steps of that loop (from two blocks on), or `None`.
        parallel_blocks: how many of those blocks may run at once.
        python_short_blocks: whether the training passes loop over the
            blocks of shorter sequences in Python (rather than a `scan`).
        step_gate_means: how a loop step's layer normalization (the
            recurrent side) takes the mean over each gate: `"reduce"`
            (`ops.mean` over the values viewed per gate) or `"matmul"` (two
            thin matmuls with constant averaging matrices, operators only:
            see `layer_norm`). The input side, normalized many steps at
            once, always reduces.
        step_compiler: how `step_function` compiles a step model:
            `"jax_jit"`, `"tf_xla"` (`tf.function(jit_compile=True)`) or
            `"torch_trace"` (`torch.jit.trace`).
        compiled: `(field, value)` pairs that replace fields of this entry
            while the backend's graph compiler traces the call
            (`tracing.compiler_tracing`: PyTorch's `torch.compile`, which
            Keras applies with `jit_compile=True`).
        hold_by_gate: whether the inference loops hold masked steps through
            the update gate (`recurrence.held_by_gate`: a select on the
            inputs, off the chain of steps) rather than by a select on the
            state in every step.
    """

    block_steps: int
    short_block_steps: int | None = None
    norm_block_steps: int | None = None
    split_gates: bool = False
    keep_gates: bool = False
    step_inputs: bool = False
    keep_norm_deltas: bool = True
    python_loops: bool = False
    indexed_loops: bool = False
    step_groups: int | None = None
    state_loop: str = "scan"
    project_in_step: bool = False
    parallel_steps: int = 1
    sequence_block_steps: int | None = None
    parallel_blocks: int = 1
    python_short_blocks: bool = False
    step_gate_means: str = "reduce"
    step_compiler: str = "jax_jit"
    compiled: tuple = ()
    hold_by_gate: bool = False


# Every backend, long sequences: blocks of 100 steps from 200 steps on.
# The training passes and the inference loops (but on TensorFlow, which
# projects each step inside its inference loops) take their inputs one
# block at a time (projection, recompute, gradients), so no array of the
# whole sequence wider than the state is held. Measured on 1,000 steps:
# backward in blocks against one block, training steps 25% faster on
# PyTorch and 7% on JAX, the same on TensorFlow; projecting in blocks too,
# training 141 -> 109 ms on TensorFlow, 151 -> 104 ms on JAX, peak memory
# 332 -> 232 MB, 328 -> 146 MB, and 380 -> 183 MB on PyTorch; the
# state-only inference loop on JAX 44 -> 24 ms. On 100 steps one block is
# as fast or faster on JAX and TensorFlow.
LONG_BLOCK_STEPS = 100

POLICIES = {
    "jax": BackendPolicy(
        block_steps=LONG_BLOCK_STEPS,
        # On XLA:CPU a step that slices one packed `(batch, 3 * units)`
        # input runs about 2.5 times slower than one that reads three
        # separate arrays (plain JAX, predict at 100 steps: 22 ms packed,
        # 8.8-9.5 ms per gate).
        split_gates=True,
        # Layer-normalized training in blocks of 25 steps (a `scan` of
        # blocks): the `layer_norm` row's training step (100 steps) 49.5 ->
        # 36.0 ms (plain layer 27.4 ms, unchanged in blocks: 28.8), blocks
        # of 10 40.5 ms, of 50 47.6 ms; at 400 steps 170 -> 152 ms (plain
        # 120 ms, in blocks of 25 129 ms); predict unchanged (10.2 -> 10.0
        # ms). Medians of 15, 15 and 9 calls, interleaved, one process each.
        norm_block_steps=25,
        # Keeping the gates: training steps 1-5% faster across the
        # benchmark's configurations at 100 steps (1.5% slower with
        # `reset_after=False`).
        keep_gates=True,
        # `lax.scan` with no per-step output: what jax2onnx can export (its
        # `fori_loop` converter rejects arrays closed over by the body).
        # The blocks of long sequences are a `scan` of blocks, each a
        # `scan` of steps (`python_loops=False`): XLA compiled unrolled
        # blocks into a far larger program (peak memory of a training step
        # 589 MB against 326 MB), and a nested `scan` of inference steps
        # compiles smaller too.
        state_loop="scan",
        # `jax.jit` of the step model's `stateless_call`: one step of
        # GRU(128) at batch 1 in 25 us, against 171 us through
        # `predict_on_batch`.
        step_compiler="jax_jit",
    ),
    "tensorflow": BackendPolicy(
        block_steps=LONG_BLOCK_STEPS,
        # The training passes loop over blocks of 25 steps in Python (see
        # `python_short_blocks`), so TensorFlow runs one block's vectorized
        # work on the second core while the steps of the next block run.
        # Measured on 100 steps: training steps 2-13% faster across the
        # benchmark's configurations; blocks of 10, 20, 34 and 50 steps
        # gained less.
        short_block_steps=25,
        # Keras' TensorFlow `scan` copies every array of `xs` into a
        # TensorArray; the hand-written backward pass would then be
        # differentiated slice by slice into arrays of the whole sequence.
        # Reading by step number, a training step at 1,000 steps: peak
        # memory 438 -> 342 MB, time 2-4% lower.
        indexed_loops=True,
        # Keeping the forward gates: the steps of the indexed loops emit
        # them (`scan.scan`'s `ys_like`: over groups of unrolled steps).
        # `benchmarks/compare.py` against recomputing them, training,
        # new/old, 15 repeats: base 0.75 and 0.77 (two runs), `user: base`
        # 0.79, `user: Masking` 0.77, masked 0.81, return_sequences 0.78,
        # dropout 0.83, reset_after=False 0.95, layer_norm 0.98 and 1.00;
        # predict unchanged (0.96-1.03).
        keep_gates=True,
        # The layer-normalized training step (100 steps) with the reverse
        # steps' normalized gradients kept against recomputed, three runs
        # of 21-41 interleaved calls: 64.9 / 58.4, 83.5 / 81.7, 48.1 /
        # 47.0 ms (the machine's load varied). On PyTorch keeping them
        # measured 0.83 of the time without, with the input side's kept
        # statistics (0.91 with those alone); on JAX 29.8 / 29.4 ms.
        keep_norm_deltas=False,
        # Keras' TensorFlow `scan` reads and writes its carry and outputs
        # through TensorArrays at every iteration; over groups of unrolled
        # steps that cost is paid once per group. Training steps 3-8%
        # faster in every configuration of the benchmark (base 14.2 -> 13.5
        # ms, masked 15.6 -> 14.4, 1,000 steps 138 -> 127 ms, 512 units 83
        # -> 80 ms); groups of 3 or 10 steps were slower than 5. The cost:
        # a larger graph, the first training call at 100 steps 0.6 -> 1.1 s.
        step_groups=5,
        state_loop="fori",
        # Inference projects each step's inputs inside the loop: its
        # `while_loop` runs the projections of later steps, which do not
        # wait on the state, on the second core alongside the recurrence
        # of the current step. State only 4.6 -> 3.4 ms (`fori_loop`, which
        # runs 10 steps at once); with outputs (`scan`) 5.6 ms projecting
        # before the loop, 6.7 ms inside with 1 step at once, 4.8 ms with
        # 4, no faster with 10 or 32. With `layer_norm=True` the steps
        # normalize their inputs too: predict at 100 steps 21.0 ms with the
        # input side normalized before the loop (per block), 14.6 ms inside
        # it (plain layer 9.6-11.3 ms, same run).
        project_in_step=True,
        parallel_steps=4,
        # With `return_sequences`: a `scan` of blocks of 10 unrolled steps,
        # each block's states stacked once (TensorArrays once per block):
        # predict 15% faster (4.90 -> 4.17 ms, keras 5.19 ms); blocks of 5
        # or 20 steps, or 1 or 4 blocks at once, gained less.
        sequence_block_steps=10,
        parallel_blocks=2,
        # Over the blocks of shorter sequences a Python loop (one block's
        # vectorized work beside the next block's steps); over long
        # sequences a `scan` of blocks, which holds one block at a time.
        # Training step over 1,000 steps, `scan` of blocks of looped steps
        # against a `scan` of unrolled blocks: 8% slower, peak memory 232 ->
        # 134 MB, first call 2.7 -> 0.5 s; a Python loop of the 10 blocks
        # was as fast but peaked at 265 MB.
        python_short_blocks=True,
        # A step of GRU(128) through `tf.function`: 213 us at batch 1 and
        # 283 us at batch 32 with XLA, 320 and 382 us without.
        step_compiler="tf_xla",
        # Masked steps held through the update gate: the select leaves the
        # chain of steps of TensorFlow's `while_loop` (where it measured
        # about 25 us a step) for the inputs, which the loop runs ahead.
        # `benchmarks/compare.py` against the select, 15 repeats each, new/
        # old predict: `masked` 0.69, `user: Masking` 0.72, `user:
        # Embedding(mask_zero)` 0.70 (13.6 -> 9.4 ms) on a quiet machine;
        # 0.83, 0.81 and 0.91, 0.88, 0.89 in two later runs while the same
        # machine slowed (the old engine's `masked` 14.4-16.9 ms);
        # training and `base` unchanged (0.93-1.05).
        # On JAX (XLA fuses the select into the step) and PyTorch (the same
        # number of kernels) it measured 0.99-1.03 and 0.99-1.06: off there.
        hold_by_gate=True,
    ),
    "torch": BackendPolicy(
        block_steps=LONG_BLOCK_STEPS,
        # Blocks spare arrays of the whole sequence, each a fresh
        # allocation of megabytes that eager PyTorch pays for. Measured on
        # 100 steps: training 5-12% faster across the benchmark's
        # configurations (base 41.7 -> 38.6 ms), wide (512 units)
        # unchanged; state-only predict 5% faster.
        short_block_steps=25,
        # Layer-normalized training in blocks of 25 from 200 steps on too:
        # the `layer_norm` row's training step at 200 steps 293.8 -> 197.2
        # ms, at 400 steps 507.6 -> 427.3 and 422.9 -> 389.7 ms (two runs;
        # plain layer 245-259 ms). Medians of 7 and 9 calls, interleaved.
        # (Blocks of 10 at 100 steps: 99.5 -> 99.8 ms. On TensorFlow
        # neither gained: 43.2 -> 43.6 ms, 269 -> 277 ms.)
        norm_block_steps=25,
        # A step's layer normalization by matmul: one normalization of
        # `(32, 384)` 191 -> 67 us, its backward pass 101 -> 56 us; the
        # `layer_norm` row, predict 41.2 -> 32.3 ms, train 147 -> 130 ms
        # (plain 14.8 and 58.4 ms, same run). Over many steps at once
        # (the input side, `(25, 32, 384)`) the thin matmul is slower than
        # reducing: 3.3 ms against 0.33 ms. On JAX and TensorFlow, predict
        # 11.2 -> 18.9 ms and 15.0 -> 18.9 ms: both reduce.
        step_gate_means="matmul",
        # Traced, a step of GRU(128) at batch 1 runs in 128 us against 773
        # us through the eager Keras model (a stack of two GRUs with layer
        # norm: 227 against 2,164 us): the trace drops the Python of
        # Keras' layer calls.
        step_compiler="torch_trace",
        # Keeping the gates: training 5-15% faster at 100 steps.
        keep_gates=True,
        # Eager: a plain loop does what Keras' torch `scan` does, without
        # its per-step tree flattening (a large share of a small step).
        python_loops=True,
        # Under `torch.compile` (Keras' `jit_compile=True`, which compiles
        # the training, test and predict steps) every step of the loops
        # becomes kernels of one graph that Inductor compiles to C++, so
        # the kept gates (more outputs per step) and the short blocks (a
        # second copy of the loops' code) cost compile time and win
        # nothing; sequences of 200 steps or more keep their blocks of 100
        # (with layer normalization too). `benchmarks/torch_compile.py`'s
        # model (50 steps, 32 units, batch 32, SGD), first training call /
        # later steps, one session, one run each: 86.7 s / 5.48 ms with
        # this entry, 81.8 s / 5.49 ms without kept gates, 79.1 s / 3.59 ms
        # in one block, 72.6 s / 3.39 ms with neither (keras.layers.GRU
        # 59.1-63.6 s / 4.56-5.06 ms); autodiff of the loop (runner
        # "autodiff") 66.3 s / 7.98 ms.
        # Inductor bakes the offset of each step's slice of an array into
        # the step's kernels, so the steps of a loop reading slices compile
        # one kernel each (at 10 steps, 34 kernels in all; the built-in's
        # 27). So the training passes' steps project their own inputs and
        # take their gates from arrays of their own (`step_inputs`): 18
        # kernels at 10 steps (no mask, the last state alone).
        # At 50 steps (2026-12-07, a machine about twice as slow as above;
        # the same model, interleaved, one run each): first call 173.5 s
        # without `step_inputs`, 128.1 s with it, the built-in 129.0 s
        # (later steps 13.1, 13.5, 12.3 ms); split by
        # `torch._dynamo.utils.compile_times()`, the forward's compile 77.5
        # -> 47.5 s (built-in 74.5), the backward's 55.5 -> 17.1 s (22.8),
        # Dynamo's tracing 26.1 -> 43.9 s (12.2: the reverse steps now
        # recompute their gates). Keeping the gates one array per step
        # instead: 127.2 s, later steps 17.0 ms (not kept). With the reverse
        # steps' Keras calls cut (`bptt._STEP_VARIANTS`, `scan.stacked`):
        # 108.4-109.8 s against the built-in's 126.7-137.7 s, three runs
        # each, interleaved; tracing 26.5 s in a run of its own. With a
        # mask and `return_sequences`, the steps' copies of the step mask
        # and of the outputs' gradient (`scan.copied_steps`): 38 -> 28
        # kernels at 10 steps; at 50 steps (2026-12-08) 163.5 -> 119.6 and
        # 121.0 s, the built-in 65.4 and 65.8 s (later steps 11.6 against
        # 101.8 ms).
        compiled=(
            ("step_inputs", True),
            ("keep_gates", False),
            ("short_block_steps", None),
            ("norm_block_steps", None),
        ),
    ),
}

# Entries measured on a GPU, by backend: `current()` takes a backend's
# entry here when the backend computes on a GPU. None is measured yet, so
# on a GPU every backend uses its CPU entry above.
GPU_POLICIES = {}

_overrides = []
_recorders = []


def current():
    """The policy of the backend in use (its GPU entry on a GPU, if it has
    one; its `compiled` fields while its graph compiler traces the call),
    with any `override` applied."""
    backend = keras.backend.backend()
    policy = POLICIES[backend]
    if backend in GPU_POLICIES and on_gpu(backend):
        policy = GPU_POLICIES[backend]
    if policy.compiled and tracing.compiler_tracing(backend):
        policy = dataclasses.replace(policy, compiled=(), **dict(policy.compiled))
    for fields in _overrides:
        policy = dataclasses.replace(policy, **fields)
    return policy


@contextlib.contextmanager
def override(**fields):
    """Replaces fields of the current backend's policy inside a block.

    ```python
    with policy.override(block_steps=2, short_block_steps=None):
        layer(x)  # blocks of 2 steps from 4 steps on
    ```
    """
    unknown = set(fields) - {f.name for f in dataclasses.fields(BackendPolicy)}
    if unknown:
        raise TypeError(
            f"policy.override: unknown fields {sorted(unknown)}; expected "
            f"fields of BackendPolicy."
        )
    _overrides.append(fields)
    try:
        yield
    finally:
        _remove(_overrides, fields)


@contextlib.contextmanager
def recording():
    """Yields a list that receives every `Plan` chosen inside the block."""
    plans = []
    _recorders.append(plans)
    try:
        yield plans
    finally:
        _remove(_recorders, plans)


def _remove(stack, item):
    """Removes `item` itself (not an equal one) from `stack`."""
    del stack[next(i for i, x in enumerate(stack) if x is item)]


@functools.cache
def on_gpu(backend):
    """Whether `backend` computes on a GPU (asked once per backend)."""
    if backend == "torch":
        # Keras' PyTorch backend has no `keras.distribution` devices: the
        # device of its tensors (CUDA when there is one, unless
        # `KERAS_TORCH_DEVICE` says otherwise).
        return ops.convert_to_tensor(0.0).device.type == "cuda"
    return any(d.startswith("gpu") for d in keras.distribution.list_devices())


def whole_blocks(n_steps, size):
    """`size` if `n_steps` (known when traced) holds at least two blocks of
    `size` steps, else `None`: the one rule for every kind of block."""
    if size is None or n_steps is None or n_steps < 2 * size:
        return None
    return size


# The runners of `sequence.run_sequence`, by name.
RUNNERS = ("unrolled", "step_projection", "inference", "bptt", "autodiff")


@dataclasses.dataclass(frozen=True)
class Plan:
    """How one call runs its sequence.

    Attributes:
        runner: one of `RUNNERS`:
            - `"unrolled"`: a Python loop (`unroll=True`), autodiff;
            - `"step_projection"`: inference whose steps project their own
              inputs (`BackendPolicy.project_in_step`);
            - `"inference"`: inference, the inputs projected per block;
            - `"bptt"`: training with the hand-written backward pass;
            - `"autodiff"`: training through `keras.ops.scan` and autodiff
              (activations without a known slope, or one recurrent dropout
              mask per gate).
        block: steps per block (`None`: the whole sequence is one block).
            For `"step_projection"`, the blocks of unrolled steps.
        keep_gates: `"bptt"` keeps the forward gates for the backward pass
            (and, with layer normalization, the statistics of the input
            side).
        step_inputs: the training passes' steps project their own inputs
            and take their gates from arrays of their own (the policy's
            `step_inputs`, over one block of Python loops).
        keep_deltas: with layer normalization and `keep_gates`, the reverse
            steps emit the gradients of the recurrent products through
            their normalizations, for the weights' gradients (the policy's
            `keep_norm_deltas`; not with `step_inputs`).
        block_loop: how `"bptt"`'s blocks loop: `"scan"` or `"python"`
            (where the policy has `python_loops`, a `scan` is a Python loop
            too).
        split_gates: the projected inputs go per gate (see `BackendPolicy`).
        parallel: steps (or blocks of steps) of a loop that may run at once.
        hold: how masked steps keep the state: `"select"` (a select on the
            state in every step) or `"gate"` (the inference runners: the
            masked steps' inputs set the update gate to 1,
            `recurrence.held_by_gate`).
    """

    runner: str
    block: int | None = None
    keep_gates: bool = False
    step_inputs: bool = False
    keep_deltas: bool = False
    block_loop: str = "scan"
    split_gates: bool = False
    parallel: int = 1
    hold: str = "select"


def plan(
    n_steps,
    training,
    return_sequences,
    unroll=False,
    recurrent_mask_count=0,
    known_slopes=True,
    gate_can_hold=False,
    layer_norm=False,
):
    """The `Plan` of one call, chosen from the current policy.

    Args:
        n_steps: the number of steps, or `None` when unknown when traced.
        training: whether the call trains (dropout, the backward pass).
        return_sequences: whether every step's output is returned.
        unroll: whether the layer unrolls its loop.
        recurrent_mask_count: recurrent dropout masks in use: 0, 1, or 3
            (one per gate, `implementation=1`).
        known_slopes: whether both activations have a slope the
            hand-written backward pass knows (`bptt.supports`).
        gate_can_hold: whether the call has a mask and its masked steps can
            hold the state through the update gate
            (`recurrence.gate_can_hold`).
        layer_norm: whether the layer normalizes its projections (the
            training passes then take the policy's `norm_block_steps`).

    A mask changes one field of the plan: the inference runners hold masked
    steps through the update gate where the policy's `hold_by_gate` and
    `gate_can_hold` allow (a select-free chain of steps); every other loop
    selects the state per step.
    """
    policy = current()
    long_block = whole_blocks(n_steps, policy.block_steps)
    block = long_block or whole_blocks(n_steps, policy.short_block_steps)
    split = policy.split_gates
    hold = "gate" if policy.hold_by_gate and gate_can_hold else "select"
    if unroll:
        chosen = Plan("unrolled", split_gates=split)
    elif not training and policy.project_in_step:
        if return_sequences:
            groups = whole_blocks(n_steps, policy.sequence_block_steps)
            parallel = policy.parallel_blocks if groups else policy.parallel_steps
        else:
            groups, parallel = None, 1
        chosen = Plan(
            "step_projection",
            block=groups,
            split_gates=split,
            parallel=parallel,
            hold=hold,
        )
    elif not training:
        chosen = Plan("inference", block=block, split_gates=split, hold=hold)
    elif known_slopes and recurrent_mask_count <= 1:
        if layer_norm and policy.norm_block_steps is not None:
            norm_block = whole_blocks(n_steps, policy.norm_block_steps)
            if norm_block is not None and norm_block < (block or n_steps):
                block = norm_block
        short = block is not None and long_block is None
        step_inputs = policy.step_inputs and policy.python_loops and block is None
        keep_gates = policy.keep_gates and long_block is None and n_steps is not None
        chosen = Plan(
            "bptt",
            block=block,
            keep_gates=keep_gates,
            step_inputs=step_inputs,
            keep_deltas=keep_gates
            and layer_norm
            and policy.keep_norm_deltas
            and not step_inputs,
            block_loop=("python" if short and policy.python_short_blocks else "scan"),
            split_gates=split,
        )
    else:
        chosen = Plan("autodiff", split_gates=split)
    for plans in _recorders:
        plans.append(chosen)
    return chosen
