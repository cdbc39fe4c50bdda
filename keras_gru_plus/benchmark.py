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

The `layer_norm` row (base shape) has other contenders: ours with
`layer_norm=True` against our plain layer and against the nearest thing a
user builds from Keras itself, `keras.layers.RNN(LayerNormGRUCell(units))`
(the cell below, in `keras.ops`), all three with the same weights where
their shapes agree, timed interleaved in the same way. Its `ratio` is
ours/Keras-built cell (ours against what Keras gives, as in the other
rows), `ratio_plain` ours/plain; its table is apart from the others.

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

from keras_gru_plus import allocator
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
    # Ours layer-normalized against our plain layer and a Keras-built cell
    # (`run_layer_norm_config`), not against keras.layers.GRU.
    "layer_norm": {"layer": {"layer_norm": True}, "anchor": "layer_norm"},
    # The models users write (`"user": True`): `keras.Input` without a
    # batch size, Adam, and masks from a `Masking` layer or an
    # `Embedding(mask_zero=True)` (token ids, right padding) rather than a
    # boolean mask input.
    "user: base": {"user": True},
    "user: Masking": {"user": True, "masked": "masking"},
    "user: Embedding(mask_zero)": {"user": True, "masked": "embedding"},
    "user: return_sequences": {"user": True, "layer": {"return_sequences": True}},
}
# The token ids of the `Embedding(mask_zero=True)` row: 1 to VOCABULARY - 1,
# 0 the padding.
VOCABULARY = 1000


