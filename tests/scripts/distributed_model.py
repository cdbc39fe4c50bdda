"""The model, data and weights shared by the distributed training scripts.

Every script of `tests/test_distributed.py` trains this model, once in one
process on one device (the reference) and once under a backend's
distributed engine, and writes the trained weights to an `.npz` file; the
test compares the two. The same inputs, the same initial weights and the
same global batches in the same order: any difference is the engine's.

The model holds what the engines must carry through our layer: a masked
input (`Masking`, right padding of several lengths), a `Bidirectional`
GRU returning sequences, then a GRU with `reset_after=False` and
`layer_norm=True`, each trained through the hand-written backward pass
(the scripts report the runners the engine's plans chose: `"bptt"`).

Each script runs as `SCRIPT MODE OUT [RANK SIZE PORTS]` (`args`).
"""

import faulthandler
import json
import os
import time

import numpy as np

STEPS, FEATURES, UNITS = 10, 4, 8
SAMPLES = 32
# The global batch: every engine splits it between its two replicas.
GLOBAL_BATCH = 8
LEARNING_RATE = 0.1
EPOCHS = 2
# Regular expressions of the fused kernels that `ModelParallel` shards along
# their `3 * units` axis, matched against a variable's whole path (Keras
# 3.10: anywhere in it).
SHARDED_KERNELS = (".*/gru_cell/kernel", ".*/gru_cell/recurrent_kernel")


def limit_lifetime():
    """Ends this process, printing every thread's stack, after the seconds
    in `SCRIPT_TIME_LIMIT` (`tests/processes.run` sets them): a script
    stops by itself even where its launcher died."""
    limit = os.environ.get("SCRIPT_TIME_LIMIT")
    if limit:
        faulthandler.dump_traceback_later(float(limit), exit=True)


def args(argv):
    """`(mode, out, rank, size, ports)` from `SCRIPT MODE OUT [RANK SIZE
    PORTS]`, `PORTS` one or more comma-separated; one process without."""
    mode, out = argv[1], argv[2]
    if len(argv) == 3:
        return mode, out, 0, 1, []
    return mode, out, int(argv[3]), int(argv[4]), [int(p) for p in argv[5].split(",")]


def data():
    """`(x, y)`: float32 inputs right-padded with zeros to several lengths
    (the mask of `Masking(0.0)`), and regression targets."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(SAMPLES, STEPS, FEATURES)).astype("float32")
    lengths = rng.integers(3, STEPS + 1, size=SAMPLES)
    x[np.arange(STEPS)[None, :] >= lengths[:, None]] = 0.0
    y = rng.normal(size=(SAMPLES, 1)).astype("float32")
    return x, y


def build(keras, gru):
    """The model, with `gru` the layer class (`keras_gru_plus.GRU`), and its
    weights set from a fixed NumPy generator, so that every process starts
    from the same weights whatever its random state."""
    inputs = keras.Input((STEPS, FEATURES))
    masked = keras.layers.Masking(0.0)(inputs)
    sequence = keras.layers.Bidirectional(
        gru(UNITS, return_sequences=True), name="bidirectional"
    )(masked)
    last = gru(UNITS, reset_after=False, layer_norm=True, name="gru_ln")(sequence)
    outputs = keras.layers.Dense(1, name="head")(last)
    model = keras.Model(inputs, outputs)
    rng = np.random.default_rng(1)
    model.set_weights(
        [rng.normal(scale=0.3, size=w.shape).astype(w.dtype) for w in model.weights]
    )
    return model


def global_batches(x, y):
    """The global batches, in training order, of one epoch."""
    for start in range(0, len(x), GLOBAL_BATCH):
        yield x[start : start + GLOBAL_BATCH], y[start : start + GLOBAL_BATCH]


def local_part(array, rank, size):
    """The rows of `array` that process `rank` of `size` feeds: its slice of
    each global batch (the global batch is the processes' slices in rank
    order, as `jax.make_array_from_process_local_data` joins them)."""
    per = GLOBAL_BATCH // size
    parts = [
        array[start + rank * per : start + (rank + 1) * per]
        for start in range(0, len(array), GLOBAL_BATCH)
    ]
    return np.concatenate(parts)


def save(path, weights, initial, plans, started, **facts):
    """Writes the trained `weights` (NumPy arrays, in `model.weights`
    order) to `path` and prints a JSON line: the seconds since `started`,
    `facts`, how far training moved the weight that moved least from the
    `initial` weights (`smallest_move`, its largest change), and the
    runners of the engine's `plans` (`keras_gru_plus.policy.recording`)."""
    weights = [np.asarray(w) for w in weights]
    np.savez(path, *weights)
    facts["smallest_move"] = min(
        float(np.max(np.abs(w - np.asarray(w0)))) for w, w0 in zip(weights, initial)
    )
    facts["runners"] = sorted({plan.runner for plan in plans})
    print(
        json.dumps(
            {"seconds": round(time.perf_counter() - started, 2), **facts},
            sort_keys=True,
        ),
        flush=True,
    )
