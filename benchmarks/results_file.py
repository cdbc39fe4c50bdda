"""The report of a benchmark script (`torch_compile.py`, `torch_floor.py`):
one JSON file, `{"args", "machine", "rows"}`, standard library only (the
scripts' parent processes import no Keras)."""

import json
import os

# The checkout: the scripts' `--out` is recorded relative to it, as the
# other reports name their files.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write(args, machine, rows):
    """Writes `{"args": vars(args), "machine", "rows"}` to `args.out`."""
    out = os.path.relpath(os.path.abspath(args.out), ROOT)
    report = {"args": dict(vars(args), out=out), "machine": machine, "rows": rows}
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(report, f, indent=2)
    print(f"\nwritten: {args.out}")


def print_table(first, rows, columns):
    """Prints `rows` (`{name: {key: value}}`) as a Markdown table: the
    first column headed `first` holds the names, then one column per
    `(header, key, digits)` of `columns`."""
    print("\n| " + " | ".join([first] + [c[0] for c in columns]) + " |")
    print("|" + "---|" * (len(columns) + 1))
    for name, row in rows.items():
        cells = [f"{row[key]:.{digits}f}" for _, key, digits in columns]
        print("| " + " | ".join([name] + cells) + " |")
