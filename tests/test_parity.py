"""Parity with `keras.layers.GRU` (same weights) and with the float64 reference.

One covering design of strength 2 over every argument that changes the
numbers: each value of each argument, and each pair of values of any two
arguments, is run at least once, forward and gradients.
"""

import numpy as np
import pytest

from keras_gru_plus import policy
from keras_gru_plus import scan
from tests import reference
from tests.helpers import BACKEND
from tests.helpers import assert_covers_pairs
from tests.helpers import mask_of
from tests.helpers import outputs_and_gradients
from tests.helpers import pairwise_cases
from tests.helpers import probes
from tests.helpers import to_numpy
from tests.helpers import twin_layers

ATOL = 1e-5
RTOL = 1e-5
BATCH, TIME, FEATURES, UNITS = 3, 5, 4, 6

GRID = {
    "reset_after": [True, False],
    "use_bias": [True, False],
    "go_backwards": [False, True],
    "return_sequences": [False, True],
    "return_state": [False, True],
    "unroll": [False, True],
    "mask": ["none", "right", "left", "holes", "full_row"],
    "initial_state": [False, True],
    "stateful": [False, True],
    "time_major": [False, True],
    "zero_output_for_mask": [False, True],
    # elu has no slope the hand-written backward pass knows: autodiff.
    "activations": [
        ("tanh", "sigmoid"),
        ("relu", "hard_sigmoid"),
        ("linear", "tanh"),
        ("elu", "sigmoid"),
    ],
    # No dropout here, so training changes no number; it selects the
    # hand-written backward pass (True) or the inference loops.
    "training": [False, True],
}
CASES = pairwise_cases(GRID, seed=3)
# Pairs do not promise every triple: one case of the autodiff training plan
# (an activation without a known slope, trained, not unrolled).
CASES.append(
    dict(CASES[0], activations=("elu", "sigmoid"), training=True, unroll=False)
)
# The hand-written backward pass's activations (the training grids below).
BPTT_ACTIVATIONS = [a for a in GRID["activations"] if a[0] != "elu"]


def keras_agrees(case, nonzero_start):
    """Whether keras.layers.GRU 3.15.1 gives the documented numbers here.

    Elsewhere the built-in is inconsistent across its own code paths, and
    the float64 reference alone is the expectation:
    - unrolled with a mask, it ignores `zero_output_for_mask` (JAX), or
      with `go_backwards` misplaces the zeros it outputs (TensorFlow);
    - on JAX, its `scan` path outputs the initial state, not zeros, at
      masked steps before the first unmasked one;
    - on PyTorch, mask + `go_backwards` + `unroll` raises AttributeError.
    """
    masked = case["mask"] != "none"
    if not masked:
        return True
    if case["unroll"] and case["zero_output_for_mask"]:
        return False
    if BACKEND == "torch" and case["go_backwards"] and case["unroll"]:
        return False
    if (
        BACKEND == "jax"
        and not case["unroll"]
        and nonzero_start
        and not case["zero_output_for_mask"]
    ):
        return False
    return True


def _kwargs(case):
    activation, recurrent_activation = case["activations"]
    return dict(
        units=UNITS,
        activation=activation,
        recurrent_activation=recurrent_activation,
        use_bias=case["use_bias"],
        reset_after=case["reset_after"],
        go_backwards=case["go_backwards"],
        return_sequences=case["return_sequences"],
        return_state=case["return_state"],
        unroll=case["unroll"],
        stateful=case["stateful"],
        zero_output_for_mask=case["zero_output_for_mask"],
        time_major=case["time_major"],
    )


def _expected(case, weights, x, mask, h0):
    kernel, recurrent_kernel = weights[0], weights[1]
    bias = weights[2] if case["use_bias"] else None
    outputs, last, state = reference.gru_sequence(
        x,
        kernel,
        recurrent_kernel,
        bias,
        reset_after=case["reset_after"],
        activation=case["activations"][0],
        recurrent_activation=case["activations"][1],
        mask=mask,
        initial_state=h0,
        go_backwards=case["go_backwards"],
        zero_output_for_mask=case["zero_output_for_mask"],
    )
    result = [outputs if case["return_sequences"] else last]
    if case["return_state"]:
        result.append(state)
    return result, state


def _batch_major(case, outputs):
    """Our outputs in Keras' batch-major layout."""
    if case["time_major"] and case["return_sequences"]:
        outputs = [np.swapaxes(outputs[0], 0, 1)] + outputs[1:]
    return outputs


def _close(actual, expected, what):
    """Equal to ATOL in float32 terms: the bound scales with the magnitude
    when values grow past 1 (relu candidates can grow gradients to ~1e2)."""
    assert len(actual) == len(expected), what
    for a, e in zip(actual, expected):
        scale = max(1.0, float(np.max(np.abs(e))))
        np.testing.assert_allclose(a, e, atol=ATOL * scale, rtol=RTOL, err_msg=what)


