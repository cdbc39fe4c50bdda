"""The `check` self-test reports real differences and passes on parity."""

import keras

from keras_gru_plus import check
from keras_gru_plus import gru as gru_module


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

    monkeypatch.setattr(check, "configurations", lambda: iter([({}, "right")]))
    assert __main__.main(["check"]) == 0
    out = capsys.readouterr().out
    assert keras.backend.backend() in out and "0 over tolerance" in out


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


def test_main_passes_full_precision(monkeypatch):
    calls = []
    monkeypatch.setattr(
        check, "run", lambda full_precision=False: calls.append(full_precision) or 0
    )
    from keras_gru_plus import __main__

    assert __main__.main(["check", "--full-precision"]) == 0
    assert __main__.main(["check"]) == 0
    assert calls == [True, False]
