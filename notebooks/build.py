"""Writes and executes the notebooks of keras_gru_plus.

`python notebooks/build.py` writes the three `.ipynb` files from the cells
below and executes them top to bottom (with the Keras backend of
`KERAS_BACKEND`, JAX by default). `--out DIR` writes the executed copies to
DIR instead of in place (what CI does: it checks that they run).
`nox -s notebooks` runs this in its own environment.
"""

import argparse
import os
import sys

import nbformat
from nbclient import NotebookClient

HERE = os.path.dirname(os.path.abspath(__file__))


def md(text):
    return nbformat.v4.new_markdown_cell(text.strip())


def code(text):
    return nbformat.v4.new_code_cell(text.strip())


TOUR = [
    md("""
# keras_gru_plus: a guided tour

This notebook follows the classic Keras GRU tutorial, with
`keras_gru_plus.GRU` in place of `tf.keras.layers.GRU`. Everything it shows
runs on JAX, TensorFlow and PyTorch alike (`KERAS_BACKEND`).

## 1. What a GRU is

The gated recurrent unit (Cho et al., 2014) is close to the LSTM without an
output gate and without a separate cell state: an **update gate** `z` decides
how much of the previous state to keep, a **reset gate** `r` how much of it
enters the candidate `hh`. It is often as good as the LSTM, and cheaper.

Gates are ordered **(z, r, h)** in every fused weight. With
`reset_after=True` (the default):

$$z_t = \\sigma(x_t W_z + b_z + h_{t-1} R_z + rb_z)$$
$$r_t = \\sigma(x_t W_r + b_r + h_{t-1} R_r + rb_r)$$
$$\\hat h_t = \\tanh(x_t W_h + b_h + r_t \\odot (h_{t-1} R_h + rb_h))$$
$$h_t = z_t \\odot h_{t-1} + (1 - z_t) \\odot \\hat h_t$$
"""),
    code("""
import os
os.environ.setdefault("KERAS_BACKEND", "jax")
import numpy as np
import matplotlib.pyplot as plt
import keras
from keras import random
import keras_gru_plus

print("backend:", keras.backend.backend(), "| keras", keras.__version__,
      "| keras_gru_plus", keras_gru_plus.__version__)
"""),
    md("""
The gates at work: one unit reading a noisy sine wave. The plot shows the
input, the state `h_t`, and the update gate `z_t`, computed from the layer's
own weights with NumPy, step by step, from the equations above.
"""),
    code("""
keras.utils.set_random_seed(1)
t = np.linspace(0, 4 * np.pi, 80)
x = (np.sin(t) + 0.1 * np.random.default_rng(0).normal(size=t.size))
x = x.astype("float32")[None, :, None]          # (batch 1, 80 steps, 1)
layer = keras_gru_plus.GRU(1, return_sequences=True,
                           kernel_initializer=keras.initializers.Constant(1.5))
h = keras.ops.convert_to_numpy(layer(x))[0, :, 0]
W, R, b = layer.get_weights()
sig = lambda v: 1 / (1 + np.exp(-v))
state, zs = np.zeros(1), []
for xt in x[0, :, 0]:
    z = sig(xt * W[0, 0] + b[0, 0] + state * R[0, 0] + b[1, 0])
    r = sig(xt * W[0, 1] + b[0, 1] + state * R[0, 1] + b[1, 1])
    hh = np.tanh(xt * W[0, 2] + b[0, 2] + r * (state * R[0, 2] + b[1, 2]))
    state = z * state + (1 - z) * hh
    zs.append(z[0])
fig, ax = plt.subplots(figsize=(9, 3))
ax.plot(t, x[0, :, 0], label="input $x_t$", alpha=0.6)
ax.plot(t, h, label="state $h_t$ (layer)")
ax.plot(t, zs, "--", label="update gate $z_t$ (NumPy)")
ax.set_xlabel("time"); ax.legend(loc="upper right"); plt.show()
"""),
    md("""
## 2. Creating the layer

The constructor takes the tutorial's arguments, with the same names and
defaults: `GRU(units, activation, return_state=False, go_backwards=False,
stateful=False, unroll=False, time_major=False, reset_after=True,
recurrent_activation="sigmoid", use_bias=True, ...)`.
"""),
    code("""
inputs = random.normal([22, 12, 6])
gru = keras_gru_plus.GRU(6)
output = gru(inputs)
print(output.shape)
"""),
    md("""
## 3. The two variants: `reset_after`

`reset_after=True` applies the reset gate after the recurrent matmul and keeps
separate input and recurrent biases (a `(2, 3 * units)` bias, compatible with
cuDNN); `reset_after=False` is the original formulation, reset gate before the
matmul, one `(3 * units,)` bias. Both give the numbers of `keras.layers.GRU`
with the same weights:
"""),
    code("""
for reset_after in (True, False):
    ours = keras_gru_plus.GRU(4, reset_after=reset_after)
    builtin = keras.layers.GRU(4, reset_after=reset_after)
    builtin.build(inputs.shape)
    ours.build(inputs.shape)
    ours.set_weights(builtin.get_weights())
    diff = np.abs(keras.ops.convert_to_numpy(ours(inputs))
                  - keras.ops.convert_to_numpy(builtin(inputs))).max()
    print(f"reset_after={reset_after}: bias shape {ours.cell.bias.shape}, "
          f"max |ours - keras.layers.GRU| = {diff:.1e}")
"""),
    md("""
## 4. `return_sequences` and `return_state`
"""),
    code("""
gru = keras_gru_plus.GRU(4, return_sequences=True, return_state=True)
whole_sequence_output, final_state = gru(inputs)
print(whole_sequence_output.shape, final_state.shape)
"""),
    md("""
## 5. The Keras 2 methods

Keras 3 dropped them; `keras_gru_plus.GRU` has them back. Dropout masks are
variational: one per sequence, the same at every step, scaled by
`1 / (1 - rate)`, cached until reset.
"""),
    code("""
gru = keras_gru_plus.GRU(4, dropout=0.5, recurrent_dropout=0.25, seed=0)
gru.build(inputs.shape)
mask = gru.get_dropout_mask_for_cell(inputs, training=True)
print("input mask", mask.shape, "values", np.unique(keras.ops.convert_to_numpy(mask)))
assert gru.get_dropout_mask_for_cell(inputs, training=True) is mask   # cached
gru.reset_dropout_mask()                                              # cleared
print("new mask drawn:", gru.get_dropout_mask_for_cell(inputs, True) is not mask)
rec = gru.get_recurrent_dropout_mask_for_cell(inputs, training=True)
print("recurrent mask", rec.shape)
gru.reset_recurrent_dropout_mask()
"""),
    code("""
stateful = keras_gru_plus.GRU(4, stateful=True)
stateful(inputs)                       # the state now holds the last step
print("state after a call:", keras.ops.convert_to_numpy(stateful.states[0])[0])
stateful.reset_states(np.ones((22, 4), "float32"))   # a NumPy array as state
print("after reset_states(ones):", keras.ops.convert_to_numpy(stateful.states[0])[0])
stateful.reset_states()                 # zeros
print("after reset_states():", keras.ops.convert_to_numpy(stateful.states[0])[0])
"""),
    md("""
## 6. A network

The tutorial's network: a GRU over 32 steps of 32 features, batch
normalization and 15 outputs, trained on random data, then predictions
checked in a loop with `argmax`.
"""),
    code("""
keras.utils.set_random_seed(0)
model = keras.Sequential([
    keras.Input((32, 32)),
    keras_gru_plus.GRU(64),
    keras.layers.BatchNormalization(),
    keras.layers.Dense(15),
])
model.compile(optimizer="adam",
              loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
              metrics=["accuracy"])
model.summary()
"""),
    code("""
x_train = np.random.default_rng(0).normal(size=(512, 32, 32)).astype("float32")
y_train = np.random.default_rng(1).integers(0, 15, size=512)
history = model.fit(x_train, y_train, epochs=3, batch_size=64, verbose=2)
predictions = model.predict(x_train[:5], verbose=0)
for i, p in enumerate(predictions):
    print(f"sample {i}: predicted {np.argmax(p)}, label {y_train[i]}")
"""),
    md("""
## 7. One more example
"""),
    code("""
inputs = random.normal([42, 22, 12])
print(keras_gru_plus.GRU(24)(inputs).shape)
"""),
]

