"""`python -m keras_gru_plus check`: parity self-test on the current backend.

Runs `keras_gru_plus.GRU` and `keras.layers.GRU` with the same weights over
a grid of configurations and prints the largest differences of the outputs
and of the gradients, one line per configuration as it finishes. Both
layers sit in one model per configuration (one compiled prediction and one
compiled training step serve both: compiling is most of the time on JAX
and TensorFlow). Gradients are read off one plain SGD step
(`learning_rate=1`, so the update is the gradient) through Keras' own
training loop, which keeps this module free of backend imports; the
gradient with respect to the inputs comes from a zero-initialised
trainable offset added to them.

The grid varies the arguments of `AXES` (and two things that are not layer
arguments: the kind of mask fed, and the block sizes of the engine's
policy the configuration runs under, `BLOCKS`). Two grids:

- `default_grid(backend)` (`check`): every pair of values of any two
  axes in at least one configuration (a pairwise covering grid), plus
  whatever configurations of the full grid it takes for every engine path
  (`engine_paths`: the plan `policy.plan` picks for prediction and for
  training, masked or not, and the step groups of its loops) that the full
  grid reaches on the backend's policy to be reached as well: 12 to 15
  configurations.
- `full_grid()` (`check --full`): every combination of the axes that pick
  the engine's loops (`ENGINE_AXES`), and each value of the other axes
  against every mask kind and both formulas: 132 configurations.

Configurations where `keras.layers.GRU` itself fails on the backend
(`KERAS_FAILURES`) are skipped, and the default grid holds none.

Not covered here, since `keras.layers.GRU` cannot take part: dropout (the
two layers draw different masks), `layer_norm` and `time_major` (Keras 3
has neither); the test suite covers them.

On a GPU, float32 matrix products may run in TF32 (about 1e-3 relative
error): JAX does so by default, and cuDNN, which `keras.layers.GRU` takes
on PyTorch, as well. The two layers then differ by more than the
tolerance for reasons outside both; `full_precision=True`
(`check --full-precision`) turns TF32 off for the whole process.
"""

import contextlib
import dataclasses
import functools
import importlib
import itertools
import time

import keras
import numpy as np

from keras_gru_plus import policy
from keras_gru_plus import recurrence
from keras_gru_plus.gru import GRU

TOLERANCE = 1e-5
BATCH, TIME, FEATURES, UNITS = 3, 9, 4, 5

# The axes of the grids: each name, its values, the first one Keras'
# default. All but `mask` and `blocks` are arguments of both layers.
# `mask`: no mask, each row's end cut off ("right", as padding does), or
# random holes. `activation="softsign"` has no hand-written slope in
# `bptt`, so its training runs the autodiff runner.
AXES = {
    "mask": ("none", "right", "holes"),
    "blocks": ("one", "short", "long"),
    "activation": ("tanh", "relu", "softsign"),
    "reset_after": (True, False),
    "go_backwards": (False, True),
    "return_sequences": (False, True),
    "unroll": (False, True),
    "use_bias": (True, False),
    "recurrent_activation": ("sigmoid", "hard_sigmoid"),
    "zero_output_for_mask": (False, True),
    "return_state": (False, True),
}

# The block sizes each `blocks` value runs under (`policy.override`),
# scaled to the check's `TIME` = 9 steps the way the tests' `resize`
# fixture does, so that the loops over blocks run on small inputs: "one"
# is the backend's policy as it is (9 steps are one block there); "short"
# cuts them into blocks of 2 (4 blocks and a rest of 1) where the policy
# has short blocks, and the step-projecting loops into blocks of 2 unrolled
# steps where it has those; "long" into long blocks of 4 (2 blocks and a
# rest of 1), their indexed loops in groups of 2 steps where the policy
# groups steps. A size the backend's policy leaves off (`None`) stays off.
BLOCKS = {
    "one": {},
    "short": {"short_block_steps": 2, "sequence_block_steps": 2},
    "long": {"block_steps": 4, "step_groups": 2},
}

