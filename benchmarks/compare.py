"""A/B benchmark: the engine at a git commit against the working tree's.

Usage::

    python benchmarks/compare.py [--base REF] [--configs base masked ...]
        [--repeats N] [--memory]
        [--out benchmarks/results/compare_<backend>.json]

The backend is `KERAS_BACKEND`'s, as for `python -m keras_gru_plus bench`.

What it measures: the package `keras_gru_plus/` at `--base` (default
`HEAD`) is extracted with `git archive` into a temporary directory and
imported as `keras_gru_plus_base` (its imports rewritten), beside the
working tree's `keras_gru_plus`, in one process. For every configuration of
`keras_gru_plus.benchmark.CONFIGS` (all unless `--configs` names some; one
the base engine cannot build, for an argument it predates such as
`layer_norm`, is skipped and named in the report), both layers are built
with `benchmark.build_model` with the same weights, fed the same
`benchmark.make_data` batch, and timed by
`benchmark.time_interleaved` in strict alternation (base, new, base, new,
...; one call per turn, the order swapped for the second half) after a
warm-up, through compiled `predict_on_batch` and `train_on_batch`. It
reports the median of each and the ratio new/base, prints a Markdown table
and writes a JSON report (with `benchmark.machine_info()`). `--memory` adds
the peak memory growth of a training step at 1,000 steps (`--memory-steps`),
base and new each in a fresh subprocess, as
`benchmark.measure_memory` does (resident set on CPU, device memory on a
GPU).

How to read it: a ratio new/base of 1.00 means no change; below 1 the new
engine is faster. A refactor that should not change speed should give
ratios near 1.0 (within 0.95 to 1.05). On a 2-core machine absolute times
move by about ±15% from one run to the next, but the two sides of an
interleaved pair in one process share that drift, so their ratio is much
steadier: the same commit on both sides gave 0.97 to 1.05 with the default
9 repeats (and up to ±12% with 3), on 2 busy cores. A single ratio outside
5% is worth a rerun (more `--repeats`) before it is believed; the geometric
mean over all configurations is the steadiest figure. Compare ratios, not
times across runs. Each side takes the first turn in half of the pairs
(base first, then new first), and its time is the mean of the two medians.

`--new REF` compares against a second extracted commit
(`keras_gru_plus_new`) instead of the working tree, e.g. while the working
tree does not import, or to compare two commits.
"""

import argparse
import atexit
import io
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
PACKAGE = "keras_gru_plus"


def _git(*args):
    return subprocess.run(
        ["git", *args], cwd=ROOT, check=True, capture_output=True
    ).stdout


def extract(ref, name, into):
    """`keras_gru_plus/` at `ref`, as the package `name` under `into`, with
    every `keras_gru_plus` in its files renamed (imports, registered names).
    Returns the full commit id."""
    commit = _git("rev-parse", "--verify", f"{ref}^{{commit}}")
    commit = commit.decode().strip()
    archive = _git("archive", "--format=tar", commit, PACKAGE)
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(
            os.path.join(into, ".extract", name),
            **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}),
        )
    os.rename(os.path.join(into, ".extract", name, PACKAGE), os.path.join(into, name))
    for dirpath, _, files in os.walk(os.path.join(into, name)):
        for file in files:
            if file.endswith(".py"):
                path = os.path.join(dirpath, file)
                with open(path) as f:
                    text = f.read()
                with open(path, "w") as f:
                    f.write(_rename(text, name))
    return commit


def _rename(text, name):
    return re.sub(rf"\b{PACKAGE}\b", name, text)


def _working_tree():
    head = _git("rev-parse", "HEAD").decode().strip()
    dirty = bool(_git("status", "--porcelain", "--", PACKAGE).strip())
    return f"working tree (HEAD {head[:10]}{', modified' if dirty else ''})"


