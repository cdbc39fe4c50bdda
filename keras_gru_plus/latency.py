"""The `streaming` rows of the benchmark: microseconds per step of a model
served one time step at a time.

Ours is the compiled step model (`step_function(step_model(model))`), the
state passed in and out; the anchor is what Keras offers for the same job,
a `stateful=True` `keras.layers.GRU` called on one-step sequences with
`predict_on_batch` (its compiled path), the state kept in its variables;
on PyTorch also `torch.nn.GRUCell` under `torch.no_grad()`. Our step model
through `predict_on_batch` is timed too, to show what the compiled call
saves. All with the same weights, 64 features, 128 units, in one process,
interleaved (`benchmark.time_interleaved`).
"""

import keras
import numpy as np

from keras_gru_plus.gru import GRU
from keras_gru_plus.step_function import step_function
from keras_gru_plus.step_model import initial_states
from keras_gru_plus.step_model import step_model

FEATURES, UNITS = 64, 128
BATCHES = (1, 32)
# Steps per timed call: one call of a few microseconds is below the
# timer's resolution on a busy machine.
STEPS_PER_CALL = 50

TITLE = (
    "Streaming (one step per call, 64 features, 128 units): microseconds per"
    " step; ours is `step_function(step_model(model))`, the state passed in"
    " and out, against a `stateful=True` `keras.layers.GRU` called on"
    " one-step sequences (`predict_on_batch`)"
)


def _stepper(fn):
    """A callable running `fn` `STEPS_PER_CALL` times."""

    def run():
        for _ in range(STEPS_PER_CALL):
            fn()

    return run


def _calls(batch):
    """`{name: one step}` for the layers timed at `batch`, same weights."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((None, FEATURES)), GRU(UNITS)])
    stateful = keras.Sequential(
        [
            keras.Input((1, FEATURES), batch_size=batch),
            keras.layers.GRU(UNITS, stateful=True),
        ]
    )
    stateful.set_weights(model.get_weights())
    step = step_model(model)
    run = step_function(step)
    x = np.random.default_rng(0).normal(size=(batch, FEATURES)).astype("float32")
    carried = {"ours": initial_states(step, batch), "predict": None}
    carried["predict"] = list(carried["ours"])

    def ours():
        _, *carried["ours"] = run([x, *carried["ours"]])

    def ours_predict_on_batch():
        _, *carried["predict"] = step.predict_on_batch([x, *carried["predict"]])

    one_step = x[:, None]
    calls = {
        "ours_us": ours,
        "ours_predict_on_batch_us": ours_predict_on_batch,
        "keras_stateful_us": lambda: stateful.predict_on_batch(one_step),
    }
    from keras_gru_plus.benchmark import torch_cell_anchor

    anchor = torch_cell_anchor(x, UNITS)
    if anchor is not None:
        calls["torch_gru_cell_us"] = anchor
    return calls


def measure(repeats=9, progress=print):
    """`{"batch 1": {...}, "batch 32": {...}}`: microseconds per step of
    each call (`_calls`), and the ratios ours / each anchor."""
    from keras_gru_plus.benchmark import time_interleaved

    rows = {}
    for batch in BATCHES:
        calls = _calls(batch)
        times = time_interleaved([_stepper(c) for c in calls.values()], repeats=repeats)
        row = {
            name: 1e6 * t / STEPS_PER_CALL for name, t in zip(calls, times, strict=True)
        }
        row["ratio"] = row["ours_us"] / row["keras_stateful_us"]
        if "torch_gru_cell_us" in row:
            row["ratio_torch"] = row["ours_us"] / row["torch_gru_cell_us"]
        rows[f"batch {batch}"] = row
        progress(
            f"    streaming batch {batch:<3} ours {row['ours_us']:7.0f} us  "
            f"keras stateful {row['keras_stateful_us']:7.0f} us  "
            f"ratio {row['ratio']:.2f}"
        )
    return rows


def format_table(rows):
    """The Markdown table of `measure`'s rows."""
    lines = [
        TITLE + ":",
        "",
        "| batch | ours us | ours via predict_on_batch us | keras stateful us |"
        " ours/keras | torch.nn.GRUCell us | ours/torch |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in rows.items():
        torch_us = r.get("torch_gru_cell_us")
        lines.append(
            f"| {name.split()[-1]} | {r['ours_us']:.0f} | "
            f"{r['ours_predict_on_batch_us']:.0f} | {r['keras_stateful_us']:.0f} | "
            f"{r['ratio']:.2f} | "
            + (
                f"{torch_us:.0f} | {r['ratio_torch']:.2f} |"
                if torch_us is not None
                else "- | - |"
            )
        )
    return "\n".join(lines)
