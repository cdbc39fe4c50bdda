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
    md("""
## Streaming: one row at a time

A server that reads a sequence as it arrives (a frame of audio, a sensor
reading, a keystroke) cannot wait for the whole sequence and run the model
on it: it gets one step at a time and answers after each. And it serves
many users, so the GRU's state cannot live inside the layer: the caller
holds it, one per user, and passes it in with each step.
`keras_gru_plus.step_model(model)` turns a trained sequence model into that
one-step model, sharing its weights: it takes `[x_t, *states]` (one row of
8 pixels, and one `(batch, units)` state per GRU) and returns
`[y_t, *new_states]`. After a GRU with `return_sequences=False`, the Dense
softmax head is applied to the running state, so `y_t` is the model's
answer if the image ended after the rows read so far; after the last row it
is the model's answer on the whole image.
`keras_gru_plus.initial_states(step, batch_size)` gives the zero states a
stream starts from.

`demo.run` returns scores, not models, so the cell below trains the same
model again (`demo.build_model`: GRU(64), Dense(10) softmax, the same
optimizer, 20 epochs) and builds its step model.
"""),
    code("""
import numpy as np
import keras_gru_plus

keras.utils.set_random_seed(0)
model = demo.build_model(keras_gru_plus.GRU)
model.fit(x_train, y_train, epochs=20, batch_size=32, verbose=0)
print(f"held-out accuracy {model.evaluate(x_test, y_test, verbose=0)[1]:.4f}")

step = keras_gru_plus.step_model(model)
print("step inputs: ", [f"{t.name} {tuple(t.shape)}" for t in step.inputs])
print("step outputs:", [f"{name} {tuple(t.shape)}"
                        for name, t in zip(step.output_names, step.outputs)])
"""),
    md("""
Every held-out digit is a stream here: the whole test set is one batch of
streams, fed its first row, then its second, and so on, with
`step.predict_on_batch` (NumPy in, NumPy out), keeping the 10 class
probabilities after every row. After the 8th row they must be
`model.predict` on the whole images. A digit *settles* after k rows when
the top guess is the true class from the k-th row to the last.
"""),
    code("""
states = keras_gru_plus.initial_states(step, batch_size=len(x_test))
print("zero states:", [f"{s.shape} {s.dtype}" for s in states])
probs = []
for row in range(8):
    p, *states = step.predict_on_batch([x_test[:, row], *states])
    probs.append(p)
probs = np.stack(probs, axis=1)                 # (digits, rows read, 10 classes)
whole = model.predict(x_test, verbose=0)
print(f"max |after row 8 - model.predict(whole images)| = "
      f"{np.abs(probs[:, -1] - whole).max():.1e}")

right = probs.argmax(-1) == y_test[:, None]     # (digits, rows read)
print("held-out accuracy after k rows:",
      "  ".join(f"{k}: {a:.3f}" for k, a in enumerate(right.mean(0), 1)))
# settled after k rows: right from row k to row 8 (0: wrong after row 8)
trailing = np.cumprod(right[:, ::-1], axis=1).sum(1)
settled = np.where(trailing > 0, 9 - trailing, 0)
counts = np.bincount(settled, minlength=9)
print("digits settled after k rows:",
      "  ".join(f"{k}: {counts[k]}" for k in range(1, 9)),
      f" | never: {counts[0]}")

_, first = np.unique(y_test, return_index=True)
shown = np.sort(first)[:4]          # the first 4 test digits of different classes
for i in shown:
    print(f"test digit #{i} (a {y_test[i]}): top guess after each row",
          probs[i].argmax(-1).tolist(), f"-> settled after {settled[i]} rows")
"""),
    code("""
fig, axes = plt.subplots(2, 4, figsize=(12, 5.6),
                         gridspec_kw={"height_ratios": [1, 1.15]})
rows_read = np.arange(1, 9)
for col, i in enumerate(shown):
    label = y_test[i]
    axes[0, col].imshow(x_test[i], cmap="gray_r")
    axes[0, col].set_title(f"test digit #{i}: a {label}")
    axes[0, col].set_yticks(range(8), [f"row {r}" for r in rows_read], fontsize=7)
    axes[0, col].set_xticks([])
    ax = axes[1, col]
    for c in range(10):
        if c != label:
            ax.plot(rows_read, probs[i, :, c], color="0.7", lw=1,
                    label="other classes" if c == (label + 1) % 10 else None)
    ax.plot(rows_read, probs[i, :, label], "o-", color="tab:green", lw=2.5,
            label="true class")
    for r, g in zip(rows_read, probs[i].argmax(-1)):
        ax.text(r, 1.07, str(g), ha="center", fontsize=10,
                color="tab:green" if g == label else "tab:red")
    ax.set_ylim(0, 1.15); ax.set_xticks(rows_read)
    ax.set_xlabel(f"rows read (settled after {settled[i]})")
axes[1, 0].text(0.4, 1.07, "top guess:", ha="right", fontsize=9)
axes[1, 0].set_ylabel("probability")
axes[1, 0].legend(loc="center left", fontsize=8)
fig.suptitle("Streaming row by row: class probabilities after each row "
             "(digits on top: the top guess, green when right)")
fig.tight_layout(); plt.show()
"""),
    md("""
After the 8th row the streamed probabilities are `model.predict` on the
whole images, to a largest difference of 5.5e-07 over the 449 held-out
digits (float32 rounding). Before that, they are the model's answers on the
rows read so far, and they are poor: the held-out accuracy is 0.076, 0.091,
0.087, 0.029 and 0.080 after 1 to 5 rows, at or below chance (0.1), then
0.276 after 6, 0.780 after 7 and 0.989 after 8. No digit settles before its
4th row; 2 settle after 4 rows, 31 after 5, 89 after 6, 226 after 7, 96 only
at the last row, and 5 never (wrong after the 8th). Of the four shown, the 6
settles after 6 rows, the 1 after 7, the 2 and the 5 only at the 8th; the 1
is the top guess after the first row and the 2 after rows 2 to 4, and both
lose it before coming back.

That is what this model was trained for: its loss only ever asked for an
answer after the 8th row, so its answers after fewer rows are whatever the
Dense head makes of a state it was never trained to read halfway. Streaming
gives the same final answer as the whole sequence, one row at a time, with
the state held by the caller. Early answers worth acting on need a model
trained for them, with a loss at every step (`return_sequences=True` and a
per-step Dense head, the label repeated at every step), which `step_model`
steps the same way.
"""),
    md("""
### One state per stream

On a server the streams do not arrive together: each user starts when they
start, pauses, and ends. The caller keeps a dict from stream id to that
stream's states list (here one `(1, 64)` array, the GRU's state). At each
tick, the streams that sent a row are stepped together: their states are
stacked into one batch with `np.concatenate`, the step model runs once, and
the new states are split back, one per stream, with `np.split`. A stream
that has not sent a row keeps its state untouched; a finished one is
dropped. Three streams here, three test digits sent row by row, starting at
different ticks, one of them pausing for two ticks:
"""),
    code("""
streams = {}                                    # stream id -> its states list

def serve(rows):
    # One step, in one batch, for the streams in `rows` ({stream id: its next row}).
    ids = list(rows)
    for s in ids:
        if s not in streams:                    # a new stream starts from zeros
            streams[s] = keras_gru_plus.initial_states(step, batch_size=1)
    n_grus = len(step.inputs) - 1                 # one state per GRU, after x_t
    batch = [np.concatenate([streams[s][k] for s in ids]) for k in range(n_grus)]
    y, *new = step.predict_on_batch([np.stack([rows[s] for s in ids]), *batch])
    split = [np.split(n, len(ids)) for n in new]   # per GRU: one (1, units) per stream
    for j, s in enumerate(ids):
        streams[s] = [part[j] for part in split]
    return dict(zip(ids, y))

images = {"user-a": shown[0], "user-b": shown[1], "user-c": shown[2]}
ticks = {"user-a": [0, 1, 2, 3, 6, 7, 8, 9],    # pauses at ticks 4 and 5
         "user-b": [2, 3, 4, 5, 6, 7, 8, 9],
         "user-c": [5, 6, 7, 8, 9, 10, 11, 12]}
final = {}
for tick in range(13):
    rows = {s: x_test[images[s], ts.index(tick)]
            for s, ts in ticks.items() if tick in ts}
    answers = serve(rows)
    report = []
    for s, y in answers.items():
        n = ticks[s].index(tick) + 1
        report.append(f"{s} row {n}: {y.argmax()} ({y.max():.2f})")
        if n == 8:             # the stream ends: keep its answer, drop its state
            final[s] = y
            del streams[s]
    print(f"tick {tick:2d}: batch of {len(rows)}, {len(streams)} held | "
          + " | ".join(report))

expected = model.predict(x_test[list(images.values())], verbose=0)
print("max |stream's last answer - model.predict(its image)| =",
      f"{np.abs(np.stack([final[s] for s in images]) - expected).max():.1e}",
      "| true classes", {s: int(y_test[i]) for s, i in images.items()})
"""),
    md("""
The batch holds 1 to 3 streams as they come and go, and each stream's
answer after its 8th row is `model.predict` on its image (largest
difference 1.2e-07): user-a's 6, user-b's 2 and user-c's 5, the true
classes, although user-a paused and the three started at different ticks.
A stream's whole memory is its states list, here 64 float32 numbers: it can
be kept in a dict as here, or stored between requests anywhere.
"""),
    md(r"""
## Layer normalization

`GRU(units, layer_norm=True)` normalizes the input projection and the
recurrent projection separately, per gate and per row, over the `units`
values of each gate (Ba, Kiros & Hinton 2016, arXiv 1607.06450), before the
biases and before the reset gate ($\bar v$ the mean of $v$, $\mathrm{var}$
its population variance). Gates are in the order (z, r, h); with
`reset_after=True`:

$$\mathrm{LN}(v) = \gamma \frac{v - \bar v}{\sqrt{\mathrm{var}(v) + \epsilon}} + \beta$$
$$z_t = \sigma(\mathrm{LN}^x_z(x_t W_z) + b_z + \mathrm{LN}^h_z(h_{t-1} R_z) + rb_z)$$
$$r_t = \sigma(\mathrm{LN}^x_r(x_t W_r) + b_r + \mathrm{LN}^h_r(h_{t-1} R_r) + rb_r)$$
$$\hat h_t = \tanh(\mathrm{LN}^x_h(x_t W_h) + b_h +
r_t \odot (\mathrm{LN}^h_h(h_{t-1} R_h) + rb_h))$$
$$h_t = z_t \odot h_{t-1} + (1 - z_t) \odot \hat h_t$$

Whatever the scale of the inputs, of the weights or of the state, each
gate's pre-activations start from mean 0 and variance 1 at every step, and
the gains $\gamma$ (initialized to 1) and shifts $\beta$ (to 0) learn
the scale that suits. It matters on long sequences, where what reaches the
gates drifts from step to step. The 8 rows of a digit are too short for it:
in short trials on the digits (8 rows, or 64 single pixels) the two trained
about alike. So this section takes the classic long-memory benchmark, the
**adding problem** (Hochreiter & Schmidhuber 1997): 100 steps of two
features, a random value in [0, 1] and a marker that is 1 at two steps (one
in each half) and 0 elsewhere; the target is the sum of the two marked
values. Always answering the mean, 1, scores a mean squared error of
$1/6 \approx 0.167$: a model below that has learnt to find the marks and
hold a value for up to 100 steps.

The same model twice, GRU(32) and a Dense(1), with the same initial
weights: the layer-normalized one gets the plain one's kernel, recurrent
kernel and bias, and its own gains and shifts start at 1 and 0. Both are
trained the same way, with the optimizer of the digits above (Adam, 3e-3).
"""),
    code("""
import time
import numpy as np
import keras_gru_plus

def adding_problem(n, steps, rng):
    values = rng.uniform(size=(n, steps)).astype("float32")
    marks = np.zeros((n, steps), "float32")
    rows = np.arange(n)
    marks[rows, rng.integers(0, steps // 2, n)] = 1
    marks[rows, rng.integers(steps // 2, steps, n)] = 1
    return np.stack([values, marks], -1), (values * marks).sum(1, keepdims=True)

rng = np.random.default_rng(0)
xa_train, ya_train = adding_problem(2000, 100, rng)
xa_test, ya_test = adding_problem(500, 100, rng)

EPOCHS = 6

def adding_model(layer_norm):
    model = keras.Sequential([keras.Input((100, 2)),
                              keras_gru_plus.GRU(32, layer_norm=layer_norm),
                              keras.layers.Dense(1)])
    model.compile(keras.optimizers.Adam(3e-3), "mse")
    return model

keras.utils.set_random_seed(0)
models = {"plain": adding_model(False), "layer_norm=True": adding_model(True)}
plain_gru, ln_gru = models["plain"].layers[0], models["layer_norm=True"].layers[0]
# Shared kernel, recurrent_kernel, bias; the LN layer keeps gamma = 1, beta = 0.
ln_gru.set_weights(plain_gru.get_weights() + ln_gru.get_weights()[3:])
models["layer_norm=True"].layers[1].set_weights(models["plain"].layers[1].get_weights())
print("GRU weights: plain", plain_gru.count_params(), "| layer_norm=True",
      ln_gru.count_params(), [tuple(w.shape) for w in ln_gru.weights[3:]])

adding = {}
for name, model in models.items():
    keras.utils.set_random_seed(0)
    start = time.perf_counter()
    history = model.fit(xa_train, ya_train, epochs=EPOCHS, batch_size=32,
                        validation_data=(xa_test, ya_test), verbose=0)
    adding[name] = dict(history.history, seconds=time.perf_counter() - start)
"""),
    code("""
fig, axes = plt.subplots(1, 2, figsize=(11, 3.5), sharey=True)
epochs = np.arange(1, EPOCHS + 1)
for name, h in adding.items():
    axes[0].plot(epochs, h["loss"], "o-", label=name)
    axes[1].plot(epochs, h["val_loss"], "o-", label=name)
for ax, title in zip(axes, ("training loss (MSE)", "held-out MSE")):
    ax.axhline(1 / 6, color="gray", linestyle="--", label="always 1 (1/6)")
    ax.set_yscale("log"); ax.set_xlabel("epoch"); ax.set_title(title); ax.legend()
plt.show()
for name, h in adding.items():
    below = [e for e, v in zip(epochs, h["val_loss"]) if v < 0.01]
    print(f"{name:<16} held-out MSE by epoch: "
          + " ".join(f"{v:.3f}" for v in h["val_loss"])
          + f" | first below 0.01 at epoch {below[0] if below else '-'}"
          + f" | last training loss {h['loss'][-1]:.3f}"
          + f" | {h['seconds']:.1f} s (compilation included)")
"""),
    md("""
The plain GRU sits on the plateau of the constant answer for all 6 epochs:
after the first, its training loss and its held-out MSE stay at 0.16 to
0.17, the score of always answering 1. The layer-normalized one, from the
same weights, leaves it at once: a held-out MSE of about 0.13 after the
first epoch and below 0.01 from the second on (the figures are printed
above), a typical error of less than 0.1 on a sum between 0 and 2. Other
seeds (of the weights and of the data) give the same picture: the
layer-normalized GRU below 0.01 by the second or third epoch, the plain one
still on the plateau. It is a matter of speed, not of capacity: with a
larger learning rate, or more epochs, the plain GRU gets off the plateau
too, later.

The option costs weights and time. Weights: four vectors of `3 * units`
(`input_norm_gamma`, `input_norm_beta`, `recurrent_norm_gamma`,
`recurrent_norm_beta`, gate order z, r, h), here 384 on top of 3,456.
Time: a mean and a variance per gate, twice per step, forward and backward;
the `layer_norm` row of the benchmark in the README (Speed) measures it
against our plain layer and against a layer-normalized cell written for
`keras.layers.RNN`, on each backend. The seconds printed above are one
short run each, with compilation, on this machine: not a benchmark.
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
        # The `user:` rows (no static batch size, Adam, masks from layers),
        # from the run that measured them (`benchmark.user_report`).
        users = [u for u in map(benchmark.user_report, group) if u]
        if users:
            print(f"{title}, the models users write:")
            user_png = png.replace(".png", "_user.png")
            benchmark.plot(users, user_png)
            display(Image(user_png))
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