# The axes that choose the engine's loops and runners; `full_grid` takes
# every combination of them.
ENGINE_AXES = (
    "mask",
    "blocks",
    "reset_after",
    "go_backwards",
    "return_sequences",
    "unroll",
)

# The axes that are not GRU arguments.
_NOT_ARGUMENTS = ("mask", "blocks")


class _InputOffset(keras.Layer):
    """Adds a trainable zero tensor to the inputs: its gradient is dL/dx."""

    def build(self, input_shape):
        self.offset = self.add_weight(
            shape=tuple(input_shape), initializer="zeros", name="offset"
        )

    def call(self, inputs):
        return inputs + self.offset


def _configuration(values):
    """`(kwargs, mask_kind)` of a dict of axis values, as `configurations`
    yields it: the GRU arguments that differ from the defaults, and
    `blocks` among them when it is not "one"."""
    kwargs = {
        name: values[name]
        for name in AXES
        if name != "mask" and name in values and values[name] != AXES[name][0]
    }
    return kwargs, values.get("mask", "none")


def _values(kwargs, mask_kind):
    """The value of every axis in a configuration (defaults filled in)."""
    values = {name: choices[0] for name, choices in AXES.items()}
    values.update(kwargs, mask=mask_kind)
    return values


@functools.cache
def full_grid():
    """`check --full`: a tuple of `(kwargs, mask_kind)`.

    Every combination of the values of `ENGINE_AXES` (the other axes at
    their defaults) but `unroll=True` with other block sizes (`_excluded`),
    then each non-default value of each other axis against every mask kind
    and both formulas (`reset_after`).
    """
    rows = []
    for combination in itertools.product(*(AXES[name] for name in ENGINE_AXES)):
        values = dict(zip(ENGINE_AXES, combination))
        if not _excluded(_values({}, "none") | values, "full"):
            rows.append(_configuration(values))
    for name in AXES:
        if name in ENGINE_AXES:
            continue
        for value in AXES[name][1:]:
            for mask, reset_after in itertools.product(
                AXES["mask"], AXES["reset_after"]
            ):
                rows.append(
                    _configuration(
                        {name: value, "mask": mask, "reset_after": reset_after}
                    )
                )
    return tuple(rows)


# Where `keras.layers.GRU` itself fails, by backend: the condition on a
# configuration's values, and what it does there. Those configurations are
# skipped on that backend, and the default grid holds none of them.
KERAS_FAILURES = (
    (
        "torch",
        lambda v: v["mask"] != "none" and v["go_backwards"] and v["unroll"],
        "keras.layers.GRU raises here (PyTorch, mask+unroll+backwards)",
    ),
    (
        "jax",
        lambda v: v["mask"] != "none" and v["unroll"] and v["zero_output_for_mask"],
        "keras.layers.GRU ignores zero_output_for_mask when unrolled on JAX "
        "(masked steps repeat the previous output)",
    ),
)


def _fails_in_keras(values, backend):
    """Why `keras.layers.GRU` fails in this configuration on `backend`
    (`None`: on any backend), or `None` if it does not."""
    for where, condition, reason in KERAS_FAILURES:
        if backend in (None, where) and condition(values):
            return reason
    return None


def _pairwise(axes, excluded):
    """A pairwise covering grid of `axes` (name -> values): rows (dicts)
    such that every value of any axis meets every value of any other axis
    in at least one row, and no row is `excluded(row)`.

    Greedy and deterministic: each row starts from the first pair not yet
    covered, then takes, axis by axis, the value that covers the most new
    pairs with the values already chosen (the first such value on ties)
    among those that keep the row allowed. `excluded` must accept partial
    rows; a pair it forbids on its own is not asked for.
    """
    names = list(axes)
    uncovered = [
        (a, va, b, vb)
        for i, a in enumerate(names)
        for b in names[i + 1 :]
        for va in axes[a]
        for vb in axes[b]
        if not excluded({a: va, b: vb})
    ]
    rows = []
    while uncovered:
        a, va, b, vb = uncovered[0]
        row = {a: va, b: vb}
        for name in names:
            if name in row:
                continue
            best, best_gain = None, -1
            for value in axes[name]:
                candidate = dict(row, **{name: value})
                if excluded(candidate):
                    continue
                gain = sum(
                    (x, vx, y, vy) in uncovered
                    for (x, vx, y, vy) in _pairs_with(names, candidate, name)
                )
                if gain > best_gain:
                    best, best_gain = value, gain
            row[name] = best
        rows.append(row)
        covered = set(_row_pairs(names, row))
        uncovered = [pair for pair in uncovered if pair not in covered]
    return rows


