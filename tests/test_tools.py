"""The main job's tools: demo, benchmark, report (small and fast here)."""

import argparse
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

import keras_gru_plus
from keras_gru_plus import benchmark
from keras_gru_plus import demo
from keras_gru_plus import latency
from tests.helpers import BACKEND

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
        configs=["base", "masked", "bidirectional", "layer_norm"],
        repeats=1,
        memory=False,
        streaming=False,
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
    for mode in ("predict", "train"):
        entry = saved["configs"]["layer_norm"][mode]
        assert min(entry["ours_ms"], entry["plain_ms"], entry["keras_cell_ms"]) > 0
        assert entry["ratio_plain"] == pytest.approx(
            entry["ours_ms"] / entry["plain_ms"]
        )
        assert (
            entry["ratio"]
            == entry["ratio_keras_cell"]
            == pytest.approx(entry["ours_ms"] / entry["keras_cell_ms"])
        )
    assert (tmp_path / f"bench_{stem}.png").stat().st_size > 1000
    table = benchmark.format_table(report)
    assert "| base | predict |" in table
    assert "| layer_norm |" not in table and benchmark.LAYER_NORM_TITLE in table


def test_report_merges_results_into_the_readme(tmp_path):
    pytest.importorskip(
        "matplotlib", reason="the plot needs matplotlib, not installed here"
    )
    results = tmp_path / "results"
    results.mkdir()
    # jax's report has the layer_norm row, torch's (an older one) has not.
    (results / "bench_jax.json").write_text(json.dumps(_report("jax", layer_norm=True)))
    (results / "bench_torch.json").write_text(json.dumps(_report("torch")))
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- bench:start -->\nold\n<!-- bench:end -->\n")
    _run_report(results, readme)
    text = readme.read_text()
    assert "old" not in text and text.count("| base | predict |") == 2
    assert text.count(benchmark.LAYER_NORM_TITLE) == 1
    assert text.index(benchmark.LAYER_NORM_TITLE) < text.index("torch: keras 3")
    assert "| train | 12.0 | 10.0 | 24.0 | 1.20 | 0.50 |" in text
    summary = (results / "summary.md").read_text()
    assert summary.count(benchmark.LAYER_NORM_TITLE) == 1
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


def _layer_norm_entry(ours, plain, cell):
    return {
        "ours_ms": ours,
        "plain_ms": plain,
        "keras_cell_ms": cell,
        "ratio": ours / cell,
        "ratio_plain": ours / plain,
        "ratio_keras_cell": ours / cell,
    }


def _report(backend, accelerator=None, layer_norm=False, base=True):
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
    configs = {"base": {"predict": entry, "train": entry}} if base else {}
    if layer_norm:
        configs["layer_norm"] = {
            "predict": _layer_norm_entry(4.4, 4.0, 11.0),
            "train": _layer_norm_entry(12.0, 10.0, 24.0),
        }
    return {"machine": machine, "configs": configs}


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


def test_layer_norm_row_has_a_table_of_its_own():
    table = benchmark.format_table(_report("jax", layer_norm=True))
    main, layer_norm = table.split(benchmark.LAYER_NORM_TITLE)
    assert "| base | predict | 1.0 | 2.0 | 0.50 |" in main
    assert "layer_norm" not in main
    assert layer_norm.splitlines()[2:] == [
        "| mode | ours LN ms | our plain ms | Keras RNN+LN cell ms |"
        " LN/plain | LN/Keras cell |",
        "|---|---|---|---|---|---|",
        "| predict | 4.4 | 4.0 | 11.0 | 1.10 | 0.40 |",
        "| train | 12.0 | 10.0 | 24.0 | 1.20 | 0.50 |",
    ]
    # An older report, without the row: no such table.
    assert benchmark.LAYER_NORM_TITLE not in benchmark.format_table(_report("jax"))
    # The row alone (`--configs layer_norm`): no empty main table.
    alone = benchmark.format_table(_report("jax", layer_norm=True, base=False))
    assert "| configuration |" not in alone and benchmark.LAYER_NORM_TITLE in alone