@pytest.mark.parametrize("case", CASES, ids=[f"case{i}" for i in range(len(CASES))])
def test_parity_grid(case):
    _check_case(case)


# The inference cases, run again with the inference loop in blocks of 2
# steps (2 blocks and a 1-step block), which long sequences take on JAX and
# PyTorch. (TensorFlow projects each step inside its inference loops: the
# grid above and the sequence blocks below cover them.)
BLOCK_GRID = dict(GRID, training=[False], unroll=[False])
BLOCK_CASES = pairwise_cases(BLOCK_GRID, seed=5)


@pytest.mark.parametrize(
    "case", BLOCK_CASES, ids=[f"case{i}" for i in range(len(BLOCK_CASES))]
)
@pytest.mark.skipif(
    BACKEND == "tensorflow",
    reason="TensorFlow's inference loop projects each step and takes no "
    "blocks of projected steps (policy: project_in_step)",
)
def test_parity_grid_in_blocks(case, resize, plans):
    resize(block_steps=2)
    _check_case(case)
    assert ("inference", 2) in {(p.runner, p.block) for p in plans}, (
        "the blocked loop did not run"
    )


def _spy(monkeypatch, module, name, record):
    """Wraps `module.name` to append `record(*args, **kwargs)` to the
    returned list at every call."""
    calls = []
    function = getattr(module, name)

    def spy(*args, **kwargs):
        calls.append(record(*args, **kwargs))
        return function(*args, **kwargs)

    monkeypatch.setattr(module, name, spy)
    return calls


# The cases that take TensorFlow's inference loop with `return_sequences`,
# run again with that loop in blocks of 2 steps (2 blocks and a 1-step
# block), which sequences of at least two such blocks take.
SEQUENCE_BLOCK_GRID = dict(
    GRID, training=[False], return_sequences=[True], unroll=[False]
)
SEQUENCE_BLOCK_CASES = pairwise_cases(SEQUENCE_BLOCK_GRID, seed=6)


@pytest.mark.parametrize(
    "case",
    SEQUENCE_BLOCK_CASES,
    ids=[f"case{i}" for i in range(len(SEQUENCE_BLOCK_CASES))],
)
@pytest.mark.skipif(
    BACKEND != "tensorflow",
    reason="only TensorFlow's inference loop with return_sequences goes in "
    "blocks of steps (policy: sequence_block_steps)",
)
def test_parity_grid_sequence_blocks(case, monkeypatch, resize, plans):
    resize(sequence_block_steps=2)
    # The block size of every call of the blocked loop.
    calls = _spy(monkeypatch, scan, "blocks_loop", lambda *args, **kwargs: args[3])
    _check_case(case)
    assert {(p.runner, p.block) for p in plans} == {("step_projection", 2)}
    assert calls and set(calls) == {2}, "the blocked loop did not run"


# The training cases (the hand-written backward pass), run again with
# TensorFlow's loops over groups of 2 unrolled steps (2 groups and a 1-step
# group), which its training loops take over two groups of steps and
# more.
GROUP_GRID = dict(GRID, training=[True], unroll=[False], activations=BPTT_ACTIVATIONS)
GROUP_CASES = pairwise_cases(GROUP_GRID, seed=8)


@pytest.mark.parametrize(
    "case", GROUP_CASES, ids=[f"case{i}" for i in range(len(GROUP_CASES))]
)
@pytest.mark.skipif(
    BACKEND != "tensorflow",
    reason="only TensorFlow's indexed loops go over groups of unrolled "
    "steps (policy: step_groups)",
)
def test_parity_grid_step_groups(case, monkeypatch, resize):
    resize(step_groups=2)
    # The group size and direction of every call.
    calls = _spy(
        monkeypatch,
        scan,
        "blocks_loop",
        lambda *args, **kwargs: (args[3], kwargs.get("reverse", False)),
    )
    _check_case(case)
    # Forward and backward loops, both in groups of 2 steps (the training
    # passes' loop over one block, `None`, holds them).
    assert set(calls) - {(None, False), (None, True)} == {(2, False), (2, True)}, calls


# The plans the grids of this module ran, `(runner, in blocks)`, and how
# many cases ran (see `test_the_grids_ran_every_plan`).
_RAN = []
_CASES_RUN = []


def _check_case(case):
    with policy.recording() as plans:
        _check_case_values(case)
    _RAN.extend((p.runner, p.block is not None) for p in plans)
    _CASES_RUN.append(case)


