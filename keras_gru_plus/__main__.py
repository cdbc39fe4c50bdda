"""Command line: `python -m keras_gru_plus [demo|check|bench]`.

Also installed as the `keras-gru-plus` console script.

Subcommands:
    demo    (the default) Trains a GRU on the digits data set shipped with
            scikit-learn, with our layer and with keras.layers.GRU, and
            reports the held-out accuracy of both.
    check   Parity self-test against keras.layers.GRU on the current
            backend (`KERAS_BACKEND`); exit code 1 if any configuration
            differs by more than the tolerance.
    bench   Times ours against keras.layers.GRU (and torch.nn.GRU on the
            PyTorch backend); writes a table, a JSON file and a PNG plot.
"""

import argparse
import sys


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="keras-gru-plus",
        description="keras_gru_plus: a GRU for Keras 3 in keras.ops.",
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
    args = parser.parse_args(argv)
    command = args.command or "demo"
    if command == "demo":
        from keras_gru_plus import demo as demo_module

        demo_module.run(epochs=getattr(args, "epochs", 20))
        return 0
    if command == "check":
        from keras_gru_plus import check

        return 1 if check.run(full_precision=args.full_precision) else 0
    if command == "bench":
        from keras_gru_plus import benchmark

        benchmark.run(
            out_dir=args.out,
            configs=args.configs,
            repeats=args.repeats,
            memory=not args.no_memory,
            streaming=not args.no_streaming,
        )
        return 0
    parser.error(f"unknown command {command!r}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