class LayerNormGRUCell(keras.layers.Layer):
    """A layer-normalized GRU cell as a user writes it from Keras itself:
    one step in `keras.ops`, for `keras.layers.RNN` (the benchmark's anchor
    of `GRU(layer_norm=True)`).

    Per gate (z, r, h), over the units of each row, the input projection
    and the recurrent projection are normalized, `LN(v) = gamma * (v -
    mean(v)) / sqrt(var(v) + epsilon) + beta`, then biased, and combined as
    in Keras' GRU with `reset_after=True`:

        z  = recurrent_activation(LNx_z(x W_z) + b_z + LNh_z(h R_z) + rb_z)
        r  = recurrent_activation(LNx_r(x W_r) + b_r + LNh_r(h R_r) + rb_r)
        hh = activation(LNx_h(x W_h) + b_h + r * (LNh_h(h R_h) + rb_h))
        h' = z * h + (1 - z) * hh

    Weights in the order of ours: `kernel`, `recurrent_kernel`, `bias`
    (2, 3 units), `input_norm_gamma`, `input_norm_beta`,
    `recurrent_norm_gamma`, `recurrent_norm_beta` (3 units each).
    """

    def __init__(
        self,
        units,
        activation="tanh",
        recurrent_activation="sigmoid",
        epsilon=1e-5,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.units = units
        self.activation = keras.activations.get(activation)
        self.recurrent_activation = keras.activations.get(recurrent_activation)
        self.epsilon = epsilon
        self.state_size = units
        self.output_size = units

    def build(self, input_shape):
        width = 3 * self.units
        self.kernel = self.add_weight(
            shape=(input_shape[-1], width), initializer="glorot_uniform", name="kernel"
        )
        self.recurrent_kernel = self.add_weight(
            shape=(self.units, width),
            initializer="orthogonal",
            name="recurrent_kernel",
        )
        self.bias = self.add_weight(shape=(2, width), initializer="zeros", name="bias")
        for name, initializer in (
            ("input_norm_gamma", "ones"),
            ("input_norm_beta", "zeros"),
            ("recurrent_norm_gamma", "ones"),
            ("recurrent_norm_beta", "zeros"),
        ):
            weight = self.add_weight(shape=(width,), initializer=initializer, name=name)
            setattr(self, name, weight)

    def _norm(self, v, gamma, beta):
        """Layer normalization of each gate's block of `v` (batch, 3 units)."""
        ops = keras.ops
        v = ops.reshape(v, (-1, 3, self.units))
        mean = ops.mean(v, axis=-1, keepdims=True)
        centred = v - mean
        variance = ops.mean(ops.square(centred), axis=-1, keepdims=True)
        v = centred * ops.rsqrt(variance + self.epsilon)
        return ops.reshape(v, (-1, 3 * self.units)) * gamma + beta

    def call(self, inputs, states):
        ops = keras.ops
        h = states[0] if isinstance(states, (list, tuple)) else states
        x = self._norm(
            ops.matmul(inputs, self.kernel),
            self.input_norm_gamma,
            self.input_norm_beta,
        )
        r_h = self._norm(
            ops.matmul(h, self.recurrent_kernel),
            self.recurrent_norm_gamma,
            self.recurrent_norm_beta,
        )
        x_z, x_r, x_h = ops.split(x + self.bias[0], 3, axis=-1)
        h_z, h_r, h_h = ops.split(r_h + self.bias[1], 3, axis=-1)
        z = self.recurrent_activation(x_z + h_z)
        r = self.recurrent_activation(x_r + h_r)
        hh = self.activation(x_h + r * h_h)
        h = z * h + (1 - z) * hh
        return h, [h]


def keras_layer_norm_gru(units, layer_norm=True, layer_norm_epsilon=1e-5, **kwargs):
    """`keras.layers.RNN(LayerNormGRUCell(units))`, called like our `GRU`
    (`build_model`'s `gru_cls`); the other arguments go to the RNN."""
    if not layer_norm:
        raise ValueError("the Keras-built cell is layer-normalized")
    return keras.layers.RNN(
        LayerNormGRUCell(units, epsilon=layer_norm_epsilon), **kwargs
    )


def _shape(config):
    return {k: config.get(k, v) for k, v in BASE.items()}


def build_model(gru_cls, config):
    """Input (+ mask), the GRU (maybe Bidirectional), a Dense head.

    `config["masked"]`: `True` for a boolean mask input, `"masking"` for a
    `Masking(0.0)` layer, `"embedding"` for token ids through
    `Embedding(VOCABULARY, features, mask_zero=True)`. `config["user"]`:
    no static batch size, and Adam instead of SGD.
    """
    s = _shape(config)
    batch = None if config.get("user") else s["batch"]
    masked = config.get("masked")
    layer = gru_cls(s["units"], **config.get("layer", {}))
    if config.get("bidirectional"):
        layer = keras.layers.Bidirectional(layer)
    # The GRU's input, and with "embedding" or "masking" the layer whose
    # mask it carries.
    if masked == "embedding":
        inputs = keras.Input((s["steps"],), batch_size=batch, dtype="int32")
        embedded = keras.layers.Embedding(VOCABULARY, s["features"], mask_zero=True)
        x = embedded(inputs)
    else:
        inputs = keras.Input((s["steps"], s["features"]), batch_size=batch)
        x = keras.layers.Masking(0.0)(inputs) if masked == "masking" else inputs
    if masked is True:
        mask = keras.Input((s["steps"],), batch_size=batch, dtype="bool")
        x = layer(x, mask=mask)
        inputs = [inputs, mask]
    else:
        x = layer(x)
    if len(x.shape) == 3:
        x = keras.layers.GlobalAveragePooling1D()(x)
    outputs = keras.layers.Dense(1)(x)
    model = keras.Model(inputs, outputs)
    optimizer = keras.optimizers.Adam if config.get("user") else keras.optimizers.SGD
    model.compile(optimizer(1e-3), "mse")
    return model


def make_data(config, seed=0):
    """One batch `(x, y)` for `build_model(..., config)`; masked rows are
    right-padded with random lengths (a quarter of the steps to all)."""
    s = _shape(config)
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(s["batch"], s["steps"], s["features"])).astype("float32")
    y = rng.normal(size=(s["batch"], 1)).astype("float32")
    masked = config.get("masked")
    if not masked:
        return x, y
    lengths = rng.integers(s["steps"] // 4, s["steps"] + 1, s["batch"])
    mask = np.arange(s["steps"])[None, :] < lengths[:, None]
    if masked == "masking":
        return np.where(mask[..., None], x, 0.0).astype("float32"), y
    if masked == "embedding":
        tokens = rng.integers(1, VOCABULARY, (s["batch"], s["steps"]))
        return np.where(mask, tokens, 0).astype("int32"), y
    return [x, mask], y


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


def torch_cell_anchor(x, units):
    """One step of `torch.nn.GRUCell` on `x` `(batch, features)`, the state
    carried, under `torch.no_grad()` (the streaming rows' anchor), or None
    off PyTorch."""
    if keras.backend.backend() != "torch":
        return None
    torch = importlib.import_module("torch")
    device = _torch_device()
    cell = torch.nn.GRUCell(x.shape[-1], units).to(device)
    inputs = torch.as_tensor(x, device=device)
    state = {"h": torch.zeros(x.shape[0], units, device=device)}

    def call():
        with torch.no_grad():
            state["h"] = cell(inputs, state["h"])

    return call


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
    optimizer = (torch.optim.Adam if config.get("user") else torch.optim.SGD)(
        params, lr=1e-3
    )
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


def _recurrent_layer(model):
    """The recurrent layer of a `build_model` model (not its Input,
    Embedding or Dense head)."""
    (layer,) = [
        layer
        for layer in model.layers
        if layer.weights
        and not isinstance(layer, (keras.layers.Dense, keras.layers.Embedding))
    ]
    return layer


def share_weights(source, target):
    """Copies the weights of `source`'s recurrent layer and head into
    `target`'s, by name where they share one (`kernel`, `bias`, ...): the
    plain layer takes the layer-normalized one's weights less the norms'."""
    by_name = {w.name: w for w in _recurrent_layer(source).weights}
    for w in _recurrent_layer(target).weights:
        if w.name not in by_name or tuple(by_name[w.name].shape) != tuple(w.shape):
            raise ValueError(
                f"no weight {w.name!r} of shape {tuple(w.shape)} in {sorted(by_name)}"
            )
        # A copy: on JAX the two variables would share one buffer, which
        # a training step of either model donates (deletes).
        w.assign(np.array(keras.ops.convert_to_numpy(by_name[w.name])))
    target.layers[-1].set_weights(source.layers[-1].get_weights())


def build_layer_norm_models(config):
    """Ours with `layer_norm=True`, our plain layer and the Keras-built cell
    (`keras_layer_norm_gru`), with the same weights (the first's)."""
    keras.utils.set_random_seed(0)
    ours = build_model(GRU, config)
    plain_config = dict(config, layer=dict(config.get("layer", {}), layer_norm=False))
    plain = build_model(GRU, plain_config)
    cell = build_model(keras_layer_norm_gru, config)
    share_weights(ours, plain)
    share_weights(ours, cell)
    return ours, plain, cell


def run_layer_norm_config(config, repeats=7):
    """Timings of the `layer_norm` row in both modes: ours layer-normalized,
    our plain layer and the Keras-built cell, interleaved."""
    models = build_layer_norm_models(config)
    x, y = make_data(config)
    results = {}
    for mode in ("predict", "train"):
        fns = batch_calls(models, x, y, mode)
        t_ours, t_plain, t_cell = time_interleaved(fns, repeats=repeats)
        results[mode] = {
            "ours_ms": 1e3 * t_ours,
            "plain_ms": 1e3 * t_plain,
            "keras_cell_ms": 1e3 * t_cell,
            "ratio": t_ours / t_cell,
            "ratio_plain": t_ours / t_plain,
            "ratio_keras_cell": t_ours / t_cell,
        }
    return results


def is_layer_norm_row(modes):
    """Whether a report's entry (mode -> timings) is the `layer_norm` row."""
    return any("keras_cell_ms" in e for e in modes.values())


def batch_calls(models, x, y, mode):
    """One callable per model: its compiled `predict_on_batch(x)` or
    `train_on_batch(x, y)` (`mode` `"predict"` or `"train"`), the calls
    every row times."""
    if mode == "predict":
        return [lambda m=m: m.predict_on_batch(x) for m in models]
    return [lambda m=m: m.train_on_batch(x, y) for m in models]


def run_config(name, config, repeats=7):
    """Timings of one configuration in both modes."""
    if config.get("anchor") == "layer_norm":
        return run_layer_norm_config(config, repeats)
    keras.utils.set_random_seed(0)
    ours = build_model(GRU, config)
    theirs = build_model(keras.layers.GRU, config)
    theirs.set_weights(ours.get_weights())
    x, y = make_data(config)
    results = {}
    for mode in ("predict", "train"):
        fns = batch_calls((ours, theirs), x, y, mode)
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
            # The parent's allocator settings too (`allocator`).
            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", **allocator.environment()),
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
        "allocator": allocator.current(),
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
        + (f"; {machine['allocator']}" if machine.get("allocator") else "")
    )


