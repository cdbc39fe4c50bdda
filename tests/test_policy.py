"""The engine's policy: one table per backend, one `plan`, every threshold
derived from the table, and the math asking nothing else."""

import ast
import collections
import dataclasses
import os
import re
import subprocess
import sys
import tempfile

import keras
import numpy as np
import pytest

import keras_gru_plus
from keras_gru_plus import policy
from keras_gru_plus import scan
from keras_gru_plus import sequence
from keras_gru_plus import tracing
from tests import processes
from tests.helpers import BACKEND
from tests.helpers import float64

PACKAGE = os.path.dirname(os.path.abspath(keras_gru_plus.__file__))
# The layer's math: everything but the command-line tools and interop.
TOOLS = {"benchmark.py", "check.py", "demo.py", "__main__.py", "interop.py"}


def test_only_the_policy_asks_for_the_backend():
    askers = set()
    for name in sorted(os.listdir(PACKAGE)):
        if not name.endswith(".py") or name in TOOLS:
            continue
        tree = ast.parse(open(os.path.join(PACKAGE, name)).read())
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "backend"
            ):
                askers.add(name)
    assert askers == {"policy.py"}


def test_every_planned_runner_exists():
    assert set(policy.RUNNERS) == set(sequence.RUNNERS)


def test_the_cpu_is_no_gpu_and_a_gpu_entry_would_be_taken(monkeypatch):
    assert policy.on_gpu(BACKEND) is False
    gpu_entry = policy.POLICIES[BACKEND].__class__(block_steps=3)
    monkeypatch.setitem(policy.GPU_POLICIES, BACKEND, gpu_entry)
    assert policy.current() == policy.POLICIES[BACKEND]
    monkeypatch.setattr(policy, "on_gpu", lambda backend: True)
    assert policy.current() == gpu_entry


def test_the_compiled_fields_are_taken_while_the_compiler_traces(monkeypatch):
    entry = policy.POLICIES[BACKEND]
    monkeypatch.setattr(tracing, "compiler_tracing", lambda backend: False)
    assert policy.current() == entry
    monkeypatch.setattr(tracing, "compiler_tracing", lambda backend: True)
    traced = policy.current()
    assert traced == dataclasses.replace(entry, compiled=(), **dict(entry.compiled))
    for field, value in entry.compiled:
        assert getattr(traced, field) == value
    # An override applies on top of the compiled fields.
    with policy.override(keep_gates=True):
        assert policy.current().keep_gates is True


def test_only_pytorch_has_compiled_fields_and_a_probe():
    # JAX and TensorFlow trace every call of a compiled model: their
    # entries are measured traced.
    assert {b for b, p in policy.POLICIES.items() if p.compiled} == {"torch"}
    assert set(tracing.PROBES) == {"torch"}
    assert tracing.compiler_tracing(BACKEND) is False


@pytest.mark.skipif(BACKEND != "torch", reason="torch.compile is PyTorch's compiler")
def test_torch_compile_traces_the_compiled_fields_without_a_graph_break():
    import torch

    def traced_policy(x):
        chosen = policy.plan(50, training=True, return_sequences=True)
        return x + float(chosen.step_inputs) + 2.0 * (chosen.block is None)

    eager = policy.plan(50, training=True, return_sequences=True)
    assert (eager.step_inputs, eager.block) == (False, 25)
    # fullgraph: a graph break inside `plan` would run it eagerly, where
    # the probe answers False.
    compiled = torch.compile(traced_policy, fullgraph=True)
    assert float(compiled(torch.zeros(()))) == 3.0


@pytest.mark.skipif(BACKEND != "torch", reason="the probe is PyTorch's")
def test_the_probe_answers_false_on_a_torch_without_is_compiling(monkeypatch):
    import torch

    monkeypatch.delattr(torch.compiler, "is_compiling")
    assert tracing.compiler_tracing("torch") is False
    assert policy.current() == policy.POLICIES["torch"]


def test_every_backend_has_a_policy():
    assert set(policy.POLICIES) == {"jax", "tensorflow", "torch"}
    assert policy.current() == policy.POLICIES[BACKEND]


