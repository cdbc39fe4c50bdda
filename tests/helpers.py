"""Shared test helpers: covering designs, twin layers, backend gradients."""

import contextlib
import importlib.util
import itertools
import os
import random
import subprocess
import sys

import keras
import numpy as np
import pytest

import keras_gru_plus

BACKEND = keras.backend.backend()


def to_numpy(x):
    return np.asarray(keras.ops.convert_to_numpy(x))


def as_list(outputs):
    return list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]


def float64():
    """A context in which the backend computes in float64 (JAX turns its
    64-bit types on for the block only)."""
    if BACKEND == "jax":
        import jax

        # `jax.enable_x64` from JAX 0.7 on; before (Python 3.10 gets 0.6),
        # `jax.experimental.enable_x64`.
        enable_x64 = getattr(jax, "enable_x64", None)
        if enable_x64 is None:
            from jax.experimental import enable_x64
        return enable_x64(True)
    return contextlib.nullcontext()


def run_under_backend(backend, script):
    """Runs the Python `script` in a subprocess under the Keras `backend`
    (e.g. to write a file there); skips the test where `backend` is this
    process' own or is not installed in this environment."""
    if backend == BACKEND:
        pytest.skip(f"{backend} is this process' own backend")
    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"{backend} is not installed in this environment")
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3")
    subprocess.run(
        [sys.executable, "-c", script],
        env=env,
        check=True,
        capture_output=True,
        timeout=600,
    )


def pairwise_cases(params, seed=0, candidates=60):
    """A covering design of strength 2 over `params` (name -> values).

    Every value of every argument, and every pair of values of every two
    arguments, appears in at least one case: far fewer cases than the
    Cartesian product. Greedy (AETG-style), deterministic for a seed.
    """
    names = list(params)
    rng = random.Random(seed)
    uncovered = set()
    for (i, a), (j, b) in itertools.combinations(enumerate(names), 2):
        for va in range(len(params[a])):
            for vb in range(len(params[b])):
                uncovered.add((i, va, j, vb))

    def pairs_of(row):
        return {
            (i, row[i], j, row[j])
            for i, j in itertools.combinations(range(len(names)), 2)
        }

    rows = []
    while uncovered:
        # Seed each candidate with one uncovered pair so progress is sure.
        best, best_gain = None, -1
        for _ in range(candidates):
            i, va, j, vb = rng.choice(sorted(uncovered))
            row = [rng.randrange(len(params[n])) for n in names]
            row[i], row[j] = va, vb
            gain = len(pairs_of(row) & uncovered)
            if gain > best_gain:
                best, best_gain = row, gain
        rows.append(best)
        uncovered -= pairs_of(best)
    return [{n: params[n][v] for n, v in zip(names, row)} for row in rows]


def assert_covers_pairs(grid, cases, shrink=100):
    """Every pair of values of every two arguments of `grid` (name ->
    values) appears in some case of `cases`, and the cases number fewer
    than the full product divided by `shrink`."""
    names = list(grid)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            for va in grid[a]:
                for vb in grid[b]:
                    assert any(c[a] == va and c[b] == vb for c in cases), (a, va, b, vb)
    assert len(cases) < np.prod([len(v) for v in grid.values()]) / shrink


def twin_layers(input_shape, our_kwargs, keras_kwargs=None, seed=0):
    """`keras.layers.GRU` and `keras_gru_plus.GRU` sharing random weights.

    `input_shape` is batch-major. Biases are random too (not zeros), so a
    wrong bias layout cannot hide.
    """
    keras_kwargs = dict(our_kwargs if keras_kwargs is None else keras_kwargs)
    keras_kwargs.pop("time_major", None)
    theirs = keras.layers.GRU(**keras_kwargs)
    ours = keras_gru_plus.GRU(**our_kwargs)
    theirs.build(input_shape)
    if our_kwargs.get("time_major"):
        ours.build((input_shape[1], input_shape[0], input_shape[2]))
    else:
        ours.build(input_shape)
    rng = np.random.default_rng(seed)
    weights = [
        rng.normal(scale=0.3, size=w.shape).astype("float32")
        for w in theirs.get_weights()
    ]
    theirs.set_weights(weights)
    ours.set_weights(weights)
    return ours, theirs, weights


def mask_of(kind, batch, time, seed=0):
    """A (batch, time) boolean mask of a named pattern, or None."""
    if kind == "none":
        return None
    rng = np.random.default_rng(seed)
    mask = np.ones((batch, time), bool)
    if kind == "right":
        for b in range(batch):
            mask[b, rng.integers(1, time + 1) :] = False
    elif kind == "left":
        for b in range(batch):
            mask[b, : rng.integers(0, time)] = False
    elif kind == "holes":
        mask = rng.random((batch, time)) > 0.4
        mask[:, 0] = True
    elif kind == "full_row":
        mask = rng.random((batch, time)) > 0.3
        mask[0] = False
    else:
        raise ValueError(kind)
    return mask


def probes(shapes, seed=1):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=s).astype("float32") for s in shapes]


def _loss(outputs, probe_values):
    return sum(
        keras.ops.sum(o * keras.ops.convert_to_tensor(p))
        for o, p in zip(outputs, probe_values)
    )


def outputs_and_gradients(layer, x, call_kwargs, probe_values):
    """Outputs, d(loss)/d(inputs) and d(loss)/d(trainable weights).

    The loss is `sum_i sum(output_i * probe_i)`, so every output entry
    reaches the gradient. Uses each backend's own autodiff.
    """
    if BACKEND == "jax":
        import jax

        trainable = [v.value for v in layer.trainable_variables]
        non_trainable = [v.value for v in layer.non_trainable_variables]

        def f(tv, xv):
            outs, _ = layer.stateless_call(tv, non_trainable, xv, **call_kwargs)
            outs = as_list(outs)
            return _loss(outs, probe_values), outs

        (_, outs), (g_w, g_x) = jax.value_and_grad(f, argnums=(0, 1), has_aux=True)(
            trainable, jax.numpy.asarray(x)
        )
        return [to_numpy(o) for o in outs], to_numpy(g_x), [to_numpy(g) for g in g_w]
    if BACKEND == "tensorflow":
        import tensorflow as tf

        xv = tf.convert_to_tensor(x)
        with tf.GradientTape() as tape:
            tape.watch(xv)
            outs = as_list(layer(xv, **call_kwargs))
            loss = _loss(outs, probe_values)
        grads = tape.gradient(loss, [xv] + list(layer.trainable_variables))
        return (
            [to_numpy(o) for o in outs],
            to_numpy(grads[0]),
            [to_numpy(g) for g in grads[1:]],
        )
    if BACKEND == "torch":
        import torch

        # A CPU tensor: on a GPU this also checks that the layer moves its
        # inputs to its own device, as keras.layers.GRU does.
        xv = torch.tensor(x, requires_grad=True)
        for v in layer.trainable_variables:
            v.value.grad = None
        outs = as_list(layer(xv, **call_kwargs))
        loss = _loss(outs, probe_values)
        loss.backward()
        return (
            [to_numpy(o.detach()) for o in outs],
            to_numpy(xv.grad),
            [to_numpy(v.value.grad) for v in layer.trainable_variables],
        )
    raise NotImplementedError(BACKEND)