def _pairs_with(names, row, name):
    """The pairs `(a, va, b, vb)` (a before b in `names`) of `row` that
    involve `name`."""
    for other in names:
        if other == name or other not in row:
            continue
        first, second = sorted((name, other), key=names.index)
        yield first, row[first], second, row[second]


def _row_pairs(names, row):
    """Every pair `(a, va, b, vb)` (a before b in `names`) of a full row."""
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            yield a, row[a], b, row[b]


def _excluded(values, backend=None):
    """Configurations no grid holds: an unrolled loop under other block
    sizes (it has no blocks: the same run as with "one"), and, for
    `_pairwise`, those where `keras.layers.GRU` fails (`_fails_in_keras`)."""
    if values["unroll"] and values["blocks"] != "one":
        return True
    return backend != "full" and _fails_in_keras(values, backend) is not None


def _partial_excluded(row):
    """`_excluded` on any backend, for rows still being filled."""
    return _excluded(_values({}, "none") | row)


@functools.cache
def default_grid(backend=None):
    """`check`: a tuple of `(kwargs, mask_kind)`, far smaller than the full
    grid and drawn from the same values.

    A pairwise covering grid of `AXES` (`_pairwise`; no configuration
    where `keras.layers.GRU` fails on some backend), then the first
    configuration of `full_grid()` (not failing on `backend`) for each
    engine path of the full grid on `backend`'s policy (`engine_paths`)
    that it does not reach yet.

    Args:
        backend: whose policy's engine paths to reach (default: the
            current backend's).
    """
    backend = backend or keras.backend.backend()
    rows = [_configuration(row) for row in _pairwise(AXES, _partial_excluded)]
    reached = set()
    for kwargs, mask_kind in rows:
        reached |= engine_paths(kwargs, mask_kind, backend)
    for kwargs, mask_kind in full_grid():
        if _fails_in_keras(_values(kwargs, mask_kind), backend):
            continue
        new = engine_paths(kwargs, mask_kind, backend) - reached
        if new:
            rows.append((kwargs, mask_kind))
            reached |= new
    return tuple(rows)


def configurations(full=False):
    """Yields the grid, `(kwargs, mask_kind)` per configuration.

    `kwargs` are the GRU arguments that differ from Keras' defaults, with
    `blocks` (a key of `BLOCKS`, not a layer argument) when it is not
    "one"; `compare` takes both as they come.

    Args:
        full: the full grid (`full_grid`) instead of the default
            (`default_grid`).
    """
    yield from full_grid() if full else default_grid(keras.backend.backend())


@contextlib.contextmanager
def block_sizes(name, backend=None):
    """Runs a block under the policy's block sizes of `BLOCKS[name]`.

    Args:
        name: a key of `BLOCKS`.
        backend: the backend whose policy to take (default: the current
            one's); with another backend's, `policy.plan` answers as it
            would there.
    """
    if name not in BLOCKS:
        raise ValueError(
            f"check: blocks={name!r} is not one of {sorted(BLOCKS)} "
            "(the block sizes of `check.BLOCKS`)."
        )
    fields = {}
    if backend is not None:
        fields = dataclasses.asdict(policy.POLICIES[backend])
    base = dataclasses.replace(policy.current(), **fields)
    fields.update(
        {
            key: size
            for key, size in BLOCKS[name].items()
            if getattr(base, key) is not None
        }
    )
    with policy.override(**fields):
        yield