LAYER_NORM_TITLE = (
    "Layer normalization (base shape): ours with `layer_norm=True` against"
    " our plain layer and `keras.layers.RNN` over a layer-normalized cell in"
    " `keras.ops` (`benchmark.LayerNormGRUCell`), same weights"
)


USER_TITLE = (
    "In the models users write (the `user:` rows): `keras.Input` without a"
    " batch size, Adam, masks from a `Masking` layer or an"
    " `Embedding(mask_zero=True)`; beside them the static-batch SGD rows"
    " `base` and `masked` (a boolean mask input) of the same run"
)
TABLE_HEAD = [
    "| configuration | mode | ours ms | keras ms | ours/keras |"
    " torch.nn.GRU ms | ours/torch |",
    "|---|---|---|---|---|---|---|",
]


def is_user_row(name):
    """Whether the configuration `name` is one of the `user:` rows."""
    return bool(CONFIGS.get(name, {}).get("user"))


def user_report(report):
    """The `user:` rows of `report` as a report of their own (`machine`,
    `configs`): those of a later run kept under `user_setups`, else the
    report's own, else `None`."""
    if report.get("user_setups"):
        return report["user_setups"]
    configs = {n: m for n, m in report["configs"].items() if is_user_row(n)}
    return {"machine": report["machine"], "configs": configs} if configs else None