@pytest.mark.parametrize(
    "n_steps, size, expected",
    [(None, 3, None), (5, 3, None), (6, 3, 3), (100, 3, 3), (6, None, None)],
)
def test_whole_blocks_needs_two_blocks(n_steps, size, expected):
    assert policy.whole_blocks(n_steps, size) == expected


def test_override_replaces_fields_and_restores_them():
    before = policy.current()
    with policy.override(block_steps=7):
        assert policy.current().block_steps == 7
        with policy.override(block_steps=3, keep_gates=False):
            assert policy.current().block_steps == 3
            assert policy.current().keep_gates is False
        assert policy.current().block_steps == 7
    assert policy.current() == before


def test_override_rejects_an_unknown_field():
    with pytest.raises(TypeError, match="block_step"):
        with policy.override(block_step=3):
            pass


def test_recording_lists_the_plans():
    with policy.recording() as plans:
        first = policy.plan(10, training=False, return_sequences=False)
        second = policy.plan(10, training=True, return_sequences=True)
    policy.plan(10, training=False, return_sequences=True)
    assert plans == [first, second]


@pytest.mark.parametrize("training", [False, True])
def test_unroll_takes_the_python_loop(training):
    chosen = policy.plan(300, training, True, unroll=True)
    assert chosen.runner == "unrolled" and chosen.block is None


def test_training_runners():
    assert policy.plan(10, True, True).runner == "bptt"
    assert policy.plan(10, True, True, recurrent_mask_count=1).runner == "bptt"
    # One recurrent mask per gate, or an activation without a known slope:
    # autodiff.
    assert policy.plan(10, True, True, recurrent_mask_count=3).runner == "autodiff"
    assert policy.plan(10, True, True, known_slopes=False).runner == "autodiff"


def test_inference_runner_follows_the_table():
    for project_in_step in (False, True):
        with policy.override(project_in_step=project_in_step):
            chosen = policy.plan(10, False, True)
        expected = "step_projection" if project_in_step else "inference"
        assert chosen.runner == expected


@pytest.mark.parametrize("short", [None, 4])
def test_blocks_and_gates_derive_from_the_table(short):
    with policy.override(block_steps=10, short_block_steps=short, keep_gates=True):
        # Below two long blocks: short blocks (if any), gates kept.
        mid = policy.plan(19, True, True)
        assert mid.block == (4 if short else None)
        assert mid.keep_gates
        # From two long blocks on: long blocks, gates recomputed.
        long = policy.plan(20, True, True)
        assert long.block == 10 and not long.keep_gates
        # Unknown length: one block, gates recomputed (the indexed loops
        # emit more than the carry over a known length only).
        unknown = policy.plan(None, True, True)
        assert unknown.block is None and not unknown.keep_gates
        with policy.override(project_in_step=False):
            assert policy.plan(20, False, True).block == 10


@pytest.mark.parametrize("short", [None, 4, 2])
def test_layer_normalized_training_takes_the_shorter_norm_blocks(short):
    with policy.override(
        block_steps=10, short_block_steps=short, norm_block_steps=3, keep_gates=True
    ):
        # Shorter than the short blocks (or than one block): norm blocks,
        # gates kept below long blocks.
        mid = policy.plan(19, True, True, layer_norm=True)
        assert mid.block == (2 if short == 2 else 3) and mid.keep_gates
        assert policy.plan(19, True, True).block == short
        # The normalized gradients kept with the gates, where the policy
        # keeps them; never without layer normalization.
        for keep_deltas in (True, False):
            with policy.override(keep_norm_deltas=keep_deltas):
                chosen = policy.plan(19, True, True, layer_norm=True)
                assert chosen.keep_deltas is keep_deltas
                assert policy.plan(19, True, True).keep_deltas is False
        # Long sequences: norm blocks, the gates recomputed as in long
        # blocks.
        long = policy.plan(40, True, True, layer_norm=True)
        assert long.block == 3 and not long.keep_gates and not long.keep_deltas
        # Too short for two norm blocks, inference, an unknown length,
        # autodiff: as without layer normalization (but for the kept
        # normalized gradients).
        short_plan = policy.plan(5, True, True, layer_norm=True)
        assert short_plan.block == policy.plan(5, True, True).block
        for args in [(19, False, True), (None, True, True)]:
            assert policy.plan(*args, layer_norm=True) == policy.plan(*args)
        autodiff = policy.plan(19, True, True, recurrent_mask_count=3, layer_norm=True)
        assert autodiff.runner == "autodiff"


