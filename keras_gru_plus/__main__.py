"""Command line: `python -m keras_gru_plus [demo|check|bench]`.

Also installed as the `keras-gru-plus` console script.

Subcommands:
    demo    (the default) Trains a GRU on the digits data set shipped with
            scikit-learn, with our layer and with keras.layers.GRU, and
            reports the held-out accuracy of both.
    check   Parity self-test against keras.layers.GRU on the current
            backend (`KERAS_BACKEND`); exit code 1 if any configuration
            differs by more than the tolerance. `--full` runs the full grid.
    bench   Times ours against keras.layers.GRU (and torch.nn.GRU on the
            PyTorch backend); writes a table, a JSON file and a PNG plot.

The arguments are parsed before Keras and its backend are imported (the
package defers its imports when run as a program: see `__init__.py`), so
`--help` and argument errors answer at once. Then, before that import,
the commands set what the backends read when they load, unless the user
set it (`configure_environment`): one thread per operation
(`OMP_NUM_THREADS`), and TensorFlow's C++ logging off
(`TF_CPP_MIN_LOG_LEVEL`); and freed memory stays in the process for the
next call's arrays (`allocator.retain_freed_memory`, unless the user set
glibc's `MALLOC_*` variables). TensorFlow 2.21 prints some start-up
lines (oneDNN, absl's "All log messages before absl::InitializeLog()")
whatever that variable says; those lines are dropped from what the
import writes to stderr, and everything else it writes is kept
(`quiet_startup_logs`).
"""

import argparse
import contextlib
import logging
import os
import re
import sys
import tempfile

# The environment the commands run in unless the user set it: read by the
# backends when they are imported, so set before that.
# - One thread per operation: the layers these commands run are small
#   (the demo's GRU(64) at batch 32, the check's GRU(5)), where a thread
#   pool buys nothing, and on a small or busy machine PyTorch's pool
#   oversubscribes the cores (the demo took 371 s instead of 14 s on 2
#   loaded cores). The benchmark's figures were measured so, too.
# - TensorFlow's C++ logging off ("3"): at "2" TensorFlow 2.21 still logs
#   an ERROR line at the first masked step on CPUs without AVX-512 ("oneDNN
#   supports DT_BOOL only on platforms with AVX-512. Falling back ..."),
#   which changes nothing; errors that matter reach Python as exceptions.
DEFAULT_ENVIRONMENT = {"OMP_NUM_THREADS": "1", "TF_CPP_MIN_LOG_LEVEL": "3"}

# Start-up lines of TensorFlow and absl that `TF_CPP_MIN_LOG_LEVEL` does
# not hide in TensorFlow 2.21: absl's banner, INFO and WARNING lines in
# absl's format (`I0000 00:00:1796190477.692934    4442 port.cc:153] ...`, the seconds
# unformatted before absl is initialised)
# or TensorFlow's older one (`2025-09-17 14:44:05.157831: I ...`), and the
# second line of the CPU-instructions notice.
_STARTUP_LOG = re.compile(
    r"WARNING: All log messages before absl::InitializeLog\(\) is called"
    r"|[IW]\d{4} [\d:.]+ +\d+ \S+:\d+\] "
    r"|\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: [IW] "
    r"|To enable the following instructions: .*rebuild TensorFlow with"
)


def build_parser():
    """The argument parser of the command line (imports nothing heavy)."""
    parser = argparse.ArgumentParser(
        prog="keras-gru-plus",
        description="keras_gru_plus: a GRU for Keras 3 in keras.ops.",
        epilog="OMP_NUM_THREADS is 1 unless you set it; freed memory stays in "
        "the process (glibc) unless you set MALLOC_MMAP_THRESHOLD_ or "
        "MALLOC_TRIM_THRESHOLD_; KERAS_BACKEND picks the backend (jax, "
        "tensorflow, torch).",
    )
    commands = parser.add_subparsers(dest="command")
    demo = commands.add_parser(
        "demo", help="train on real digits data, ours beside keras"
    )
    demo.add_argument("--epochs", type=int, default=20)
    check_parser = commands.add_parser(
        "check", help="parity self-test against keras.layers.GRU"
    )
    check_parser.add_argument(
        "--full",
        action="store_true",
        help="the full grid (132 configurations, minutes) instead of the "
        "default one (every pair of argument values, every engine path)",
    )
    check_parser.add_argument(
        "--full-precision",
        action="store_true",
        help="turn TF32 off for float32 matrix products (GPUs)",
    )
    bench = commands.add_parser("bench", help="time ours against keras.layers.GRU")
    bench.add_argument(
        "--out",
        default="benchmarks/results",
        help="folder for bench_<backend>.json and .png",
    )
    bench.add_argument(
        "--configs", nargs="*", default=None, help="configuration names (default: all)"
    )
    bench.add_argument(
        "--repeats", type=int, default=7, help="timed repeats per layer and mode"
    )
    bench.add_argument(
        "--no-memory", action="store_true", help="skip the training-memory measurement"
    )
    bench.add_argument(
        "--no-streaming",
        action="store_true",
        help="skip the per-step latency of a streamed model",
    )
    return parser