def engine_paths(kwargs, mask_kind, backend=None):
    """The engine paths a configuration runs (on `backend`'s policy).

    A set of `(mode, plan, masked, groups)`: for prediction and for
    training, the `policy.Plan` chosen for `TIME` steps under the
    configuration's block sizes, whether a mask is fed, and the steps per
    group of the indexed loops of the training passes (`None`: no groups).
    Computed from the policy; nothing runs.
    """
    values = _values(kwargs, mask_kind)
    slopes = {"softsign"}.isdisjoint(
        (values["activation"], values["recurrent_activation"])
    )
    paths = set()
    with block_sizes(values["blocks"], backend):
        current = policy.current()
        for mode in ("predict", "train"):
            chosen = policy.plan(
                TIME,
                training=mode == "train",
                return_sequences=values["return_sequences"],
                unroll=values["unroll"],
                known_slopes=slopes,
                gate_can_hold=mask_kind != "none"
                and recurrence.gate_can_hold(
                    keras.activations.get(values["activation"]),
                    keras.activations.get(values["recurrent_activation"]),
                    "float32",
                ),
            )
            groups = None
            if chosen.runner == "bptt" and current.indexed_loops:
                groups = policy.whole_blocks(chosen.block or TIME, current.step_groups)
            paths.add((mode, chosen, mask_kind != "none", groups))
    return paths


def _mask(kind, rng):
    if kind == "none":
        return None
    mask = np.ones((BATCH, TIME), bool)
    if kind == "right":
        mask[1, 5:] = False
        mask[2, 8:] = False
    else:
        mask = rng.random((BATCH, TIME)) > 0.4
        mask[:, 0] = True
    return mask


def _model(configurations):
    """One model with both layers of each configuration side by side.

    Args:
        configurations: `(kwargs, masked)` pairs, `kwargs` the GRU
            arguments, `masked` whether the layers take a mask.

    Returns:
        `(model, branches)`: the model takes `x`, and its mask if
        `masked`, for each configuration in turn; `branches` holds, per
        configuration, the `(offset, gru, n_outputs)` of ours, then of
        `keras.layers.GRU`. The model's outputs are, configuration by
        configuration, ours then theirs (two each with `return_state`).
    """
    inputs, outputs, branches = [], [], []
    for kwargs, masked in configurations:
        x_input = keras.Input((TIME, FEATURES), batch_size=BATCH)
        inputs.append(x_input)
        # A mask input only where the layers take it: Keras before 3.13
        # refuses a model input that no output depends on.
        if masked:
            mask_input = keras.Input((TIME,), batch_size=BATCH, dtype="bool")
            inputs.append(mask_input)
        pair = []
        for gru_cls in (GRU, keras.layers.GRU):
            offset = _InputOffset()
            gru = gru_cls(UNITS, **kwargs)
            x = offset(x_input)
            out = gru(x, mask=mask_input) if masked else gru(x)
            out = list(out) if isinstance(out, (list, tuple)) else [out]
            outputs += out
            pair.append((offset, gru, len(out)))
        branches.append(pair)
    model = keras.Model(inputs, outputs)
    model.compile(
        keras.optimizers.SGD(learning_rate=1.0),
        [lambda probe, y: keras.ops.sum(y * probe)] * len(outputs),
    )
    return model, branches


def compare(kwargs, mask_kind, seed=0):
    """Max |difference| of outputs and gradients for one configuration.

    Args:
        kwargs: GRU arguments, with `blocks` (a key of `BLOCKS`) if the
            configuration runs under other block sizes.
        mask_kind: "none", "right" or "holes".
        seed: seeds the inputs, weights, mask and output weights.

    Returns:
        `(out_diff, grad_diff)`: the largest absolute difference of the
        outputs, and of the gradients relative to the largest gradient
        (at least 1).
    """
    return compare_many([(kwargs, mask_kind)], [seed])[0]


