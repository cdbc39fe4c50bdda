"""The main job's tools: demo, benchmark, report (small and fast here)."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from keras_gru_plus import benchmark
from keras_gru_plus import demo

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_demo_trains_both_layers_from_the_same_weights():
    pytest.importorskip(
        "sklearn", reason="the demo's data ships with scikit-learn, not installed here"
    )
    (x_train, y_train), (x_test, y_test) = demo.load_digits()
    assert x_train.shape[1:] == (8, 8) and len(x_test) == 449
    assert 0.0 <= x_train.min() and x_train.max() <= 1.0
    results = demo.run(epochs=2, verbose=0)
    assert set(results) == {"keras_gru_plus", "keras.layers.GRU"}
    ours, theirs = results["keras_gru_plus"], results["keras.layers.GRU"]
    # Same weights, same data order: the first epoch's losses agree.
    np.testing.assert_allclose(
        ours["history"]["loss"][0], theirs["history"]["loss"][0], rtol=1e-3
    )
    assert ours["test_accuracy"] > 0.3  # 10 classes: well above chance


def test_benchmark_writes_table_json_and_plot(tmp_path, monkeypatch):
    pytest.importorskip(
        "matplotlib", reason="the plot needs matplotlib, not installed here"
    )
    monkeypatch.setattr(benchmark, "BASE", dict(batch=4, steps=6, features=3, units=5))
    report = benchmark.run(
        out_dir=str(tmp_path),
        configs=["base", "masked", "bidirectional"],
        repeats=1,
        memory=False,
        progress=lambda m: None,
    )
    backend = keras.backend.backend()
    # (a GPU's report is named apart from the CPU one)
    stem = backend + ("_gpu" if benchmark.accelerator() else "")
    with open(tmp_path / f"bench_{stem}.json") as f:
        saved = json.load(f)
    assert saved["machine"]["backend"] == backend
    assert "OMP_NUM_THREADS" in saved["machine"]
    for name in ("base", "masked", "bidirectional"):
        for mode in ("predict", "train"):
            entry = saved["configs"][name][mode]
            assert entry["ours_ms"] > 0 and entry["keras_ms"] > 0
            assert entry["ratio"] == pytest.approx(entry["ours_ms"] / entry["keras_ms"])
    assert (tmp_path / f"bench_{stem}.png").stat().st_size > 1000
    table = benchmark.format_table(report)
    assert "| base | predict |" in table


def test_report_merges_results_into_the_readme(tmp_path):
    pytest.importorskip(
        "matplotlib", reason="the plot needs matplotlib, not installed here"
    )
    results = tmp_path / "results"
    results.mkdir()
    for backend in ("jax", "torch"):
        report = _report(backend)
        (results / f"bench_{backend}.json").write_text(json.dumps(report))
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- bench:start -->\nold\n<!-- bench:end -->\n")
    _run_report(results, readme)
    text = readme.read_text()
    assert "old" not in text and text.count("| base | predict |") == 2
    assert (results / "summary.png").exists()


def _run_report(results, readme):
    """`benchmarks/report.py` over the JSON reports in `results`."""
    subprocess.run(
        [
            sys.executable,
            os.path.join(ROOT, "benchmarks", "report.py"),
            "--results",
            str(results),
            "--readme",
            str(readme),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )


def _report(backend, accelerator=None):
    entry = {"ours_ms": 1.0, "keras_ms": 2.0, "ratio": 0.5}
    machine = {
        "backend": backend,
        "keras": "3",
        "cpus": 2,
        "OMP_NUM_THREADS": "1",
        "date": "today",
    }
    if accelerator:
        machine["accelerator"] = accelerator
    return {"machine": machine, "configs": {"base": {"predict": entry, "train": entry}}}


def test_report_puts_gpu_results_in_their_own_block(tmp_path):
    pytest.importorskip(
        "matplotlib", reason="the plot needs matplotlib, not installed here"
    )
    results = tmp_path / "results"
    results.mkdir()
    (results / "bench_jax.json").write_text(json.dumps(_report("jax")))
    (results / "bench_jax_gpu.json").write_text(json.dumps(_report("jax", "Some GPU")))
    readme = tmp_path / "README.md"
    readme.write_text(
        "<!-- bench:start -->\nold\n<!-- bench:end -->\n"
        "<!-- bench-gpu:start -->\nold\n<!-- bench-gpu:end -->\n"
    )
    _run_report(results, readme)
    cpu_block, gpu_block = readme.read_text().split("<!-- bench-gpu:start")
    assert "old" not in cpu_block + gpu_block
    assert "jax: keras 3, 2 CPUs" in cpu_block and "GPU" not in cpu_block
    assert "jax on Some GPU: keras 3" in gpu_block
    assert "summary_gpu.png" in gpu_block
    assert (results / "summary_gpu.png").exists()
    assert "Some GPU" not in (results / "summary.md").read_text()


def test_table_names_the_memory_it_measured():
    report = _report("torch", "Some GPU")
    report["memory"] = {
        "ours": {"train_step_mb": 10.0, "kind": "GPU memory"},
        "keras": {"train_step_mb": 40.0, "kind": "GPU memory"},
        "ratio": 0.25,
    }
    table = benchmark.format_table(report)
    assert table.startswith("torch on Some GPU:")
    assert "(peak GPU memory growth): ours 10 MB, keras 40 MB, ratio 0.25" in table