def test_short_blocks_loop_in_python_where_the_table_says():
    with policy.override(block_steps=10, short_block_steps=4):
        for python_short in (False, True):
            with policy.override(python_short_blocks=python_short):
                short = policy.plan(8, True, True)
                long = policy.plan(20, True, True)
            assert short.block_loop == ("python" if python_short else "scan")
            assert long.block_loop == "scan"


def test_step_projection_blocks_and_parallel_steps():
    with policy.override(
        project_in_step=True,
        sequence_block_steps=5,
        parallel_steps=4,
        parallel_blocks=2,
    ):
        assert policy.plan(10, False, True) == policy.Plan(
            "step_projection",
            block=5,
            split_gates=policy.current().split_gates,
            parallel=2,
        )
        assert policy.plan(9, False, True).parallel == 4
        assert policy.plan(9, False, True).block is None
        state_only = policy.plan(100, False, False)
        assert state_only.block is None and state_only.parallel == 1


def _running_sum(carry, parts):
    """A block of `blocks_loop`: the running sum over steps, and the
    block's total."""
    (x_b,) = parts
    carry = keras.ops.convert_to_tensor(carry)
    outs = []
    for t in range(x_b.shape[0]):
        carry = carry + keras.ops.convert_to_tensor(x_b[t])
        outs.append(carry)
    return carry, (keras.ops.stack(outs),), (keras.ops.sum(x_b, 0),)


@pytest.mark.parametrize("n_steps", [9, 10])
def test_a_python_loop_of_blocks_keeps_its_outputs_per_block(n_steps):
    x = np.arange(n_steps * 2, dtype="float32").reshape(n_steps, 2)
    carry, (ys,), (total,) = scan.blocks_loop(
        _running_sum,
        np.zeros(2, "float32"),
        (x,),
        3,
        step_like=(x[0],),
        total_like=(x[0],),
        loop=scan.python_loop,
    )
    # Blocks of 3 steps, the last one shorter where 3 does not divide.
    assert isinstance(ys, scan.Blocks)
    assert [p.shape[0] for p in ys] == [3, 3, 3] + ([1] if n_steps == 10 else [])
    np.testing.assert_allclose(keras.ops.convert_to_numpy(scan.joined(ys)), x.cumsum(0))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(carry), x.sum(0))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(total), x.sum(0))
    # Taken back, cut the same way, the blocks in reverse order (each
    # block's own steps in order, as `run_block` takes them).
    expected, running = np.zeros_like(x), np.zeros(2, "float32")
    sums = x.cumsum(0)
    for start in reversed(range(0, n_steps, 3)):
        for t in range(start, min(start + 3, n_steps)):
            running = running + sums[t]
            expected[t] = running
    _, (back,), _ = scan.blocks_loop(
        _running_sum,
        np.zeros(2, "float32"),
        (ys,),
        3,
        step_like=(x[0],),
        loop=scan.python_loop,
        reverse=True,
    )
    np.testing.assert_allclose(keras.ops.convert_to_numpy(scan.joined(back)), expected)


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_steps_are_stacked_along_a_new_first_axis(dtype):
    # `scan.stacked` concatenates views where `ops.stack` would stack: the
    # same array (against NumPy's stack), whatever the rank and dtype.
    rng = np.random.default_rng(0)
    arrays = [rng.normal(size=(3, 2, 4)).astype(dtype) for _ in range(5)]
    with float64():
        steps = scan.Steps(keras.ops.convert_to_tensor(a) for a in arrays)
        out = scan.joined(steps)
        one = scan.stacked([keras.ops.convert_to_tensor(arrays[0][0, 0])])
        assert keras.backend.standardize_dtype(out.dtype) == dtype
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(out), np.stack(arrays))
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(one), arrays[0][:1, 0])


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
@pytest.mark.parametrize("layout", ["time-major", "transposed view"])
def test_copied_steps_are_exact_copies(dtype, layout):
    # `scan.copied_steps` copies each step through a matmul by one: every
    # value, infinities and NaN included, comes back bit for bit (against
    # NumPy's slices), from a contiguous array and from a transposed view
    # (made contiguous first), with any trailing shape.
    rng = np.random.default_rng(0)
    for trailing in [(3, 4), (3, 1), (2, 3, 2)]:
        a = rng.normal(size=(5,) + trailing).astype(dtype)
        a[1, 0, 0] = np.inf
        a[2, -1, 0] = -np.inf
        a[3, 0, -1] = np.nan
        with float64():
            x = keras.ops.convert_to_tensor(a)
            if layout == "transposed view":
                x = keras.ops.swapaxes(
                    keras.ops.convert_to_tensor(np.swapaxes(a, 0, 1).copy()), 0, 1
                )
            steps = scan.copied_steps(x)
            assert isinstance(steps, scan.Steps) and len(steps) == 5
            for t, step in enumerate(steps):
                assert keras.backend.standardize_dtype(step.dtype) == dtype
                got = keras.ops.convert_to_numpy(step)
                assert got.shape == trailing
                np.testing.assert_array_equal(got, a[t])