def test_user_rows_have_a_table_of_their_own():
    entry = {"ours_ms": 3.0, "keras_ms": 4.0, "ratio": 0.75}
    report = _report("tensorflow")
    report["configs"]["user: Masking"] = {"predict": entry, "train": entry}
    main, user = benchmark.format_table(report).split(benchmark.USER_TITLE)
    assert "| user: Masking |" not in main and "| base | predict |" in main
    assert "| user: Masking | predict | 3.0 | 4.0 | 0.75 |" in user
    # Rows of a later run, kept under `user_setups`, with its machine line.
    later = _report("tensorflow")
    later["machine"]["date"] = "a later day"
    later["configs"]["user: base"] = {"predict": entry, "train": entry}
    report = _report("tensorflow")
    report["user_setups"] = later
    main, user = benchmark.format_table(report).split(benchmark.USER_TITLE)
    assert "a later day" in user and "a later day" not in main
    assert "| user: base | train |" in user and "| base | predict |" in user
    assert benchmark.USER_TITLE not in benchmark.format_table(_report("jax"))


def test_streaming_rows_time_every_call():
    rows = latency.measure(repeats=1, progress=lambda m: None)
    assert list(rows) == ["batch 1", "batch 32"]
    for row in rows.values():
        for name in ("ours_us", "ours_predict_on_batch_us", "keras_stateful_us"):
            assert row[name] > 0
        assert row["ratio"] == pytest.approx(row["ours_us"] / row["keras_stateful_us"])
        if keras.backend.backend() == "torch":
            assert row["ratio_torch"] == pytest.approx(
                row["ours_us"] / row["torch_gru_cell_us"]
            )
        else:
            assert "torch_gru_cell_us" not in row


def test_streaming_rows_have_a_table_of_their_own():
    rows = {
        "batch 1": dict(
            ours_us=30.0,
            ours_predict_on_batch_us=130.0,
            keras_stateful_us=100.0,
            ratio=0.3,
        ),
        "batch 32": dict(
            ours_us=60.0,
            ours_predict_on_batch_us=230.0,
            keras_stateful_us=200.0,
            ratio=0.3,
            torch_gru_cell_us=20.0,
            ratio_torch=3.0,
        ),
    }
    report = dict(_report("jax"), streaming=rows)
    main, streaming = benchmark.format_table(report).split(latency.TITLE)
    assert "| base | predict |" in main
    assert streaming.splitlines()[4:] == [
        "| 1 | 30 | 130 | 100 | 0.30 | - | - |",
        "| 32 | 60 | 230 | 200 | 0.30 | 20 | 3.00 |",
    ]
    assert latency.TITLE not in benchmark.format_table(_report("jax"))


def test_plot_takes_the_layer_norm_row_alone_or_beside_older_reports(tmp_path):
    pytest.importorskip(
        "matplotlib", reason="the plot needs matplotlib, not installed here"
    )
    for i, reports in enumerate(
        [
            [_report("jax", layer_norm=True, base=False)],
            [_report("jax", layer_norm=True), _report("torch")],
        ]
    ):
        path = tmp_path / f"plot{i}.png"
        benchmark.plot(reports, str(path))
        assert path.stat().st_size > 1000


def _layer_norm_gru_step(x, h, weights, epsilon=1e-5):
    """One step of the layer-normalized GRU in NumPy (the issue's
    equations, reset_after=True)."""
    kernel, recurrent, bias, gx, bx, gh, bh = weights
    units = h.shape[-1]

    def norm(v, gamma, beta):
        v = v.reshape(len(v), 3, units)
        v = (v - v.mean(-1, keepdims=True)) / np.sqrt(
            v.var(-1, keepdims=True) + epsilon
        )
        return v.reshape(len(v), 3 * units) * gamma + beta

    xz, xr, xh = np.split(norm(x @ kernel, gx, bx) + bias[0], 3, axis=-1)
    hz, hr, hh = np.split(norm(h @ recurrent, gh, bh) + bias[1], 3, axis=-1)
    z = 1 / (1 + np.exp(-(xz + hz)))
    r = 1 / (1 + np.exp(-(xr + hr)))
    return z * h + (1 - z) * np.tanh(xh + r * hh)


def _randomize(layer, seed=1):
    rng = np.random.default_rng(seed)
    for w in layer.weights:
        w.assign(rng.normal(scale=0.5, size=tuple(w.shape)).astype("float32"))


