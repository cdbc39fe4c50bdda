"""Command line: `python -m keras_gru_plus [check]` (also `keras-gru-plus`).

Subcommands:
    check   Parity self-test against keras.layers.GRU on the current
            backend (`KERAS_BACKEND`); exit code 1 if any configuration
            differs by more than the tolerance.
"""

import argparse
import sys


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="keras-gru-plus",
        description="keras_gru_plus: a GRU for Keras 3 in keras.ops.",
    )
    commands = parser.add_subparsers(dest="command")
    commands.add_parser(
        "check", help="parity self-test against keras.layers.GRU"
    )
    args = parser.parse_args(argv)
    command = args.command or "check"
    if command == "check":
        from keras_gru_plus import check

        return 1 if check.run() else 0
    parser.error(f"unknown command {command!r}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