def configure_environment(environ=None):
    """Sets the commands' environment where the user has not.

    Each variable of `DEFAULT_ENVIRONMENT` that `environ` lacks is set;
    a value the user gave stays. The Python loggers of TensorFlow and absl
    are set to errors, unless their level was set already. Call it before
    the backend is imported (`main` does).

    Args:
        environ: the mapping to set (default: `os.environ`).

    Returns:
        The names of the variables this call set.
    """
    environ = os.environ if environ is None else environ
    chosen = []
    for name, value in DEFAULT_ENVIRONMENT.items():
        if name not in environ:
            environ[name] = value
            chosen.append(name)
    tf_logger = logging.getLogger("tensorflow")
    if tf_logger.level == logging.NOTSET:
        # e.g. Keras' "triggered tf.function retracing" warnings: the check
        # builds a fresh model per group of configurations on purpose.
        tf_logger.setLevel(logging.ERROR)
    try:
        from absl import logging as absl_logging
    except ImportError:
        pass
    else:
        if absl_logging.get_verbosity() > absl_logging.ERROR:
            absl_logging.set_verbosity(absl_logging.ERROR)
    return chosen


@contextlib.contextmanager
def quiet_startup_logs():
    """Drops TensorFlow's and absl's start-up lines (`_STARTUP_LOG`) from
    what the block writes to the process's stderr (file descriptor 2,
    where C++ code writes); every other line is written back after it,
    in order, also when the block raises."""
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no file descriptor 2: nothing to filter
        yield
        return
    with tempfile.TemporaryFile() as log:
        os.dup2(log.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            log.seek(0)
            lines = log.read().decode(errors="replace").splitlines(keepends=True)
            kept = "".join(line for line in lines if not _STARTUP_LOG.match(line))
            if kept:
                sys.stderr.write(kept)
                sys.stderr.flush()


def threads(chosen):
    """The thread count in words, for the commands' headings, and on
    PyTorch the number of threads of its pool, set to `OMP_NUM_THREADS`
    when the command chose it (PyTorch may have been imported before).

    Args:
        chosen: what `configure_environment` set.
    """
    import keras

    value = os.environ["OMP_NUM_THREADS"]
    line = f"threads: OMP_NUM_THREADS={value} " + (
        "(the default of these commands; set OMP_NUM_THREADS to change it)"
        if "OMP_NUM_THREADS" in chosen
        else "(yours)"
    )
    if keras.backend.backend() == "torch":
        import torch

        if "OMP_NUM_THREADS" in chosen:
            torch.set_num_threads(int(value))
        line += f", PyTorch {torch.get_num_threads()}"
    return line


def main(argv=None):
    """Runs the command line; returns the exit code.

    Args:
        argv: the arguments (default: `sys.argv[1:]`).
    """
    args = build_parser().parse_args(argv)
    command = args.command or "demo"
    chosen = configure_environment()
    # Before the backend allocates: see `allocator`.
    from keras_gru_plus import allocator

    try:
        memory = allocator.retain_freed_memory()
    except ValueError as error:  # the C library refused: run with its defaults
        memory = f"memory: the C library's defaults ({error})"
    import keras_gru_plus

    with quiet_startup_logs():
        keras_gru_plus._load()
    heading = f"{threads(chosen)}\n{memory}"
    if command == "check":
        from keras_gru_plus import check

        failures = check.run(
            full_precision=args.full_precision, full=args.full, threads=heading
        )
        return 1 if failures else 0
    print(heading, flush=True)
    if command == "demo":
        from keras_gru_plus import demo as demo_module

        demo_module.run(epochs=getattr(args, "epochs", 20))
        return 0
    from keras_gru_plus import benchmark

    benchmark.run(
        out_dir=args.out,
        configs=args.configs,
        repeats=args.repeats,
        memory=not args.no_memory,
        streaming=not args.no_streaming,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
