"""Merges the per-backend benchmark results into one table and one plot.

Usage: `python benchmarks/report.py [--readme README.md]` after
`python -m keras_gru_plus bench` has written `benchmarks/results/bench_<backend>.json`
for each backend (`nox -s bench` does both). Writes
`benchmarks/results/summary.md` and `summary.png`; with `--readme`, replaces
the part of the README between the `bench:start` and `bench:end` markers.
Each backend's table is `benchmark.format_table`'s: a report with the
`layer_norm` row gets its small table too; older reports, without it, stay
as they were.

Reports made on a GPU (`bench_<backend>_gpu.json`, from
`benchmarks/gpu.sh`) go apart, into `summary_gpu.md`, `summary_gpu.png`
and the README's `bench-gpu:start`/`bench-gpu:end` block.
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
    cpu, gpu = benchmark.by_device(reports)
    for suffix, marker, group in (("", "bench", cpu), ("_gpu", "bench-gpu", gpu)):
        if group:
            _write(group, args.results, suffix, marker, args.readme)


def _write(reports, results, suffix, marker, readme):
    """summary<suffix>.md/.png, and the README block `marker`."""
    summary = "\n\n".join(benchmark.format_table(r) for r in reports)
    with open(os.path.join(results, f"summary{suffix}.md"), "w") as f:
        f.write(summary + "\n")
    benchmark.plot(reports, os.path.join(results, f"summary{suffix}.png"))
    print(summary)
    if not readme:
        return
    with open(readme) as f:
        text = f.read()
    block = (
        f"<!-- {marker}:start -->\n"
        + summary
        + f"\n\n![ratios](benchmarks/results/summary{suffix}.png)\n"
        f"<!-- {marker}:end -->"
    )
    text, count = re.subn(
        rf"<!-- {marker}:start -->.*?<!-- {marker}:end -->",
        lambda _: block,
        text,
        flags=re.S,
    )
    if count != 1:
        raise SystemExit(f"README has no {marker}:start/{marker}:end markers")
    with open(readme, "w") as f:
        f.write(text)
    print(f"updated {readme} ({marker})")


if __name__ == "__main__":
    main()
