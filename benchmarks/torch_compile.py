"""PyTorch `jit_compile`: first training call and later steps, ours against
the built-in.

Usage::

    KERAS_BACKEND=torch python benchmarks/torch_compile.py [--steps 50]
        [--units 32] [--features 16] [--batch 32] [--calls 60]
        [--repeats 1] [--jit-only] [--return-sequences] [--masked]
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

`--repeats N` runs every configuration N times, the layers alternating
(ours, the built-in, ours, ...), and reports each run and the medians;
`--jit-only` leaves out the runs without `jit_compile`. Two variants of the
model: `--return-sequences` (the GRU returns every state, the `Dense`
reads each, the targets `(batch, steps, 1)`), `--masked` (a `Masking`
layer before the GRU, the last quarter of the steps of every other
sequence padded with zeros).
"""

import argparse
import json
import os
import statistics
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

layer_name, jit, steps, units, features, batch, calls, warmup, seqs, masked = (
    sys.argv[1:]
)
jit, steps, units = jit == "1", int(steps), int(units)
features, batch, calls, warmup = int(features), int(batch), int(calls), int(warmup)
seqs, masked = seqs == "1", masked == "1"
make = keras_gru_plus.GRU if layer_name == "ours" else keras.layers.GRU
layers = [keras.Input((steps, features))]
if masked:
    layers.append(keras.layers.Masking(0.0))
layers += [make(units, return_sequences=seqs), keras.layers.Dense(1)]
model = keras.Sequential(layers)
model.compile(keras.optimizers.SGD(0.01), "mse", jit_compile=jit)
rng = np.random.default_rng(0)
x = rng.normal(size=(batch, steps, features)).astype("float32")
if masked:
    x[::2, steps - steps // 4 :] = 0.0
y = rng.normal(size=(batch, steps, 1) if seqs else (batch, 1)).astype("float32")
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
            + [str(args.batch), str(args.calls), str(WARMUP_CALLS)]
            + ["1" if args.return_sequences else "0", "1" if args.masked else "0"],
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
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--jit-only", action="store_true")
    parser.add_argument("--return-sequences", action="store_true")
    parser.add_argument("--masked", action="store_true")
    parser.add_argument(
        "--out", default=os.path.join(HERE, "results", "torch_compile.json")
    )
    args = parser.parse_args(argv)
    if args.calls <= WARMUP_CALLS:
        parser.error(f"--calls: expected more than {WARMUP_CALLS}, got {args.calls}")
    if args.repeats < 1:
        parser.error(f"--repeats: expected at least 1, got {args.repeats}")
    configs = [(jit, name) for jit in (False, True) for name in ("ours", "builtin")]
    if args.jit_only:
        configs = [c for c in configs if c[0]]
    runs = [c for _ in range(args.repeats) for c in configs]
    rows, machine = [], None
    for i, (jit, layer_name) in enumerate(runs):
        print(f"[{i + 1}/{len(runs)}] {layer_name}, jit_compile={jit} ...", flush=True)
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
    for jit, layer_name in configs:
        mine = [r for r in rows if (r["jit_compile"], r["layer"]) == (jit, layer_name)]
        first = statistics.median(r["first_s"] for r in mine)
        step = statistics.median(r["step_ms"] for r in mine)
        each = ""
        if len(mine) > 1:
            each = " (" + ", ".join(f"{r['first_s']:.1f}" for r in mine) + ")"
        print(f"| {layer_name} | {jit} | {first:.1f}{each} | {step:.1f} |")
    results_file.write(args, machine, rows)


if __name__ == "__main__":
    main()
