"""The `check` self-test reports real differences and passes on parity;
its default grid keeps the coverage it claims."""

import itertools

import keras
import numpy as np
import pytest

from keras_gru_plus import check
from keras_gru_plus import gru as gru_module
from keras_gru_plus import policy


def test_compare_is_small_on_parity():
    out_diff, grad_diff = check.compare({"reset_after": False}, "holes")
    assert out_diff <= check.TOLERANCE and grad_diff <= check.TOLERANCE


def test_compare_detects_a_wrong_layer(monkeypatch):
    """A layer that scales its inputs by 1.01 must be reported."""

    class Skewed(gru_module.GRU):
        def call(self, inputs, initial_state=None, mask=None, training=None):
            return super().call(
                inputs * 1.01, initial_state=initial_state, mask=mask, training=training
            )

    monkeypatch.setattr(check, "GRU", Skewed)
    out_diff, grad_diff = check.compare({}, "none")
    assert out_diff > 1e-3 and grad_diff > 1e-3


def test_main_runs_check(monkeypatch, capsys):
    from keras_gru_plus import __main__

    rows = [({}, "right"), ({"blocks": "long", "go_backwards": True}, "holes")]
    monkeypatch.setattr(check, "configurations", lambda full=False: iter(rows))
    assert __main__.main(["check"]) == 0
    out = capsys.readouterr().out
    assert keras.backend.backend() in out and "0 over tolerance" in out
    assert "threads: OMP_NUM_THREADS=" in out
    # One numbered line per configuration, as it is measured.
    assert "[1/2] mask=right" in out
    assert "[2/2] mask=holes, blocks=long, go_backwards=True" in out


def _values(rows):
    return [check._values(kwargs, mask_kind) for kwargs, mask_kind in rows]


@pytest.mark.parametrize("backend", sorted(policy.POLICIES))
def test_default_grid_has_every_value_and_every_pair(backend):
    """Computed from the grids' definitions: every value of every axis,
    and every pair of values of two axes (but those no grid holds), in the
    default grid of each backend, which is far smaller than the full one."""
    default = _values(check.default_grid(backend))
    assert 5 * len(default) < len(check.full_grid())
    for name, choices in check.AXES.items():
        assert {v[name] for v in default} == set(choices), name
    for a, b in itertools.combinations(check.AXES, 2):
        for va, vb in itertools.product(check.AXES[a], check.AXES[b]):
            if check._partial_excluded({a: va, b: vb}):
                continue
            assert any(v[a] == va and v[b] == vb for v in default), (a, va, b, vb)
    # Nothing where keras.layers.GRU itself fails on any backend.
    assert not any(check._fails_in_keras(v, None) for v in default)


def _paths(rows, backend):
    paths = set()
    for kwargs, mask_kind in rows:
        if not check._fails_in_keras(check._values(kwargs, mask_kind), backend):
            paths |= check.engine_paths(kwargs, mask_kind, backend)
    return paths


@pytest.mark.parametrize("backend", sorted(policy.POLICIES))
def test_default_grid_runs_every_engine_path(backend):
    """Every engine path of the full grid on a backend's policy (runner,
    blocks, kept gates, block loop, masked or not, step groups) is one of
    the default grid's, and the full grid reaches every runner that
    backend's policy can pick, with blocks and without."""
    full = _paths(check.full_grid(), backend)
    assert _paths(check.default_grid(backend), backend) == full
    inference = (
        "step_projection" if policy.POLICIES[backend].project_in_step else "inference"
    )
    runners = {path[1].runner for path in full}
    assert runners == {"unrolled", "bptt", "autodiff", inference}
    blocked = {path[1].runner for path in full if path[1].block is not None}
    assert {"bptt", inference} <= blocked
    for mode in ("predict", "train"):
        assert {path[2] for path in full if path[0] == mode} == {False, True}
    if policy.POLICIES[backend].step_groups:
        assert any(path[3] for path in full)


