"""`python -m keras_gru_plus bench`: ours against keras.layers.GRU.

One process, one backend (`KERAS_BACKEND`). For every configuration, the
two layers are built with the same shapes and weights inside the same
model, and timed interleaved (ours, keras, ours, keras, ...) after a
warm-up, through the paths users take: compiled `predict_on_batch` and
`train_on_batch`. The figure reported is the median time of each and the
ratio ours/keras. On the PyTorch backend, `torch.nn.GRU` (same shapes, same
thread count, same device) takes its turn in the same alternation. Peak
memory of one training step at 1,000 steps is measured in fresh
subprocesses, one per layer: resident memory on CPU, device memory where
the backend computes on a GPU.

On a GPU the built-in layer takes cuDNN where Keras' backend has it
(PyTorch: no mask, `reset_after=True`, no recurrent dropout; TensorFlow
also with right-padded masks); the report names the GPU, and is written
to `bench_<backend>_gpu.json` beside the CPU one. `torch.nn.GRU` there
reads its batch from the device, while Keras' `*_on_batch` copy theirs
from NumPy at every call (8 MB at 1,000 steps), which the anchor's times
leave out.

Timings are noisy on small machines: compare the ratios of one run, not
absolute times across runs.
"""

import importlib
import json
import os
import platform
import subprocess
import sys
import time

import keras
import numpy as np

from keras_gru_plus.gru import GRU

BASE = dict(batch=32, steps=100, features=64, units=128)
CONFIGS = {
    "base": {},
    "masked": {"masked": True},
    "reset_after=False": {"layer": {"reset_after": False}},
    "dropout 0.1": {"layer": {"dropout": 0.1, "recurrent_dropout": 0.1}},
    "return_sequences": {"layer": {"return_sequences": True}},
    "long (1000 steps)": {"steps": 1000},
    "wide (512 units)": {"units": 512},
    "bidirectional": {"bidirectional": True},
}
# Configurations where the built-in takes its generic per-step loop on CPU
# (TensorFlow always does, JAX predict is measured against it as well).
GENERIC_LOOP = {"masked", "reset_after=False", "dropout 0.1"}


def _shape(config):
    return {k: config.get(k, v) for k, v in BASE.items()}


def build_model(gru_cls, config):
    """Input (+ mask), the GRU (maybe Bidirectional), a Dense head."""
    s = _shape(config)
    inputs = keras.Input((s["steps"], s["features"]), batch_size=s["batch"])
    layer = gru_cls(s["units"], **config.get("layer", {}))
    if config.get("bidirectional"):
        layer = keras.layers.Bidirectional(layer)
    if config.get("masked"):
        mask = keras.Input((s["steps"],), batch_size=s["batch"], dtype="bool")
        x = layer(inputs, mask=mask)
        model_inputs = [inputs, mask]
    else:
        x = layer(inputs)
        model_inputs = inputs
    if len(x.shape) == 3:
        x = keras.layers.GlobalAveragePooling1D()(x)
    outputs = keras.layers.Dense(1)(x)
    model = keras.Model(model_inputs, outputs)
    model.compile(keras.optimizers.SGD(1e-3), "mse")
    return model