def _table_rows(configs):
    """The Markdown rows of `configs` (name -> mode -> timings)."""
    rows = []
    for name, modes in configs.items():
        for mode, e in modes.items():
            torch_ms = e.get("torch_nn_gru_ms")
            rows.append(
                f"| {name} | {mode} | {e['ours_ms']:.1f} | "
                f"{e['keras_ms']:.1f} | {e['ratio']:.2f} | "
                + (
                    f"{torch_ms:.1f} | {e['ratio_torch']:.2f} |"
                    if torch_ms is not None
                    else "- | - |"
                )
            )
    return rows


def format_table(report):
    """A Markdown table of one backend's report, and apart: its
    `layer_norm` row (its anchors are not keras.layers.GRU), its `user:`
    rows (from this run, or from a later run kept under `user_setups`)."""
    main, layer_norm = {}, {}
    for name, modes in report["configs"].items():
        if is_layer_norm_row(modes):
            layer_norm[name] = modes
        elif not is_user_row(name):
            main[name] = modes
    user = user_report(report)
    lines = [machine_line(report["machine"])]
    if main or not (layer_norm or user):
        lines += ["", *TABLE_HEAD, *_table_rows(main)]
    if layer_norm:
        lines += ["", format_layer_norm_table(layer_norm)]
    if user:
        lines += ["", USER_TITLE + ":", ""]
        if user["machine"] is not report["machine"]:
            lines += [machine_line(user["machine"]), ""]
        lines += [*TABLE_HEAD, *_table_rows(user["configs"])]
    if report.get("streaming"):
        from keras_gru_plus import latency

        lines += ["", latency.format_table(report["streaming"])]
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


