"""PyTorch `jit_compile`: first training call and later steps, ours against
the built-in.

Usage::

    KERAS_BACKEND=torch python benchmarks/torch_compile.py [--steps 50]
        [--units 32] [--features 16] [--batch 32] [--calls 60]
        [--out results/torch_compile.json, beside this script]

With `jit_compile=True` Keras hands the PyTorch training step to
`torch.compile`, which traces the Python of every layer call (here: every
step of the recurrence and of its backward pass) and compiles the graph
with Inductor (C++ on a CPU). What it measures, for
`Input((steps, features)) -> GRU(units) -> Dense(1)`, SGD, mean squared
error: the wall time of the first `train_on_batch` (tracing and compiling
included) and the median of the later calls (the first `WARMUP_CALLS`,
10, of `--calls` left out), for `keras_gru_plus.GRU` and
`keras.layers.GRU`, with `jit_compile=True` and `False`. Each of the four
runs is a fresh subprocess with an empty Inductor cache
(`TORCHINDUCTOR_CACHE_DIR`), so the first call pays what it pays on a new
machine. The threads:
`OMP_NUM_THREADS` as set, 1 when unset. The report records the machine as
the other benchmarks do (`benchmark.machine_info()`, taken in a run).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import results_file  # noqa: E402

# Calls left out of the median of the later steps.
WARMUP_CALLS = 10

CHILD = r"""
import json, os, sys, time
import numpy as np
import keras
import keras_gru_plus
from keras_gru_plus import benchmark

layer_name, jit, steps, units, features, batch, calls, warmup = sys.argv[1:]
jit, steps, units = jit == "1", int(steps), int(units)
features, batch, calls, warmup = int(features), int(batch), int(calls), int(warmup)
make = keras_gru_plus.GRU if layer_name == "ours" else keras.layers.GRU
model = keras.Sequential(
    [keras.Input((steps, features)), make(units), keras.layers.Dense(1)]
)
model.compile(keras.optimizers.SGD(0.01), "mse", jit_compile=jit)
rng = np.random.default_rng(0)
x = rng.normal(size=(batch, steps, features)).astype("float32")
y = rng.normal(size=(batch, 1)).astype("float32")
start = time.perf_counter()
model.train_on_batch(x, y)
first = time.perf_counter() - start
times = []
for _ in range(calls):
    start = time.perf_counter()
    model.train_on_batch(x, y)
    times.append(time.perf_counter() - start)
step_ms = 1e3 * float(np.median(times[warmup:]))
machine = benchmark.machine_info()
print(json.dumps({"first_s": first, "step_ms": step_ms, "machine": machine}))
"""


def run_one(layer_name, jit, args):
    """One fresh process: `{"first_s": ..., "step_ms": ...}`."""
    env = dict(os.environ, KERAS_BACKEND="torch")
    env.setdefault("OMP_NUM_THREADS", "1")
    with tempfile.TemporaryDirectory() as cache:
        env["TORCHINDUCTOR_CACHE_DIR"] = cache
        result = subprocess.run(
            [sys.executable, "-c", CHILD, layer_name, "1" if jit else "0"]
            + [str(v) for v in (args.steps, args.units, args.features)]
            + [str(args.batch), str(args.calls), str(WARMUP_CALLS)],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
    lines = result.stdout.strip().splitlines()
    if result.returncode != 0 or not lines:
        raise SystemExit(
            f"torch_compile: the run of {layer_name} (jit_compile={jit}) "
            f"failed (exit status {result.returncode}):\n{result.stderr[-3000:]}"
        )
    return json.loads(lines[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(
        description="PyTorch jit_compile: ours against the built-in."
    )
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--units", type=int, default=32)
    parser.add_argument("--features", type=int, default=16)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--calls", type=int, default=60)
    parser.add_argument(
        "--out", default=os.path.join(HERE, "results", "torch_compile.json")
    )
    args = parser.parse_args(argv)
    if args.calls <= WARMUP_CALLS:
        parser.error(f"--calls: expected more than {WARMUP_CALLS}, got {args.calls}")
    rows, machine = [], None
    for jit in (False, True):
        for layer_name in ("ours", "builtin"):
            print(
                f"[{len(rows) + 1}/4] {layer_name}, jit_compile={jit} ...",
                flush=True,
            )
            measured = run_one(layer_name, jit, args)
            machine = measured.pop("machine")
            rows.append({"layer": layer_name, "jit_compile": jit, **measured})
            print(
                f"      first call {rows[-1]['first_s']:.1f} s, "
                f"later steps {rows[-1]['step_ms']:.1f} ms",
                flush=True,
            )
    print("\n| layer | jit_compile | first call (s) | later steps (ms) |")
    print("|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['layer']} | {row['jit_compile']} | {row['first_s']:.1f} "
            f"| {row['step_ms']:.1f} |"
        )
    results_file.write(args, machine, rows)


if __name__ == "__main__":
    main()