def compare_many(configurations, seeds):
    """`compare` for several configurations at once, in one model.

    One compiled prediction and one compiled training step serve them all,
    which on JAX and TensorFlow takes about half the time of compiling
    them one by one. All must run under the same block sizes.

    Args:
        configurations: `(kwargs, mask_kind)` pairs, as `compare` takes.
        seeds: one seed per configuration.

    Returns:
        A list of `(out_diff, grad_diff)`, one per configuration.
    """
    blocks = {kwargs.get("blocks", "one") for kwargs, _ in configurations}
    if len(blocks) != 1:
        raise ValueError(
            "check.compare_many: configurations must share their `blocks`; "
            f"received blocks {sorted(blocks)}."
        )
    kinds = [mask_kind for _, mask_kind in configurations]
    layer_kwargs = [
        {k: v for k, v in kwargs.items() if k != "blocks"}
        for kwargs, _ in configurations
    ]
    rngs = [np.random.default_rng(seed) for seed in seeds]
    data = []
    for rng, kind in zip(rngs, kinds):
        x = rng.normal(size=(BATCH, TIME, FEATURES)).astype("float32")
        mask = _mask(kind, rng)
        data.append(x)
        if mask is not None:
            data.append(mask)
    model, branches = _model(
        [(kwargs, kind != "none") for kwargs, kind in zip(layer_kwargs, kinds)]
    )
    for rng, ((_, our_gru, _), (_, their_gru, _)) in zip(rngs, branches):
        weights = [
            rng.normal(scale=0.3, size=w.shape).astype("float32")
            for w in their_gru.get_weights()
        ]
        our_gru.set_weights(weights)
        their_gru.set_weights(weights)
    layers = [[part[:2] for part in pair] for pair in branches]
    with block_sizes(blocks.pop()):
        outputs = model.predict_on_batch(data)
        if not isinstance(outputs, (list, tuple)):
            outputs = [outputs]
        probes, position = [], 0
        for rng, ((_, _, n), _) in zip(rngs, branches):
            ours = outputs[position : position + n]
            probe = [rng.normal(size=o.shape).astype("float32") for o in ours]
            probes += probe + probe
            position += 2 * n
        before = _weights_of(layers)
        model.train_on_batch(data, probes)
    after = _weights_of(layers)
    results, position = [], 0
    for i, ((_, _, n), _) in enumerate(branches):
        ours, theirs = outputs[position : position + n], outputs[position + n :]
        position += 2 * n
        out_diff = max(float(np.max(np.abs(a - b))) for a, b in zip(ours, theirs[:n]))
        (our_before, their_before), (our_after, their_after) = before[i], after[i]
        grad_diff = max(
            float(
                np.max(np.abs((b0 - a0) - (b1 - a1)))
                / max(1.0, np.max(np.abs(b1 - a1)))
            )
            for a0, b0, a1, b1 in zip(our_after, our_before, their_after, their_before)
        )
        results.append((out_diff, grad_diff))
    return results


def _weights_of(layers):
    """Per configuration, `(ours, theirs)`: the values of the input
    offset's and the GRU's weights, in order."""
    return [
        tuple(
            [w.copy() for layer in side for w in layer.get_weights()] for side in pair
        )
        for pair in layers
    ]


def _skip_reason(kwargs, mask_kind):
    """Configurations where keras.layers.GRU itself is known to fail."""
    return _fails_in_keras(_values(kwargs, mask_kind), keras.backend.backend())


def use_full_precision():
    """Turns TF32 off for the float32 matrix products of this process."""
    backend = keras.backend.backend()
    if backend == "jax":
        importlib.import_module("jax").config.update(
            "jax_default_matmul_precision", "highest"
        )
    elif backend == "torch":
        torch = importlib.import_module("torch")
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    elif backend == "tensorflow":
        importlib.import_module(
            "tensorflow"
        ).config.experimental.enable_tensor_float_32_execution(False)


def name_of(kwargs, mask_kind):
    """A configuration's name in the table: the mask, then the arguments
    that differ from the defaults."""
    name = ", ".join(f"{k}={v}" for k, v in kwargs.items())
    return f"mask={mask_kind}" + (f", {name}" if name else "")