REAL_DATA = [
    md("""
# Real data: handwritten digits, ours beside keras.layers.GRU

The UCI handwritten digits (1,797 images of 8x8 pixels) ship inside
scikit-learn, so this runs offline. Each image is read as a sequence of 8
rows of 8 pixels. The same model is built with `keras_gru_plus.GRU` and with
`keras.layers.GRU` from the same initial weights and trained the same way
(`keras_gru_plus.demo`, also `python -m keras_gru_plus demo`).
"""),
    code("""
import os
os.environ.setdefault("KERAS_BACKEND", "jax")
import keras
import matplotlib.pyplot as plt
from keras_gru_plus import demo

(x_train, y_train), (x_test, y_test) = demo.load_digits()
print("train", x_train.shape, "test", x_test.shape, "backend", keras.backend.backend())
fig, axes = plt.subplots(1, 8, figsize=(10, 1.6))
for ax, image, label in zip(axes, x_test, y_test):
    ax.imshow(image, cmap="gray_r"); ax.set_title(int(label)); ax.axis("off")
plt.show()
"""),
    code("""
results = demo.run(epochs=20, verbose=2)
"""),
    code("""
fig, axes = plt.subplots(1, 2, figsize=(11, 3.5))
for name, r in results.items():
    h = r["history"]
    axes[0].plot(h["loss"], label=f"{name} train")
    axes[0].plot(h["val_loss"], "--", label=f"{name} held-out")
    axes[1].plot(h["val_accuracy"], label=name)
axes[0].set_title("loss"); axes[0].set_xlabel("epoch"); axes[0].legend()
axes[1].set_title("held-out accuracy"); axes[1].set_xlabel("epoch"); axes[1].legend()
plt.show()
for name, r in results.items():
    print(f"{name:<18} held-out accuracy {r['test_accuracy']:.4f}, "
          f"trained in {r['train_seconds']:.1f} s")
"""),
]