# A masked, sequence-returning model trained once with `jit_compile=True`
# (PyTorch: `torch.compile`, Inductor's C++ kernels logged by
# `TORCH_LOGS=output_code`).
_COMPILED_CHILD = r"""
import sys
import numpy as np
import keras
import keras_gru_plus

steps = int(sys.argv[1])
model = keras.Sequential(
    [
        keras.Input((steps, 2)),
        keras.layers.Masking(0.0),
        keras_gru_plus.GRU(3, return_sequences=True),
        keras.layers.Dense(1),
    ]
)
model.compile("sgd", "mse", jit_compile=True)
x = np.random.default_rng(0).normal(size=(4, steps, 2)).astype("float32")
x[::2, -1] = 0.0
model.train_on_batch(x, np.zeros((4, steps, 1), "float32"))
"""


@pytest.mark.slow
@pytest.mark.skipif(
    BACKEND != "torch",
    reason="torch.compile's kernels: the PyTorch suite runs this",
)
def test_compiled_masked_steps_share_their_kernels():
    # Inductor bakes the offset of a step's slice into the kernel reading it;
    # the steps of `step_inputs` read their own arrays (the step mask and
    # the gradient of every step's output through `scan.copied_steps`), so
    # no kernel is compiled once per step. Inductor numbers the variants of
    # one fused kernel `cpp_fused_<ops>_<n>`: at 12 steps, before the
    # copies, two kernels had 11 variants each; with them, at most 5 (some
    # steps still write into the concatenation of the steps' outputs).
    steps = 12
    with tempfile.TemporaryDirectory() as cache:
        # On the CPUs (`processes.environment`: a GPU's kernels are
        # Triton's, not C++), with an empty Inductor cache.
        env = processes.environment(
            KERAS_BACKEND="torch",
            TORCH_LOGS="output_code",
            TORCHINDUCTOR_CACHE_DIR=cache,
        )
        done = subprocess.run(
            [sys.executable, "-c", _COMPILED_CHILD, str(steps)],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
    assert done.returncode == 0, done.stderr[-3000:]
    names = set(re.findall(r"cpp_fused_\w+", done.stdout + done.stderr))
    variants = collections.Counter(re.sub(r"_\d+$", "", name) for name in names)
    assert names and max(variants.values()) <= steps // 2, variants.most_common(3)


def test_a_python_loop_of_blocks_refuses_blocks_cut_otherwise():
    x = np.ones((6, 2), "float32")
    cut = scan.Blocks((x[:2], x[2:4], x[4:]))
    with pytest.raises(ValueError, match=r"Blocks of \[2, 2, 2\] steps; expected"):
        scan.blocks_loop(
            _running_sum,
            np.zeros(2, "float32"),
            (cut,),
            3,
            step_like=(x[0],),
            loop=scan.python_loop,
        )


@pytest.mark.skipif(
    BACKEND == "jax",
    reason="jax.grad runs a call's forward and backward passes in one trace, "
    "under one policy",
)
def test_a_backward_pass_under_another_policy_than_its_forward():
    # The forward pass loops over blocks in Python (its outputs per block);
    # the backward pass runs where the policy's loops are not Python ones,
    # as when a policy override ends between the two.
    x = np.random.default_rng(0).normal(size=(2, 7, 3)).astype("float32")
    layer = keras_gru_plus.GRU(4)
    layer.build(x.shape)
    forward_loops, backward_loops = True, False

    def gradient(split):
        inner = dict(block_steps=3, python_loops=forward_loops)
        outer = dict(
            block_steps=3, python_loops=backward_loops if split else forward_loops
        )
        if BACKEND == "tensorflow":
            import tensorflow as tf

            xv = tf.constant(x)
            with policy.override(**outer), tf.GradientTape() as tape:
                tape.watch(xv)
                with policy.override(**inner):
                    loss = tf.reduce_sum(layer(xv, training=True))
            return tape.gradient(loss, xv).numpy()
        import torch

        xv = torch.tensor(x, requires_grad=True)
        with policy.override(**inner):
            loss = layer(xv, training=True).sum()
        with policy.override(**outer):
            loss.backward()
        return xv.grad.numpy()

    np.testing.assert_allclose(gradient(True), gradient(False), atol=1e-6)


def _sum_step(carry, xs):
    """A running sum, emitting it and a wider array: outputs not shaped
    like the carry."""
    carry = carry + xs[0]
    return carry, (carry, keras.ops.concatenate([carry, 2 * carry], -1))


@pytest.mark.parametrize("n_steps", [3, 10, 12])
@pytest.mark.parametrize("reverse", [False, True])
def test_an_indexed_loop_emits_outputs_unlike_its_carry(n_steps, reverse):
    # Over groups of 5 unrolled steps from two groups on (12: a rest of 2
    # steps), else a Python loop.
    x = np.arange(n_steps * 2, dtype="float32").reshape(n_steps, 2)
    like = (x[0], np.zeros(4, "float32"))
    # As tensors: a traced step number cannot index a NumPy array.
    tensors = [keras.ops.convert_to_tensor(a) for a in (x, np.zeros(2, "float32"))]
    with policy.override(indexed_loops=True, step_groups=5, python_loops=False):
        carry, (sums, wide) = scan.scan(
            _sum_step,
            tensors[1],
            (tensors[0],),
            reverse=reverse,
            indexed=True,
            ys_like=like,
        )
    expected = x[::-1].cumsum(0)[::-1] if reverse else x.cumsum(0)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(carry), x.sum(0))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(sums), expected)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(wide), np.concatenate([expected, 2 * expected], -1)
    )