def test_keras_built_layer_norm_cell_follows_the_equations():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 4, 2)).astype("float32")
    rnn = benchmark.keras_layer_norm_gru(5, return_sequences=True)
    rnn(x)
    _randomize(rnn)
    weights = [np.asarray(keras.ops.convert_to_numpy(w)) for w in rnn.weights]
    assert [w.name for w in rnn.weights] == [
        "kernel",
        "recurrent_kernel",
        "bias",
        "input_norm_gamma",
        "input_norm_beta",
        "recurrent_norm_gamma",
        "recurrent_norm_beta",
    ]
    h = np.zeros((3, 5))
    expected = []
    for t in range(x.shape[1]):
        h = _layer_norm_gru_step(x[:, t].astype("float64"), h, weights)
        expected.append(h)
    got = keras.ops.convert_to_numpy(rnn(x))
    np.testing.assert_allclose(got, np.stack(expected, 1), atol=1e-5)


def test_keras_built_layer_norm_cell_matches_ours(monkeypatch):
    """The benchmark's anchor computes what ours with `layer_norm=True`
    does, on the weights `build_layer_norm_models` shares."""
    monkeypatch.setattr(benchmark, "BASE", dict(batch=3, steps=4, features=2, units=5))
    config = dict(benchmark.CONFIGS["layer_norm"])
    config["layer"] = dict(config["layer"], return_sequences=True)
    ours, plain, cell = benchmark.build_layer_norm_models(config)
    _randomize(benchmark._recurrent_layer(ours))
    benchmark.share_weights(ours, cell)
    benchmark.share_weights(ours, plain)
    x, _ = benchmark.make_data(config)

    def sequences(model):
        layer = benchmark._recurrent_layer(model)
        return keras.ops.convert_to_numpy(keras.Model(model.input, layer.output)(x))

    diff = np.abs(sequences(ours) - sequences(cell)).max()
    assert diff < 1e-5
    # The norms matter here: the plain layer on the same weights differs.
    assert np.abs(sequences(ours) - sequences(plain)).max() > 1e-2


USER_ROWS = [n for n in benchmark.CONFIGS if benchmark.is_user_row(n)]


@pytest.mark.parametrize("name", USER_ROWS)
def test_user_rows_build_the_models_users_write(monkeypatch, name):
    monkeypatch.setattr(benchmark, "BASE", dict(batch=4, steps=6, features=3, units=5))
    config = benchmark.CONFIGS[name]
    ours = benchmark.build_model(keras_gru_plus.GRU, config)
    theirs = benchmark.build_model(keras.layers.GRU, config)
    theirs.set_weights(ours.get_weights())
    # No static batch size, Adam, and no mask input (masks come from layers).
    assert len(ours.inputs) == 1 and ours.inputs[0].shape[0] is None
    assert isinstance(ours.optimizer, keras.optimizers.Adam)
    x, _ = benchmark.make_data(config)
    np.testing.assert_allclose(
        ours.predict_on_batch(x), theirs.predict_on_batch(x), atol=1e-5
    )
    if not config.get("masked"):
        return
    # Right padding, masked: the GRU's output on a padded row is the
    # built-in's on the row's unpadded steps alone.
    padded = x[..., 0] == 0 if x.ndim == 3 else x == 0
    lengths = (~padded).sum(1)
    assert lengths.min() < x.shape[1] and lengths.min() > 0
    row = int(np.argmin(lengths))
    gru = benchmark._recurrent_layer(ours)
    inputs = x[row : row + 1, : lengths[row]]
    if x.ndim == 2:
        (table,) = ours.get_layer(index=1).get_weights()
        inputs = table[inputs]
    alone = keras.layers.GRU(5)
    alone.build(inputs.shape)
    alone.set_weights(gru.get_weights())
    seen = keras.Model(ours.inputs, gru.output)(x[row : row + 1])
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(seen),
        keras.ops.convert_to_numpy(alone(inputs)),
        atol=1e-5,
    )