def _check_case_values(case):
    rng = np.random.default_rng(7)
    # Inputs of scale 0.5 keep the linear-candidate cases' states O(1),
    # where float32 against float64 can be held to 1e-5.
    x = rng.normal(scale=0.5, size=(BATCH, TIME, FEATURES)).astype("float32")
    mask = mask_of(case["mask"], BATCH, TIME, seed=11)
    h0 = (
        rng.normal(size=(BATCH, UNITS)).astype("float32")
        if case["initial_state"]
        else None
    )
    shape = (BATCH, TIME, FEATURES)
    ours, theirs, weights = twin_layers(shape, _kwargs(case))

    our_x = np.swapaxes(x, 0, 1) if case["time_major"] else x
    our_mask = mask.T if (mask is not None and case["time_major"]) else mask
    our_call = {"mask": our_mask, "initial_state": h0, "training": case["training"]}
    their_call = {"mask": mask, "initial_state": h0, "training": case["training"]}
    n_out = 1 + case["return_state"]
    out_shapes = [
        (BATCH, TIME, UNITS) if case["return_sequences"] else (BATCH, UNITS),
        (BATCH, UNITS),
    ][:n_out]
    probe_values = probes(out_shapes)
    if case["time_major"] and case["return_sequences"]:
        our_probes = [np.swapaxes(probe_values[0], 0, 1)] + probe_values[1:]
    else:
        our_probes = probe_values

    # Gradients of the first call (state starts from h0 or zeros).
    our_out, our_dx, our_dw = outputs_and_gradients(ours, our_x, our_call, our_probes)
    expected, state = _expected(case, weights, x, mask, h0)
    _close(_batch_major(case, our_out), expected, "ours vs reference")
    if case["time_major"]:
        our_dx = np.swapaxes(our_dx, 0, 1)
    if keras_agrees(case, nonzero_start=h0 is not None):
        if BACKEND == "torch" and case["stateful"]:
            # keras.layers.GRU's own backward fails here: it assigns its
            # state in place while autograd still needs it (PyTorch
            # "modified by an inplace operation"). Forward only.
            their_out = [to_numpy(o) for o in _as_list(theirs(x, **their_call))]
            theirs.reset_state()
        else:
            their_out, their_dx, their_dw = outputs_and_gradients(
                theirs, x, their_call, probe_values
            )
            _close([our_dx], [their_dx], "d/dinputs vs keras")
            _close(our_dw, their_dw, "d/dweights vs keras")
        _close(_batch_major(case, our_out), their_out, "outputs vs keras")

    if case["stateful"]:
        # Two consecutive plain calls: the second starts from the first's
        # final state.
        ours.reset_state()
        theirs.reset_state()
        first = ours(our_x, **our_call)
        second = ours(our_x, mask=our_mask)
        _close(
            _batch_major(case, [to_numpy(o) for o in _as_list(first)]),
            expected,
            "stateful call 1 vs reference",
        )
        expected2, _ = _expected(case, weights, x, mask, state)
        second = _batch_major(case, [to_numpy(o) for o in _as_list(second)])
        _close(second, expected2, "stateful call 2 vs reference")
        if keras_agrees(case, nonzero_start=True):
            theirs(x, **their_call)
            their2 = [to_numpy(o) for o in _as_list(theirs(x, mask=mask))]
            _close(second, their2, "stateful call 2 vs keras")


def _as_list(outputs):
    return list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]


def test_grid_covers_every_pair():
    """The covering design really covers each pair of argument values."""
    assert_covers_pairs(GRID, CASES)


@pytest.mark.parametrize("reset_after", [True, False])
@pytest.mark.parametrize("implementation", [1, 2])
def test_inference_dropout_changes_nothing(reset_after, implementation):
    """With dropout set, inference equals the built-in without dropout."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(BATCH, TIME, FEATURES)).astype("float32")
    ours, theirs, _ = twin_layers(
        (BATCH, TIME, FEATURES),
        dict(
            units=UNITS,
            reset_after=reset_after,
            dropout=0.4,
            recurrent_dropout=0.3,
            implementation=implementation,
            return_sequences=True,
        ),
        dict(units=UNITS, reset_after=reset_after, return_sequences=True),
    )
    np.testing.assert_allclose(
        to_numpy(ours(x, training=False)),
        to_numpy(theirs(x)),
        atol=ATOL,
        rtol=RTOL,
    )


def test_the_grids_ran_every_plan():
    """Every plan of this backend's policy ran in the grids above: the
    hand-written backward pass in blocks runs in `test_gradients.py`
    (against keras.layers.GRU and finite differences)."""
    tensorflow_only = len(SEQUENCE_BLOCK_CASES) + len(GROUP_CASES)
    total = len(CASES) + (
        tensorflow_only if BACKEND == "tensorflow" else len(BLOCK_CASES)
    )
    if len(_CASES_RUN) < total:
        pytest.skip(
            f"needs every case of this module's grids in this run "
            f"({len(_CASES_RUN)} of {total} ran)"
        )
    expected = {("unrolled", False), ("bptt", False), ("autodiff", False)}
    if policy.current().project_in_step:
        expected |= {("step_projection", False), ("step_projection", True)}
    else:
        expected |= {("inference", False), ("inference", True)}
    assert expected <= set(_RAN), sorted(set(_RAN))
