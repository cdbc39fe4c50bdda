"""Merges the per-backend benchmark results into one table and one plot.

Usage: `python benchmarks/report.py [--readme README.md]` after
`python -m keras_gru_plus bench` has written `benchmarks/results/bench_<backend>.json`
for each backend (`nox -s bench` does both). Writes
`benchmarks/results/summary.md` and `summary.png`; with `--readme`, replaces
the part of the README between the `bench:start` and `bench:end` markers.
"""

import argparse
import glob
import json
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from keras_gru_plus import benchmark  # noqa: E402

ORDER = {"jax": 0, "tensorflow": 1, "torch": 2}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default=os.path.join(HERE, "results"))
    parser.add_argument("--readme", default=None)
    args = parser.parse_args(argv)
    reports = []
    for path in glob.glob(os.path.join(args.results, "bench_*.json")):
        with open(path) as f:
            reports.append(json.load(f))
    if not reports:
        raise SystemExit(f"no bench_*.json in {args.results}")
    reports.sort(key=lambda r: ORDER.get(r["machine"]["backend"], 9))
    summary = "\n\n".join(benchmark.format_table(r) for r in reports)
    with open(os.path.join(args.results, "summary.md"), "w") as f:
        f.write(summary + "\n")
    benchmark.plot(reports, os.path.join(args.results, "summary.png"))
    print(summary)
    if args.readme:
        with open(args.readme) as f:
            text = f.read()
        block = ("<!-- bench:start -->\n" + summary
                 + "\n\n![ratios](benchmarks/results/summary.png)\n"
                 "<!-- bench:end -->")
        text, count = re.subn(r"<!-- bench:start -->.*?<!-- bench:end -->",
                              lambda _: block, text, flags=re.S)
        if count != 1:
            raise SystemExit("README has no bench:start/bench:end markers")
        with open(args.readme, "w") as f:
            f.write(text)
        print(f"updated {args.readme}")


if __name__ == "__main__":
    main()