@pytest.mark.skipif(BACKEND != "torch", reason="the floor is PyTorch's")
def test_torch_floor_writes_out_the_gradients_autograd_gives():
    import torch

    module = _benchmark_script("torch_floor")
    shape = dict(batch=3, steps=5, features=4, units=6)
    for keras_ops in (False, True):
        calls = module.floor_calls(torch, shape, keras_ops=keras_ops)
        for written, auto in zip(calls["grads"](), calls["autograd"]()):
            np.testing.assert_allclose(written.numpy(), auto.numpy(), atol=1e-6)
        calls["predict"]()
        calls["train"]()
    # Ours' model alone: its backward pass reaches every weight.
    config = dict(benchmark.CONFIGS["base"], **shape)
    model = benchmark.build_model(keras_gru_plus.GRU, config)
    x, y = benchmark.make_data(config)
    module.model_alone(torch, model, x, y, "predict")()
    module.model_alone(torch, model, x, y, "train")()
    grads = [v.value.grad for v in model.trainable_variables]
    assert all(g is not None and bool(torch.all(g != 0)) for g in grads)


@pytest.mark.skipif(
    BACKEND == "torch", reason="floor.py is JAX's and TensorFlow's (torch_floor.py)"
)
@pytest.mark.parametrize("loop", ["unrolled", "scan"])
@pytest.mark.parametrize("masked", [False, True])
def test_floor_layer_is_the_built_in_gru(loop, masked):
    module = _benchmark_script("floor")
    rng = np.random.default_rng(3)
    x = rng.normal(size=(4, 7, 3)).astype("float32")
    mask = None
    if masked:
        # Padding on either side and inside a row, one row all padding.
        mask = rng.random((4, 7)) < 0.6
        mask[0] = False
    floor = module.FloorGRU(5, loop=loop)
    floor.build(x.shape)
    built_in = keras.layers.GRU(5)
    built_in.build(x.shape)
    weights = [rng.normal(size=w.shape).astype("float32") for w in floor.weights]
    floor.set_weights(weights)
    built_in.set_weights(weights)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(floor(x, mask=mask)),
        keras.ops.convert_to_numpy(built_in(x, mask=mask)),
        atol=1e-5,
    )


def test_floor_script_refuses_pytorch(monkeypatch, capsys):
    module = _benchmark_script("floor")
    monkeypatch.setattr(keras.backend, "backend", lambda: "torch")
    with pytest.raises(SystemExit, match="torch_floor.py"):
        module.main(["--configs", "base"])


def test_results_file_prints_a_markdown_table(capsys):
    module = _benchmark_script("results_file")
    rows = {"predict": {"a": 1.26, "b": 0.5}, "train": {"a": 10.0, "b": 2.0}}
    module.print_table("mode", rows, [("a ms", "a", 1), ("b/a", "b", 2)])
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines == [
        "| mode | a ms | b/a |",
        "|---|---|---|",
        "| predict | 1.3 | 0.50 |",
        "| train | 10.0 | 2.00 |",
    ]


def _benchmark_script(name):
    """`benchmarks/<name>.py`, imported from its path."""
    import importlib.util

    path = os.path.join(ROOT, "benchmarks", f"{name}.py")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_torch_compile_script_refuses_too_few_calls(capsys):
    with pytest.raises(SystemExit):
        _benchmark_script("torch_compile").main(["--calls", "10"])
    assert "--calls: expected more than 10, got 10" in capsys.readouterr().err


def test_torch_compile_script_refuses_no_repeats(capsys):
    with pytest.raises(SystemExit):
        _benchmark_script("torch_compile").main(["--repeats", "0"])
    assert "--repeats: expected at least 1, got 0" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["last state", "sequences, masked"])
def test_torch_compile_script_times_a_fresh_process(variant):
    # The script's runs are Keras on PyTorch, whatever this suite's backend.
    pytest.importorskip("torch")
    script = _benchmark_script("torch_compile")
    flags = variant != "last state"
    args = argparse.Namespace(
        steps=4,
        units=3,
        features=2,
        batch=2,
        calls=12,
        return_sequences=flags,
        masked=flags,
    )
    for layer_name in ("ours", "builtin"):
        measured = script.run_one(layer_name, False, args)
        assert measured["first_s"] > 0 and measured["step_ms"] > 0
        assert measured["machine"]["backend"] == "torch"