def format_layer_norm_table(rows):
    """The Markdown table of the `layer_norm` row(s) (name -> mode ->
    timings)."""
    lines = [
        LAYER_NORM_TITLE + ":",
        "",
        "| mode | ours LN ms | our plain ms | Keras RNN+LN cell ms |"
        " LN/plain | LN/Keras cell |",
        "|---|---|---|---|---|---|",
    ]
    for name, modes in rows.items():
        for mode, e in modes.items():
            label = mode if name == "layer_norm" else f"{name} {mode}"
            lines.append(
                f"| {label} | {e['ours_ms']:.1f} | {e['plain_ms']:.1f} | "
                f"{e['keras_cell_ms']:.1f} | {e['ratio_plain']:.2f} | "
                f"{e['ratio_keras_cell']:.2f} |"
            )
    return "\n".join(lines)


def plot(reports, path):
    """Bar chart of ours/keras per configuration, mode and backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # The configurations every report has; the layer_norm row's bar is
    # ours against the Keras-built layer-normalized cell.
    names = [
        n
        for n in reports[0].get("configs", {})
        if all(n in r.get("configs", {}) for r in reports)
    ]
    labels = [
        f"{n} (vs Keras RNN+LN cell)"
        if is_layer_norm_row(reports[0]["configs"][n])
        else n
        for n in names
    ]
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.5), sharey=True)
    for ax, mode in zip(axes, ("predict", "train")):
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
        ratios = [r["configs"][n][mode]["ratio"] for r in reports for n in names]
        if ratios and max(ratios) > 3:
            # Ratios far apart (a GPU against cuDNN): a log scale keeps
            # the ones near 1 readable.
            ax.set_yscale("log")
        ax.set_xticks(np.arange(len(names)) + 0.4 - width / 2)
        ax.set_xticklabels(labels, rotation=35, ha="right")
        ax.set_title(f"{mode}: time ours / keras.layers.GRU (lower is faster)")
        ax.legend()
    axes[0].set_ylabel("median time ratio")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(
    out_dir="benchmarks/results",
    configs=None,
    repeats=7,
    memory=True,
    streaming=True,
    progress=print,
):
    """Runs the benchmark on the current backend; writes JSON (and a PNG).
    With `streaming`, the per-step latency rows too (`latency`)."""
    os.makedirs(out_dir, exist_ok=True)
    names = configs or list(CONFIGS)
    unknown = [n for n in names if n not in CONFIGS]
    if unknown:
        raise ValueError(f"unknown configurations {unknown}; known: {list(CONFIGS)}")
    report = {"machine": machine_info(), "configs": {}}
    for i, name in enumerate(names, 1):
        progress(f"[{i}/{len(names)}] {name} ...")
        report["configs"][name] = run_config(name, CONFIGS[name], repeats)
        for mode, e in report["configs"][name].items():
            if "keras_cell_ms" in e:
                progress(
                    f"    {mode:<8} ours LN {e['ours_ms']:8.1f} ms  plain "
                    f"{e['plain_ms']:8.1f} ms  Keras RNN+LN cell "
                    f"{e['keras_cell_ms']:8.1f} ms  LN/plain "
                    f"{e['ratio_plain']:.2f}  LN/cell {e['ratio_keras_cell']:.2f}"
                )
                continue
            progress(
                f"    {mode:<8} ours {e['ours_ms']:8.1f} ms  keras "
                f"{e['keras_ms']:8.1f} ms  ratio {e['ratio']:.2f}"
            )
    if streaming:
        from keras_gru_plus import latency

        progress("streaming: one step per call ...")
        report["streaming"] = latency.measure(progress=progress)
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