PARITY_SPEED = [
    md("""
# Parity and speed across backends

**Parity**: the differences between `keras_gru_plus.GRU` and
`keras.layers.GRU` with the same weights, outputs and gradients, over the
self-test grid of `python -m keras_gru_plus check`, on this notebook's
backend. **Speed**: the ratios ours / keras.layers.GRU measured by the
benchmark on each backend (`benchmarks/results/bench_<backend>.json`, written
by `python -m keras_gru_plus bench` or `nox -s bench`), and on a GPU where
one was measured (`bench_<backend>_gpu.json`, from `benchmarks/gpu.sh`),
plotted apart: there the built-in layer takes cuDNN on PyTorch.
"""),
    code("""
import os, glob, json
os.environ.setdefault("KERAS_BACKEND", "jax")
import numpy as np
import matplotlib.pyplot as plt
import keras
from keras_gru_plus import benchmark, check

rows = []
for kwargs, mask in check.configurations():
    out_diff, grad_diff = check.compare(kwargs, mask)
    name = f"mask={mask} " + " ".join(f"{k}={v}" for k, v in kwargs.items())
    rows.append((name, out_diff, grad_diff))
print(f"{len(rows)} configurations on {keras.backend.backend()}; "
      f"largest output difference {max(r[1] for r in rows):.1e}, "
      f"largest gradient difference {max(r[2] for r in rows):.1e} "
      f"(tolerance {check.TOLERANCE:g})")
"""),
    code("""
fig, ax = plt.subplots(figsize=(10, 3.5))
idx = np.arange(len(rows))
floor = 1e-9  # exact zeros drawn at the floor of the log scale
ax.bar(idx - 0.2, [max(r[1], floor) for r in rows], 0.4, label="outputs")
ax.bar(idx + 0.2, [max(r[2], floor) for r in rows], 0.4, label="gradients")
ax.axhline(check.TOLERANCE, color="red", linestyle="--", label="tolerance")
ax.set_yscale("log"); ax.set_xlabel("configuration #")
ax.set_ylabel("max |ours - keras|"); ax.legend(); plt.show()
"""),
    code("""
from IPython.display import Image, display

paths = sorted(glob.glob(os.path.join("..", "benchmarks", "results", "bench_*.json")))
reports = [json.load(open(p)) for p in paths]
cpu, gpu = benchmark.by_device(reports)
for title, group, png in (("CPU", cpu, "speed.png"),
                          ("GPU", gpu, "speed_gpu.png")):
    print(f"{title}: results found for", [r["machine"]["backend"] for r in group])
    if group:
        benchmark.plot(group, png)
        display(Image(png))
        for r in group:
            print(benchmark.format_table(r)); print()
"""),
]

NOTEBOOKS = {
    "01_guided_tour.ipynb": TOUR,
    "02_real_data.ipynb": REAL_DATA,
    "03_parity_and_speed.ipynb": PARITY_SPEED,
}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", default=None, help="write executed notebooks here (default: in place)"
    )
    parser.add_argument("--only", nargs="*", default=None)
    args = parser.parse_args(argv)
    out_dir = args.out or HERE
    os.makedirs(out_dir, exist_ok=True)
    for name, cells in NOTEBOOKS.items():
        if args.only and name not in args.only:
            continue
        nb = nbformat.v4.new_notebook(cells=cells)
        nb.metadata["kernelspec"] = {
            "name": "python3",
            "language": "python",
            "display_name": "Python 3",
        }
        print(f"executing {name} ...", flush=True)
        NotebookClient(
            nb,
            timeout=900,
            kernel_name="python3",
            resources={"metadata": {"path": HERE}},
        ).execute()
        path = os.path.join(out_dir, name)
        nbformat.write(nb, path)
        print(f"wrote {path}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