@pytest.mark.skipif(
    BACKEND != "tensorflow",
    reason="a length unknown when traced: a tf.function's None time axis",
)
def test_an_indexed_loop_unlike_its_carry_needs_a_known_length():
    import tensorflow as tf

    @tf.function(input_signature=[tf.TensorSpec((None, 2), "float32")])
    def run(x):
        with policy.override(indexed_loops=True, step_groups=5):
            return scan.scan(
                _sum_step,
                tf.zeros(2),
                (x,),
                indexed=True,
                ys_like=(tf.zeros(2), tf.zeros(4)),
            )[0]

    with pytest.raises(ValueError, match="length known when traced; received None"):
        run(tf.ones((4, 2)))


@pytest.mark.parametrize(
    "fields, expected",
    [
        (dict(), True),
        (dict(short_block_steps=2), False),  # blocks
        (dict(python_loops=False), False),
        (dict(step_inputs=False), False),
    ],
)
def test_steps_project_their_inputs_in_one_block_of_python_loops(fields, expected):
    base = dict(
        short_block_steps=None,
        norm_block_steps=None,
        step_inputs=True,
        python_loops=True,
    )
    with policy.override(**{**base, **fields}):
        chosen = policy.plan(10, training=True, return_sequences=True)
        assert chosen.runner == "bptt"
        assert chosen.step_inputs is expected
        # Only the hand-written backward pass's loops.
        assert not policy.plan(10, training=False, return_sequences=True).step_inputs