def make_data(config, seed=0):
    s = _shape(config)
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(s["batch"], s["steps"], s["features"])).astype("float32")
    y = rng.normal(size=(s["batch"], 1)).astype("float32")
    if config.get("masked"):
        # Right padding with random lengths.
        lengths = rng.integers(s["steps"] // 4, s["steps"] + 1, s["batch"])
        mask = np.arange(s["steps"])[None, :] < lengths[:, None]
        return [x, mask], y
    return x, y


def accelerator():
    """The name of the GPU the backend computes on, or None on CPU."""
    backend = keras.backend.backend()
    if backend == "jax":
        jax = importlib.import_module("jax")
        device = jax.devices()[0]
        return None if device.platform == "cpu" else device.device_kind
    if backend == "torch":
        device = _torch_device()
        if device.type != "cuda":
            return None
        return importlib.import_module("torch").cuda.get_device_name(device)
    if backend == "tensorflow":
        tf = importlib.import_module("tensorflow")
        gpus = tf.config.list_physical_devices("GPU")
        if not gpus:
            return None
        details = tf.config.experimental.get_device_details(gpus[0])
        return details.get("device_name", gpus[0].name)
    return None


def by_device(reports):
    """`(cpu_reports, gpu_reports)`: reports made on a CPU and on a GPU
    (their `machine` names an accelerator), each in the order given."""
    return (
        [r for r in reports if not r["machine"].get("accelerator")],
        [r for r in reports if r["machine"].get("accelerator")],
    )


def _torch_device():
    """The device Keras' PyTorch backend computes on (its tensors' device:
    CUDA when there is one, unless `KERAS_TORCH_DEVICE` says otherwise)."""
    return keras.ops.convert_to_tensor(0.0).device


def _timer(fn, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def time_interleaved(fns, warmup=2, repeats=7, rounds=3):
    """Median seconds of each callable, timed in alternation."""
    for fn in fns:
        for _ in range(warmup):
            fn()
    samples = [[] for _ in fns]
    per_round = max(1, repeats // rounds)
    for _ in range(rounds):
        for i, fn in enumerate(fns):
            samples[i] += _timer(fn, per_round)
    return [float(np.median(s)) for s in samples]


def _torch_anchor(config, mode):
    """A call of torch.nn.GRU with the same shapes (timed beside ours and
    keras'), or None where it has no equivalent."""
    if keras.backend.backend() != "torch":
        return None
    if (
        config.get("masked")
        or config.get("layer", {}).get("recurrent_dropout")
        or config.get("layer", {}).get("reset_after") is False
    ):
        return None
    torch = importlib.import_module("torch")

    # The anchor computes where Keras does (cuDNN's GRU on a GPU).
    device = _torch_device().type
    s = _shape(config)
    gru = torch.nn.GRU(
        s["features"],
        s["units"],
        batch_first=True,
        bidirectional=bool(config.get("bidirectional")),
        device=device,
    )
    head = torch.nn.Linear(
        s["units"] * (2 if config.get("bidirectional") else 1), 1, device=device
    )
    params = list(gru.parameters()) + list(head.parameters())
    optimizer = torch.optim.SGD(params, lr=1e-3)
    x = torch.randn(s["batch"], s["steps"], s["features"], device=device)
    y = torch.randn(s["batch"], 1, device=device)
    sequences = config.get("layer", {}).get("return_sequences")

    def forward():
        out, h = gru(x)
        feat = (
            out.mean(1)
            if sequences
            else (torch.cat([h[0], h[1]], -1) if config.get("bidirectional") else h[-1])
        )
        return head(feat)

    def predict():
        with torch.no_grad():
            forward()
        # Keras' predict_on_batch and train_on_batch return host values,
        # which waits for the device; the anchor waits for it as well.
        if device == "cuda":
            torch.cuda.synchronize()

    def train():
        optimizer.zero_grad()
        loss = ((forward() - y) ** 2).mean()
        loss.backward()
        optimizer.step()
        if device == "cuda":
            torch.cuda.synchronize()

    return predict if mode == "predict" else train


def run_config(name, config, repeats=7):
    """Timings of one configuration in both modes."""
    keras.utils.set_random_seed(0)
    ours = build_model(GRU, config)
    theirs = build_model(keras.layers.GRU, config)
    theirs.set_weights(ours.get_weights())
    x, y = make_data(config)
    results = {}
    for mode in ("predict", "train"):
        if mode == "predict":
            fns = [lambda m=m: m.predict_on_batch(x) for m in (ours, theirs)]
        else:
            fns = [lambda m=m: m.train_on_batch(x, y) for m in (ours, theirs)]
        anchor = _torch_anchor(config, mode)
        if anchor is not None:
            fns.append(anchor)
        times = time_interleaved(fns, repeats=repeats)
        t_ours, t_keras = times[0], times[1]
        entry = {
            "ours_ms": 1e3 * t_ours,
            "keras_ms": 1e3 * t_keras,
            "ratio": t_ours / t_keras,
        }
        if anchor is not None:
            entry["torch_nn_gru_ms"] = 1e3 * times[2]
            entry["ratio_torch"] = t_ours / times[2]
        results[mode] = entry
    return results


_MEMORY_SCRIPT = """
import importlib, json, sys
import keras
from keras_gru_plus import benchmark
from keras_gru_plus.gru import GRU


def status_mb(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0


def device_mb(key):
    # Bytes the backend's allocator holds on the GPU (not its pool).
    backend = keras.backend.backend()
    if backend == "jax":
        stats = importlib.import_module("jax").devices()[0].memory_stats()
        value = stats["peak_bytes_in_use" if key == "peak" else "bytes_in_use"]
    elif backend == "torch":
        cuda = importlib.import_module("torch").cuda
        value = (cuda.max_memory_allocated() if key == "peak"
                 else cuda.memory_allocated())
    else:
        info = importlib.import_module("tensorflow").config.experimental
        value = info.get_memory_info("GPU:0")[key]
    return value / 2**20


cls = GRU if sys.argv[1] == "ours" else keras.layers.GRU
config = {"steps": int(sys.argv[2])}
gpu = benchmark.accelerator() is not None
model = benchmark.build_model(cls, config)
x, y = benchmark.make_data(config)
if gpu:
    # JAX cannot reset its peak: the peak since start also counts what was
    # on the device before (the weights), alike for both layers.
    if keras.backend.backend() == "torch":
        importlib.import_module("torch").cuda.reset_peak_memory_stats()
    elif keras.backend.backend() == "tensorflow":
        importlib.import_module(
            "tensorflow").config.experimental.reset_memory_stats("GPU:0")
    before = device_mb("current")
else:
    # A child starts with its parent's ru_maxrss, so the peak is read from
    # VmHWM, reset to the current resident set first (Linux >= 4.0).
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before = status_mb("VmRSS")
for _ in range(3):
    model.train_on_batch(x, y)
if gpu:
    peak = device_mb("peak")
    print(json.dumps({"peak_device_mb": peak, "train_step_mb": peak - before,
                      "kind": "GPU memory"}))
else:
    peak = status_mb("VmHWM")
    print(json.dumps({"peak_rss_mb": peak, "train_step_mb": peak - before,
                      "kind": "RSS"}))
"""


def measure_memory(steps=1000):
    """Peak memory growth (MB) of training, one fresh process per layer.

    From a built model to the end of three training steps (compilation
    included, for both layers alike): the peak memory the training step
    needs on top of the model and data. On CPU the resident set (Linux
    only: it reads `/proc/self/status`); on a GPU the device memory the
    backend's allocator holds.
    """
    out = {}
    for which in ("ours", "keras"):
        proc = subprocess.run(
            [sys.executable, "-c", _MEMORY_SCRIPT, which, str(steps)],
            capture_output=True,
            text=True,
            timeout=1800,
            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
        )
        if proc.returncode != 0:
            raise RuntimeError(proc.stderr[-2000:])
        out[which] = json.loads(proc.stdout.strip().splitlines()[-1])
    out["ratio"] = out["ours"]["train_step_mb"] / max(
        out["keras"]["train_step_mb"], 1e-9
    )
    return out


def machine_info():
    info = {
        "backend": keras.backend.backend(),
        "keras": keras.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "unset"),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "accelerator": accelerator(),
    }
    if keras.backend.backend() == "torch":
        torch = importlib.import_module("torch")
        info["torch_threads"] = torch.get_num_threads()
    return info


def machine_line(machine):
    """The heading line of a report: backend, device, Keras, CPUs, threads,
    date."""
    where = f" on {machine['accelerator']}" if machine.get("accelerator") else ""
    return (
        f"{machine['backend']}{where}: keras {machine['keras']},"
        f" {machine['cpus']} CPUs, OMP_NUM_THREADS="
        f"{machine['OMP_NUM_THREADS']}, {machine['date']}"
    )


def format_table(report):
    """A Markdown table of one backend's report."""
    lines = [
        machine_line(report["machine"]),
        "",
        "| configuration | mode | ours ms | keras ms | ours/keras |"
        " torch.nn.GRU ms | ours/torch |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, modes in report["configs"].items():
        for mode, e in modes.items():
            torch_ms = e.get("torch_nn_gru_ms")
            lines.append(
                f"| {name} | {mode} | {e['ours_ms']:.1f} | "
                f"{e['keras_ms']:.1f} | {e['ratio']:.2f} | "
                + (
                    f"{torch_ms:.1f} | {e['ratio_torch']:.2f} |"
                    if torch_ms is not None
                    else "- | - |"
                )
            )
    memory = report.get("memory")
    if memory:
        kind = memory["ours"].get("kind", "RSS")
        lines += [
            "",
            f"Training memory at 1,000 steps (peak {kind} growth):"
            f" ours {memory['ours']['train_step_mb']:.0f} MB, keras "
            f"{memory['keras']['train_step_mb']:.0f} MB, ratio "
            f"{memory['ratio']:.2f}",
        ]
    return "\n".join(lines)


def plot(reports, path):
    """Bar chart of ours/keras per configuration, mode and backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(13, 4.5), sharey=True)
    for ax, mode in zip(axes, ("predict", "train")):
        names = list(next(iter(reports)).get("configs", {}))
        width = 0.8 / max(1, len(reports))
        for i, report in enumerate(reports):
            ratios = [report["configs"][n][mode]["ratio"] for n in names]
            xs = np.arange(len(names)) + i * width
            label = report["machine"]["backend"]
            if report["machine"].get("accelerator"):
                label += f" ({report['machine']['accelerator']})"
            ax.bar(xs, ratios, width, label=label)
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.axhline(0.7, color="grey", linewidth=0.8, linestyle="--")
        if max(r["configs"][n][mode]["ratio"] for r in reports for n in names) > 3:
            # Ratios far apart (a GPU against cuDNN): a log scale keeps
            # the ones near 1 readable.
            ax.set_yscale("log")
        ax.set_xticks(np.arange(len(names)) + 0.4 - width / 2)
        ax.set_xticklabels(names, rotation=35, ha="right")
        ax.set_title(f"{mode}: time ours / keras.layers.GRU (lower is faster)")
        ax.legend()
    axes[0].set_ylabel("median time ratio")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(
    out_dir="benchmarks/results", configs=None, repeats=7, memory=True, progress=print
):
    """Runs the benchmark on the current backend; writes JSON (and a PNG)."""
    os.makedirs(out_dir, exist_ok=True)
    names = configs or list(CONFIGS)
    report = {"machine": machine_info(), "configs": {}}
    for i, name in enumerate(names, 1):
        progress(f"[{i}/{len(names)}] {name} ...")
        report["configs"][name] = run_config(name, CONFIGS[name], repeats)
        for mode, e in report["configs"][name].items():
            progress(
                f"    {mode:<8} ours {e['ours_ms']:8.1f} ms  keras "
                f"{e['keras_ms']:8.1f} ms  ratio {e['ratio']:.2f}"
            )
    if memory:
        progress("memory of a training step at 1,000 steps ...")
        report["memory"] = measure_memory()
    name = report["machine"]["backend"]
    if report["machine"]["accelerator"]:
        name += "_gpu"
    path = os.path.join(out_dir, f"bench_{name}.json")
    with open(path, "w") as f:
        json.dump(report, f, indent=2)
    print(format_table(report))
    print(f"wrote {path}")
    try:
        plot([report], os.path.join(out_dir, f"bench_{name}.png"))
    except ImportError:
        print("matplotlib not installed: no plot")
    return report