def test_block_sizes_reach_the_engine():
    """A configuration's `blocks` is in force while its model is traced:
    the plans chosen then have the blocks `engine_paths` predicts."""
    kwargs = {"blocks": "long", "return_sequences": True}
    expected = {path[1] for path in check.engine_paths(kwargs, "right")}
    with policy.recording() as chosen:
        out_diff, grad_diff = check.compare(kwargs, "right")
    assert out_diff <= check.TOLERANCE and grad_diff <= check.TOLERANCE
    assert expected <= set(chosen)
    assert any(plan.block == 4 for plan in chosen if plan.runner == "bptt")


def test_compare_many_matches_compare_one_by_one():
    rows = [({}, "none"), ({"reset_after": False, "return_state": True}, "holes")]
    together = check.compare_many(rows, [1, 2])
    alone = [
        check.compare(kwargs, mask_kind, seed)
        for (kwargs, mask_kind), seed in zip(rows, [1, 2])
    ]
    np.testing.assert_allclose(together, alone, atol=1e-6)
    with pytest.raises(ValueError, match="blocks"):
        check.compare_many([({}, "none"), ({"blocks": "long"}, "none")], [1, 2])


def test_an_error_is_reported_for_its_configuration(monkeypatch, capsys):
    """A configuration that raises is counted and named; the others of its
    group still run."""
    real = check.compare_many

    def compare_many(configurations, seeds):
        if any(kwargs.get("use_bias") is False for kwargs, _ in configurations):
            raise RuntimeError("boom")
        return real(configurations, seeds)

    monkeypatch.setattr(check, "compare_many", compare_many)
    rows = [({}, "none"), ({"use_bias": False}, "none")]
    monkeypatch.setattr(check, "configurations", lambda full=False: iter(rows))
    assert check.run() == 1
    out = capsys.readouterr().out
    assert "mask=none, use_bias=False" in out and "error: RuntimeError: boom" in out
    assert "2 configurations, 1 over tolerance" in out


def test_jax_failure_of_keras_is_real():
    """The skip of `KERAS_FAILURES` on JAX: keras.layers.GRU unrolled
    there outputs the previous output at masked steps despite
    `zero_output_for_mask=True` (remove the entry when Keras fixes it)."""
    if keras.backend.backend() != "jax":
        pytest.skip(
            "a failure of keras.layers.GRU on JAX; this is " + keras.backend.backend()
        )
    x = np.random.default_rng(0).normal(size=(2, 4, 3)).astype("float32")
    mask = np.array([[True, False, True, True], [True, True, False, True]])
    layer = keras.layers.GRU(
        3, return_sequences=True, zero_output_for_mask=True, unroll=True
    )
    out = keras.ops.convert_to_numpy(layer(x, mask=mask))
    assert np.abs(out[~mask]).max() > 0
    values = check._values({"unroll": True, "zero_output_for_mask": True}, "holes")
    assert check._fails_in_keras(values, "jax")


def test_full_precision_turns_tf32_off():
    """`check --full-precision`: float32 matrix products in float32 on a
    GPU (the flags are process-wide; each is put back afterwards)."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        before = jax.config.jax_default_matmul_precision
        try:
            check.use_full_precision()
            assert jax.config.jax_default_matmul_precision == "highest"
        finally:
            jax.config.update("jax_default_matmul_precision", before)
    elif backend == "torch":
        import torch

        before = (
            torch.backends.cuda.matmul.allow_tf32,
            torch.backends.cudnn.allow_tf32,
        )
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        try:
            check.use_full_precision()
            assert not torch.backends.cuda.matmul.allow_tf32
            assert not torch.backends.cudnn.allow_tf32
        finally:
            (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) = (
                before
            )
    else:
        import tensorflow as tf

        before = tf.config.experimental.tensor_float_32_execution_enabled()
        try:
            check.use_full_precision()
            assert not tf.config.experimental.tensor_float_32_execution_enabled()
        finally:
            tf.config.experimental.enable_tensor_float_32_execution(before)


def test_main_passes_the_flags(monkeypatch):
    calls = []

    def run(full_precision=False, full=False, threads=None):
        calls.append((full_precision, full))
        return 0

    monkeypatch.setattr(check, "run", run)
    from keras_gru_plus import __main__

    assert __main__.main(["check", "--full-precision"]) == 0
    assert __main__.main(["check", "--full"]) == 0
    assert __main__.main(["check"]) == 0
    assert calls == [(True, False), (False, True), (False, False)]