def _memory(harness, package, steps, pythonpath):
    """Peak memory growth of training with `package`'s GRU, in a fresh
    process: `harness.benchmark`'s memory script, importing the GRU class
    from `package`."""
    script, n = re.subn(
        r"^from [\w.]+\.gru import GRU$",
        f"from {package}.gru import GRU",
        harness._MEMORY_SCRIPT,
        flags=re.M,
    )
    if n != 1:
        raise RuntimeError(
            "benchmark._MEMORY_SCRIPT no longer imports GRU "
            "in one line: update benchmarks/compare.py"
        )
    # The parent's allocator settings (those of the harness's package).
    allocator = getattr(harness, "allocator", None)
    env = dict(
        os.environ,
        TF_CPP_MIN_LOG_LEVEL="3",
        **(allocator.environment() if allocator else {}),
        PYTHONPATH=os.pathsep.join(
            pythonpath + [p for p in [os.environ.get("PYTHONPATH")] if p]
        ),
    )
    proc = subprocess.run(
        [sys.executable, "-c", script, "ours", str(steps)],
        capture_output=True,
        text=True,
        timeout=1800,
        env=env,
    )
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-2000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def compare_config(benchmark, base_cls, new_cls, config, repeats):
    """Base and new timings of one configuration in both modes."""
    import keras

    models = []
    for cls in (base_cls, new_cls):
        keras.utils.set_random_seed(0)
        try:
            models.append(benchmark.build_model(cls, config))
        except TypeError as e:
            if cls is new_cls:
                raise
            # An argument the base engine predates (`layer_norm`).
            print(f"    skipped: the base engine cannot build it ({e})")
            return None
    base, new = models
    try:
        new.set_weights(base.get_weights())
        same = True
    except ValueError as e:
        # The weights changed layout: both keep their seeded initialisation.
        print(f"    weights not shared ({e}); both seeded alike")
        same = False
    x, y = benchmark.make_data(config)
    results = {}
    for mode in ("predict", "train"):
        fns = benchmark.batch_calls(models, x, y, mode)
        # Half the pairs with base first, half with new first: the first
        # turn of a pair measured up to 2% slower on 2 cores.
        half = max(1, repeats // 2)
        first = benchmark.time_interleaved(fns, repeats=half, rounds=half)
        second = benchmark.time_interleaved(fns[::-1], repeats=half, rounds=half)
        t_base, t_new = ((a + b) / 2 for a, b in zip(first, second[::-1]))
        results[mode] = {
            "base_ms": 1e3 * t_base,
            "new_ms": 1e3 * t_new,
            "ratio": t_new / t_base,
            "same_weights": same,
        }
    return results


def format_table(report, benchmark):
    """A Markdown table of the report (`benchmark`: the harness module)."""
    lines = [
        benchmark.machine_line(report["machine"]),
        f"base: {report['base']['ref']} ({report['base']['commit'][:10]});"
        f" new: {report['new']['ref']}; median of {report['repeats']}",
        "",
        "| configuration | mode | base ms | new ms | new/base |",
        "|---|---|---|---|---|",
    ]
    ratios = []
    for name, modes in report["configs"].items():
        for mode, e in modes.items():
            ratios.append(e["ratio"])
            flag = "" if abs(e["ratio"] - 1) <= 0.05 else " *"
            lines.append(
                f"| {name} | {mode} | {e['base_ms']:.1f} | "
                f"{e['new_ms']:.1f} | {e['ratio']:.2f}{flag} |"
            )
    if ratios:
        mean = math.exp(sum(map(math.log, ratios)) / len(ratios))
        lines += [
            "",
            f"new/base: geometric mean {mean:.3f}, range "
            f"{min(ratios):.2f} to {max(ratios):.2f}; * outside 5%",
        ]
    if report.get("skipped"):
        lines += [
            "",
            "not built by the base engine: " + ", ".join(report["skipped"]),
        ]
    memory = report.get("memory")
    if memory:
        lines += [
            "",
            f"Training memory at {memory['steps']:,} steps (peak "
            f"{memory['base'].get('kind', 'RSS')} growth): base "
            f"{memory['base']['train_step_mb']:.0f} MB, new "
            f"{memory['new']['train_step_mb']:.0f} MB, ratio "
            f"{memory['ratio']:.2f}",
        ]
    return "\n".join(lines)


def _hint(args):
    if args.new is None:
        print(
            "the working tree's keras_gru_plus failed; to compare two "
            "commits instead: --new REF",
            file=sys.stderr,
        )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--base", default="HEAD", help="git ref of the base engine (default HEAD)"
    )
    parser.add_argument("--new", default=None, help=argparse.SUPPRESS)
    parser.add_argument(
        "--configs",
        nargs="+",
        default=None,
        help="names in benchmark.CONFIGS (default: all)",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=9,
        help="timed calls of each side per mode (default 9)",
    )
    parser.add_argument(
        "--memory", action="store_true", help="also peak memory of a training step"
    )
    parser.add_argument("--memory-steps", type=int, default=1000)
    parser.add_argument(
        "--out",
        default=None,
        help="JSON report (default benchmarks/results/compare_<backend>[_gpu].json)",
    )
    args = parser.parse_args(argv)

    tmp = tempfile.mkdtemp(prefix="compare_")
    atexit.register(shutil.rmtree, tmp, True)
    base_commit = extract(args.base, f"{PACKAGE}_base", tmp)
    # The working tree first, ahead of any installed copy.
    pythonpath = [tmp, ROOT]
    sys.path[:0] = pythonpath
    if args.new is None:
        new_package = PACKAGE
        new_info = {"ref": _working_tree(), "commit": None}
    else:
        new_package = f"{PACKAGE}_new"
        new_info = {"ref": args.new, "commit": extract(args.new, new_package, tmp)}
    import importlib

    try:
        # The harness (build_model, make_data, ...) is the new side's.
        benchmark = importlib.import_module(f"{new_package}.benchmark")
        new_gru = importlib.import_module(f"{new_package}.gru")
    except Exception:
        _hint(args)
        raise
    base_gru = importlib.import_module(f"{PACKAGE}_base.gru")
    # The allocator settings of `python -m keras_gru_plus bench`, for both
    # sides, by the harness's package (`keras_gru_plus/allocator.py`; a
    # harness older than it sets none).
    allocator = getattr(benchmark, "allocator", None)
    print(
        allocator.retain_freed_memory()
        if allocator
        else "memory: the C library's defaults (the harness predates allocator)"
    )
    print(f"base {args.base} ({base_commit[:10]}): {base_gru.__file__}")
    print(f"new  {new_info['ref']}: {new_gru.__file__}")

    names = args.configs or list(benchmark.CONFIGS)
    unknown = [n for n in names if n not in benchmark.CONFIGS]
    if unknown:
        parser.error(
            f"unknown configurations {unknown}; known: {list(benchmark.CONFIGS)}"
        )
    report = {
        "machine": benchmark.machine_info(),
        "base": {"ref": args.base, "commit": base_commit},
        "new": new_info,
        "repeats": args.repeats,
        "configs": {},
    }
    for i, name in enumerate(names, 1):
        print(f"[{i}/{len(names)}] {name} ...", flush=True)
        try:
            results = compare_config(
                benchmark,
                base_gru.GRU,
                new_gru.GRU,
                benchmark.CONFIGS[name],
                args.repeats,
            )
        except Exception:
            _hint(args)
            raise
        if results is None:
            report.setdefault("skipped", []).append(name)
            continue
        report["configs"][name] = results
        for mode, e in results.items():
            print(
                f"    {mode:<8} base {e['base_ms']:8.1f} ms  new "
                f"{e['new_ms']:8.1f} ms  new/base {e['ratio']:.3f}",
                flush=True,
            )
    if args.memory:
        print(
            f"memory of a training step at {args.memory_steps:,} steps ...", flush=True
        )
        memory = {"steps": args.memory_steps}
        for side, package in (("base", f"{PACKAGE}_base"), ("new", new_package)):
            memory[side] = _memory(benchmark, package, args.memory_steps, pythonpath)
            print(f"    {side:<4} {memory[side]['train_step_mb']:.0f} MB", flush=True)
        memory["ratio"] = memory["new"]["train_step_mb"] / max(
            memory["base"]["train_step_mb"], 1e-9
        )
        report["memory"] = memory

    out = args.out
    if out is None:
        name = report["machine"]["backend"]
        if report["machine"]["accelerator"]:
            name += "_gpu"
        out = os.path.join(HERE, "results", f"compare_{name}.json")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w") as f:
        json.dump(report, f, indent=2)
    print()
    print(format_table(report, benchmark))
    print(f"wrote {out}")
    return report


if __name__ == "__main__":
    main()