def _print_header(rows, full, full_precision, threads):
    from keras_gru_plus import benchmark

    gpu = benchmark.accelerator()
    print(
        f"keras_gru_plus check on {keras.backend.backend()}"
        + (f" ({gpu})" if gpu else "")
        + f", keras {keras.__version__}, tolerance {TOLERANCE:g}"
        + (", TF32 off" if full_precision else ""),
        flush=True,
    )
    if threads:
        print(threads)
    if full:
        print(f"The full grid: {len(rows)} configurations.")
    else:
        print(
            f"The default grid: {len(rows)} configurations (every pair of "
            "argument values, every engine path); --full runs all "
            f"{len(full_grid())}."
        )
    if gpu and not full_precision:
        print(
            "On a GPU float32 products may run in TF32 (about 1e-3 "
            "relative); --full-precision turns it off."
        )


# Configurations compiled together (`compare_many`): few enough that a
# group's lines come every few seconds on 2 cores.
GROUP_SIZE = 6


def _groups(rows):
    """The rows that run, in groups for `compare_many`: `(index, kwargs,
    mask_kind)` with the same `blocks`, at most `GROUP_SIZE` each, in the
    order of `BLOCKS`, then of the grid."""
    for blocks in BLOCKS:
        group = [
            (index, kwargs, mask_kind)
            for index, (kwargs, mask_kind) in enumerate(rows, 1)
            if kwargs.get("blocks", "one") == blocks
        ]
        for start in range(0, len(group), GROUP_SIZE):
            yield group[start : start + GROUP_SIZE]


def _measure(group):
    """`compare_many` over a group, `(out_diff, grad_diff)` or the error
    per configuration: if the group fails, each runs alone, so that the
    error is reported for the configuration that raised it."""
    configurations = [(kwargs, mask_kind) for _, kwargs, mask_kind in group]
    seeds = [index for index, _, _ in group]
    try:
        return compare_many(configurations, seeds)
    except Exception as error:  # a failing self-test reports, then goes on
        if len(group) == 1:
            return [f"error: {type(error).__name__}: {error}"]
    return [result for one in group for result in _measure([one])]


def run(verbose=True, full_precision=False, full=False, threads=None):
    """Prints the table; returns the number of configurations over tolerance.

    The configurations run in groups (`_groups`), each group one model;
    each configuration's line is printed, numbered `[done/total]`, as soon
    as its group is measured: the table is the progress report. A
    configuration that raises counts as over tolerance, with its error.

    Args:
        verbose: print the table.
        full_precision: turn TF32 off first (`use_full_precision`); only
            GPUs use it.
        full: the full grid (`check --full`) instead of the default one.
        threads: the lines on the thread count and the memory setting to
            print under the heading (the command line passes them), or
            `None`.
    """
    if full_precision:
        use_full_precision()
    rows = list(configurations(full=full))
    width = len(str(len(rows)))
    header = (
        f"{'':>{2 * width + 3}} {'configuration':<76} {'max|d out|':>11} "
        f"{'max|d grad|':>12}  ok"
    )
    start = time.perf_counter()
    if verbose:
        _print_header(rows, full, full_precision, threads)
        print(header)
        print("-" * len(header), flush=True)
    failures, done = 0, 0

    def report(name, cells):
        nonlocal done
        done += 1
        if verbose:
            print(f"[{done:>{width}}/{len(rows)}] {name:<76} {cells}", flush=True)

    skipped = [(k, m) for k, m in rows if _skip_reason(k, m)]
    for kwargs, mask_kind in skipped:
        reason = _skip_reason(kwargs, mask_kind)
        report(name_of(kwargs, mask_kind), f"{'':>11} {'':>12}  skipped: {reason}")
    runs = [row for row in rows if row not in skipped]
    for group in _groups(runs):
        for (_, kwargs, mask_kind), result in zip(group, _measure(group)):
            if isinstance(result, str):
                failures += 1
                report(name_of(kwargs, mask_kind), f"{'':>11} {'':>12}  {result}")
                continue
            out_diff, grad_diff = result
            ok = out_diff <= TOLERANCE and grad_diff <= TOLERANCE
            failures += not ok
            report(
                name_of(kwargs, mask_kind),
                f"{out_diff:>11.2e} {grad_diff:>12.2e}  {'yes' if ok else 'NO'}",
            )
    if verbose:
        seconds = time.perf_counter() - start
        print(
            f"{len(rows)} configurations, {failures} over tolerance ({seconds:.0f} s)"
        )
    return failures
