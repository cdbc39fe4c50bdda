"""`python -m keras_gru_plus check`: parity self-test on the current backend.

Runs `keras_gru_plus.GRU` and `keras.layers.GRU` with the same weights over
a grid of configurations and prints the largest differences of the outputs
and of the gradients. Gradients are read off one plain SGD step
(`learning_rate=1`, so the update is the gradient) through Keras' own
training loop, which keeps this module free of backend imports; the
gradient with respect to the inputs comes from a zero-initialised
trainable offset added to them.

On a GPU, float32 matrix products may run in TF32 (about 1e-3 relative
error): JAX does so by default, and cuDNN, which `keras.layers.GRU` takes
on PyTorch, as well. The two layers then differ by more than the
tolerance for reasons outside both; `full_precision=True`
(`check --full-precision`) turns TF32 off for the whole process.
"""

import importlib
import itertools

import keras
import numpy as np

from keras_gru_plus.gru import GRU

TOLERANCE = 1e-5
BATCH, TIME, FEATURES, UNITS = 3, 6, 4, 5


class _InputOffset(keras.Layer):
    """Adds a trainable zero tensor to the inputs: its gradient is dL/dx."""

    def build(self, input_shape):
        self.offset = self.add_weight(
            shape=tuple(input_shape), initializer="zeros", name="offset"
        )

    def call(self, inputs):
        return inputs + self.offset


def configurations():
    """A small grid: each flag with each mask kind and both formulas."""
    masks = ("none", "right", "holes")
    flags = (
        {},
        {"go_backwards": True},
        {"return_sequences": True},
        {"unroll": True},
        {"use_bias": False},
        {"activation": "relu", "recurrent_activation": "hard_sigmoid"},
    )
    for reset_after, mask, extra in itertools.product((True, False), masks, flags):
        yield {"reset_after": reset_after, **extra}, mask


def _mask(kind, rng):
    if kind == "none":
        return None
    mask = np.ones((BATCH, TIME), bool)
    if kind == "right":
        mask[1, 3:] = False
        mask[2, 5:] = False
    else:
        mask = rng.random((BATCH, TIME)) > 0.4
        mask[:, 0] = True
    return mask


def _model(gru_cls, kwargs, masked):
    inputs = keras.Input((TIME, FEATURES), batch_size=BATCH)
    mask_input = keras.Input((TIME,), batch_size=BATCH, dtype="bool")
    x = _InputOffset()(inputs)
    gru = gru_cls(UNITS, **kwargs)
    outputs = gru(x, mask=mask_input) if masked else gru(x)
    model = keras.Model([inputs, mask_input], outputs)
    model.compile(
        keras.optimizers.SGD(learning_rate=1.0),
        lambda probe, y: keras.ops.sum(y * probe),
    )
    return model, gru


def compare(kwargs, mask_kind, seed=0):
    """Max |difference| of outputs and gradients for one configuration."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(BATCH, TIME, FEATURES)).astype("float32")
    mask = _mask(mask_kind, rng)
    mask_array = np.ones((BATCH, TIME), bool) if mask is None else mask
    ours, our_gru = _model(GRU, kwargs, mask is not None)
    theirs, their_gru = _model(keras.layers.GRU, kwargs, mask is not None)
    weights = [
        rng.normal(scale=0.3, size=w.shape).astype("float32")
        for w in their_gru.get_weights()
    ]
    our_gru.set_weights(weights)
    their_gru.set_weights(weights)
    out_ours = ours.predict_on_batch([x, mask_array])
    out_theirs = theirs.predict_on_batch([x, mask_array])
    probe = rng.normal(size=out_ours.shape).astype("float32")
    before = [w.copy() for w in ours.get_weights()]
    ours.train_on_batch([x, mask_array], probe)
    theirs.train_on_batch([x, mask_array], probe)
    grads_ours = [b - a for a, b in zip(ours.get_weights(), before)]
    grads_theirs = [b - a for a, b in zip(theirs.get_weights(), before)]
    out_diff = float(np.max(np.abs(out_ours - out_theirs)))
    grad_diff = max(
        float(np.max(np.abs(a - b)) / max(1.0, np.max(np.abs(b))))
        for a, b in zip(grads_ours, grads_theirs)
    )
    return out_diff, grad_diff


def _skip_reason(kwargs, mask_kind):
    """Configurations where keras.layers.GRU itself is known to fail."""
    if (
        keras.backend.backend() == "torch"
        and mask_kind != "none"
        and kwargs.get("go_backwards")
        and kwargs.get("unroll")
    ):
        return "keras.layers.GRU raises here (PyTorch, mask+unroll+backwards)"
    return None


def use_full_precision():
    """Turns TF32 off for the float32 matrix products of this process."""
    backend = keras.backend.backend()
    if backend == "jax":
        importlib.import_module("jax").config.update(
            "jax_default_matmul_precision", "highest"
        )
    elif backend == "torch":
        torch = importlib.import_module("torch")
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    elif backend == "tensorflow":
        importlib.import_module(
            "tensorflow"
        ).config.experimental.enable_tensor_float_32_execution(False)


def run(verbose=True, full_precision=False):
    """Prints the table; returns the number of configurations over tolerance.

    Args:
        verbose: print the table.
        full_precision: turn TF32 off first (`use_full_precision`); only
            GPUs use it.
    """
    if full_precision:
        use_full_precision()
    failures = 0
    rows = list(configurations())
    header = f"{'configuration':<80} {'max|d out|':>11} {'max|d grad|':>12}  ok"
    if verbose:
        from keras_gru_plus import benchmark

        gpu = benchmark.accelerator()
        print(
            f"keras_gru_plus check on {keras.backend.backend()}"
            + (f" ({gpu})" if gpu else "")
            + f", keras {keras.__version__}, tolerance {TOLERANCE:g}"
            + (", TF32 off" if full_precision else "")
        )
        if gpu and not full_precision:
            print(
                "On a GPU float32 products may run in TF32 (about 1e-3 "
                "relative); --full-precision turns it off."
            )
        print(header)
        print("-" * len(header))
    for index, (kwargs, mask_kind) in enumerate(rows, 1):
        name = ", ".join(f"{k}={v}" for k, v in kwargs.items())
        name = f"mask={mask_kind}" + (f", {name}" if name else "")
        reason = _skip_reason(kwargs, mask_kind)
        if reason:
            if verbose:
                print(f"{name:<80} {'':>11} {'':>12}  skipped: {reason}")
            continue
        out_diff, grad_diff = compare(kwargs, mask_kind, seed=index)
        ok = out_diff <= TOLERANCE and grad_diff <= TOLERANCE
        failures += not ok
        if verbose:
            print(
                f"{name:<80} {out_diff:>11.2e} {grad_diff:>12.2e}  "
                f"{'yes' if ok else 'NO'}"
            )
    if verbose:
        print(f"{len(rows)} configurations, {failures} over tolerance")
    return failures
