"""Faults and limits: damaged files, bad configs and weights, long
sequences, memory growth with sequence length, statefulness in `fit` and
`predict`."""

import json
import os
import subprocess
import sys
import zipfile

import keras
import numpy as np
import pytest

import keras_gru_plus
from tests import reference
from tests.helpers import BACKEND
from tests.helpers import to_numpy
from tests.helpers import twin_layers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# Saving faults.


def _small_model():
    model = keras.Sequential(
        [
            keras.Input((6, 4)),
            keras_gru_plus.GRU(5, return_sequences=True),
            keras_gru_plus.GRU(3, reset_after=False),
            keras.layers.Dense(2),
        ]
    )
    rng = np.random.default_rng(0)
    model.set_weights(
        [
            rng.normal(scale=0.4, size=w.shape).astype("float32")
            for w in model.get_weights()
        ]
    )
    return model


def _saved(tmp_path):
    model = _small_model()
    path = str(tmp_path / "model.keras")
    model.save(path)
    return model, path


def _assert_load_fails_cleanly(path, model, weights_before):
    with pytest.raises(Exception) as info:
        keras.saving.load_model(path)
    # A Python exception with a message, not a crash of the interpreter.
    assert isinstance(info.value, Exception)
    assert str(info.value).strip(), repr(info.value)
    for a, b in zip(model.get_weights(), weights_before):
        np.testing.assert_array_equal(a, b)


def test_truncated_keras_file_raises(tmp_path):
    model, path = _saved(tmp_path)
    before = model.get_weights()
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2])
    # Without its central directory the file is no zip. Keras' message
    # reads "File not found: filepath=... Please ensure the file is an
    # accessible `.keras` zip file." (the file exists; it is damaged).
    with pytest.raises(ValueError, match=r"\.keras"):
        keras.saving.load_model(path)
    _assert_load_fails_cleanly(path, model, before)


def _member_span(path, name):
    """Byte range of a stored (uncompressed) zip member's data."""
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo(name)
        assert info.compress_type == zipfile.ZIP_STORED
    with open(path, "rb") as f:
        f.seek(info.header_offset + 26)
        name_len, extra_len = np.frombuffer(f.read(4), "<u2")
    start = info.header_offset + 30 + int(name_len) + int(extra_len)
    return start, start + info.compress_size


def _flip(path, start, stop, count=16):
    with open(path, "rb") as f:
        data = bytearray(f.read())
    for i in np.linspace(start, stop - 1, count).astype(int):
        data[i] ^= 0xFF
    with open(path, "wb") as f:
        f.write(bytes(data))


def test_corrupted_config_in_keras_file_raises(tmp_path):
    model, path = _saved(tmp_path)
    before = model.get_weights()
    _flip(path, *_member_span(path, "config.json"))
    # The zip's CRC-32 check catches it when the config is read.
    with pytest.raises(zipfile.BadZipFile, match="CRC"):
        keras.saving.load_model(path)
    _assert_load_fails_cleanly(path, model, before)


@pytest.mark.parametrize("where", [0.0, 0.5, 0.95])
def test_corrupted_weights_in_keras_file_raise(tmp_path, where):
    """Bytes flipped in the HDF5 weights member (its superblock, middle or
    end): the load is refused, so no damaged weights load.

    The zip's CRC-32 check refuses it. Only a damaged superblock may be
    refused by h5py first: where Keras falls back to reading the member
    through the zip file (it does after a failed in-memory read), h5py
    reads the file signature before the zip reaches the end of the member
    and its check (seen with another h5py version).
    """
    model, path = _saved(tmp_path)
    before = model.get_weights()
    start, stop = _member_span(path, "model.weights.h5")
    at = start + int((stop - start) * where)
    _flip(path, at, min(at + 64, stop))
    if where == 0.0:
        refused = pytest.raises(
            (zipfile.BadZipFile, OSError), match="CRC|file signature not found"
        )
    else:
        refused = pytest.raises(zipfile.BadZipFile, match="CRC")
    with refused:
        keras.saving.load_model(path)
    _assert_load_fails_cleanly(path, model, before)


def test_from_config_with_unknown_key_raises_type_error():
    config = keras_gru_plus.GRU(4).get_config()
    config["not_an_argument"] = 3
    with pytest.raises(TypeError, match="`not_an_argument`"):
        keras_gru_plus.GRU.from_config(config)


@pytest.mark.parametrize("bad_index", [0, 1, 2])
def test_set_weights_with_wrong_shape_changes_nothing(bad_index):
    """A weight of the wrong shape raises ValueError; no weight changes.

    `keras.Layer.set_weights` (what keras.layers.GRU uses) assigns one
    weight at a time, so there the weights before the bad one are already
    replaced when it raises; ours checks every shape first.
    """
    shape = (2, 5, 4)
    ours, theirs, weights = twin_layers(shape, dict(units=3))
    new = [w + 1.0 for w in weights]
    new[bad_index] = np.zeros(new[bad_index].shape + (1,), "float32")
    with pytest.raises(ValueError, match=r"shape.*No weight was changed"):
        ours.set_weights(new)
    for o, w in zip(ours.get_weights(), weights):
        np.testing.assert_array_equal(o, w)
    with pytest.raises(ValueError, match="shape"):
        theirs.set_weights(new)
    for i, t in enumerate(theirs.get_weights()):
        # The built-in's partial assignment, for the record.
        np.testing.assert_array_equal(t, new[i] if i < bad_index else weights[i])
    with pytest.raises(ValueError, match="expected a list of 3"):
        ours.set_weights(new[:2])


# Long sequences.


def test_fit_on_ten_thousand_steps():
    rng = np.random.default_rng(0)
    steps = 10_000
    x = rng.normal(size=(8, steps, 3)).astype("float32")
    y = rng.normal(size=(8, 1)).astype("float32")
    model = keras.Sequential(
        [
            keras.Input((steps, 3)),
            keras_gru_plus.GRU(8),
            keras.layers.Dense(1),
        ]
    )
    model.compile(keras.optimizers.SGD(0.01), "mse")
    history = model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    loss = history.history["loss"][-1]
    assert np.isfinite(loss), loss
    assert all(np.isfinite(w).all() for w in model.get_weights())


# Memory against sequence length.

_MEMORY_SCRIPT = r"""
import json, resource, sys
sys.path.insert(0, %(root)r)
import numpy as np
import keras
import keras_gru_plus


def status_kib(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])


steps = int(sys.argv[1])
rng = np.random.default_rng(0)
x = rng.normal(size=(8, steps, 32)).astype("float32")
y = rng.normal(size=(8, 1)).astype("float32")
model = keras.Sequential([
    keras.Input((steps, 32)),
    keras_gru_plus.GRU(64),
    keras.layers.Dense(1),
])
model.compile(keras.optimizers.SGD(0.01), "mse")
# Reset the peak (VmHWM) to the resident set now (Linux >= 4.0), so that
# transients of the imports and of building the model do not count.
try:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
except OSError:
    pass
before = status_kib("VmRSS")
losses = [float(model.train_on_batch(x, y)) for _ in range(2)]
peak = status_kib("VmHWM")
print(json.dumps({
    "growth_mb": (peak - before) / 1024.0, "peak_mb": peak / 1024.0,
    "ru_maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    / 1024.0, "losses": losses,
}))
"""


def _rss_growth_mb(steps):
    """Peak RSS growth (MB) of two training steps, in a fresh process."""
    env = dict(os.environ, KERAS_BACKEND=BACKEND, TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run(
        [sys.executable, "-c", _MEMORY_SCRIPT % {"root": ROOT}, str(steps)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert all(np.isfinite(report["losses"])), report
    return report["growth_mb"], report["peak_mb"], report["ru_maxrss_mb"]


@pytest.mark.slow
@pytest.mark.skipif(
    not sys.platform.startswith("linux"),
    reason="reads the peak resident set from /proc",
)
def test_training_memory_grows_linearly_with_sequence_length():
    # The growth of the peak resident set over the resident set just before
    # training covers the compiled step, the sequence stored for the
    # backward pass and the gradients. The part that does not depend on
    # the length (compilation, allocator pools) only makes the ratio
    # smaller; a quadratic cost would be 16x, linear is 4x. Measured on a
    # 2-core CPU machine the ratio is 2.5x (JAX) to 4x (TensorFlow,
    # PyTorch), steady from run to run: no larger T needed.
    #
    # Not `resource.getrusage(...).ru_maxrss`: on Linux a child started by
    # `subprocess` inherits its parent's peak (the kernel carries it over
    # fork and exec), so under pytest, whose process holds 0.4-2 GB by
    # then, it reported the parent's peak and no growth at all. The
    # child's own peak is VmHWM in /proc/self/status, reset before
    # training; ru_maxrss is only printed.
    short, long = 2_000, 8_000
    g_short, peak_short, ru_short = _rss_growth_mb(short)
    g_long, peak_long, ru_long = _rss_growth_mb(long)
    print(
        f"\n[{BACKEND}] peak RSS growth of 2 training steps: "
        f"T={short}: {g_short:.1f} MB (peak {peak_short:.1f} MB, "
        f"ru_maxrss {ru_short:.1f} MB), T={long}: {g_long:.1f} MB "
        f"(peak {peak_long:.1f} MB, ru_maxrss {ru_long:.1f} MB)"
    )
    # The measure sees the stored sequence at all (it did not with the
    # inherited ru_maxrss), and the growth is not quadratic.
    assert g_long > g_short, (g_short, g_long)
    assert g_long <= (long / short) * g_short * 1.5 + 64, (g_short, g_long)


# Statefulness in `predict` and `fit`.

T, F, U = 5, 4, 3


def _stateful_twins(seed=0):
    """A stateful model with ours and one with keras.layers.GRU, same
    weights (GRU only: the output is the last state)."""

    def build(cls):
        return keras.Sequential(
            [keras.Input((T, F), batch_size=2), cls(U, stateful=True)]
        )

    ours, theirs = build(keras_gru_plus.GRU), build(keras.layers.GRU)
    rng = np.random.default_rng(seed)
    weights = [
        rng.normal(scale=0.4, size=w.shape).astype("float32")
        for w in theirs.get_weights()
    ]
    ours.set_weights(weights)
    theirs.set_weights(weights)
    return ours, theirs, weights


def _chained_reference(x, weights, batch_size=2):
    """The reference over consecutive batches, each starting from the
    previous batch's final state: (last outputs, final state)."""
    state, lasts = np.zeros((batch_size, U)), []
    for start in range(0, len(x), batch_size):
        _, last, state = reference.gru_sequence(
            x[start : start + batch_size], *weights, initial_state=state
        )
        lasts.append(last)
    return np.concatenate(lasts), state


def _state(model):
    return to_numpy(model.layers[0].states[0])


def _carries(model):
    """Whether the backend's compiled step wrote the state variable back
    (not on JAX, where `predict` and `fit` run statelessly and the state
    variable, which is not a tracked weight, stays as it was)."""
    return bool(np.abs(_state(model)).sum() > 0)


def test_stateful_predict_matches_keras_and_resets():
    ours, theirs, weights = _stateful_twins()
    x = np.random.default_rng(1).normal(size=(4, T, F)).astype("float32")
    our_pred = ours.predict(x, batch_size=2, verbose=0)
    their_pred = theirs.predict(x, batch_size=2, verbose=0)
    np.testing.assert_allclose(our_pred, their_pred, atol=1e-5)
    np.testing.assert_allclose(_state(ours), _state(theirs), atol=1e-5)
    assert _carries(ours) == _carries(theirs)
    assert _carries(ours) == (BACKEND != "jax")

    chained_last, chained_state = _chained_reference(x, weights)
    if _carries(theirs):
        # The second batch starts from the first batch's final state.
        np.testing.assert_allclose(our_pred, chained_last, atol=1e-5)
        np.testing.assert_allclose(_state(ours), chained_state, atol=1e-5)
    else:
        # Each batch starts from the state the variable held (zeros).
        separate = np.concatenate(
            [reference.gru_sequence(x[i : i + 2], *weights)[1] for i in (0, 2)]
        )
        np.testing.assert_allclose(our_pred, separate, atol=1e-5)

    # Eager calls update the state on every backend; both resets zero it.
    layer = ours.layers[0]
    for reset in (layer.reset_states, layer.reset_state):
        layer(x[:2])
        assert np.abs(to_numpy(layer.states[0])).sum() > 0
        reset()
        np.testing.assert_array_equal(to_numpy(layer.states[0]), 0)


def test_stateful_fit_without_shuffle_matches_keras():
    """`fit(shuffle=False)` over two batches with a learning rate of zero
    (so the weights stay put and the reference applies): the final state
    is the chained reference's where the backend carries state."""
    ours, theirs, weights = _stateful_twins(seed=2)
    rng = np.random.default_rng(3)
    x = rng.normal(size=(4, T, F)).astype("float32")
    y = rng.normal(size=(4, U)).astype("float32")
    for model in (ours, theirs):
        model.compile(keras.optimizers.SGD(0.0), "mse")
    ours.fit(x, y, batch_size=2, shuffle=False, epochs=1, verbose=0)
    expected = (
        _chained_reference(x, weights)[1] if BACKEND != "jax" else np.zeros((2, U))
    )
    np.testing.assert_allclose(_state(ours), expected, atol=1e-5)
    if BACKEND == "torch":
        # keras.layers.GRU's own backward fails with `stateful=True` on
        # PyTorch (it assigns the state in place while autograd still needs
        # it; see test_parity.py): compare with the reference only.
        with pytest.raises(RuntimeError, match="inplace"):
            theirs.fit(x, y, batch_size=2, shuffle=False, epochs=1, verbose=0)
    else:
        theirs.fit(x, y, batch_size=2, shuffle=False, epochs=1, verbose=0)
        np.testing.assert_allclose(_state(ours), _state(theirs), atol=1e-5)
    ours.layers[0].reset_states()
    np.testing.assert_array_equal(_state(ours), 0)


@pytest.mark.parametrize("reset_after", [True, False])
def test_stateful_halves_equal_one_stateless_call(reset_after):
    """The core stateful property, with direct calls: the sequence in two
    halves through a stateful layer equals it in one go without state."""
    rng = np.random.default_rng(4)
    x = rng.normal(size=(2, 2 * T, F)).astype("float32")
    kwargs = dict(
        units=U, reset_after=reset_after, return_sequences=True, return_state=True
    )
    whole, theirs, weights = twin_layers((2, 2 * T, F), kwargs)
    stateful = keras_gru_plus.GRU(stateful=True, **kwargs)
    stateful.build((2, T, F))
    stateful.set_weights(weights)
    their_stateful = keras.layers.GRU(stateful=True, **kwargs)
    their_stateful.build((2, T, F))
    their_stateful.set_weights(weights)

    full_seq, full_state = (to_numpy(v) for v in whole(x))
    halves = [
        [to_numpy(v) for v in stateful(x[:, :T])],
        [to_numpy(v) for v in stateful(x[:, T:])],
    ]
    np.testing.assert_allclose(
        np.concatenate([halves[0][0], halves[1][0]], axis=1),
        full_seq,
        atol=1e-5,
    )
    np.testing.assert_allclose(halves[1][1], full_state, atol=1e-5)
    np.testing.assert_allclose(to_numpy(stateful.states[0]), full_state, atol=1e-5)
    # And as the built-in does it, and as the reference says.
    their_halves = [
        [to_numpy(v) for v in their_stateful(x[:, :T])],
        [to_numpy(v) for v in their_stateful(x[:, T:])],
    ]
    for ours_half, their_half in zip(halves, their_halves):
        for o, t in zip(ours_half, their_half):
            np.testing.assert_allclose(o, t, atol=1e-5)
    ref_seq, _, ref_state = reference.gru_sequence(x, *weights, reset_after=reset_after)
    np.testing.assert_allclose(full_seq, ref_seq, atol=1e-5)
    np.testing.assert_allclose(full_state, ref_state, atol=1e-5)
    stateful.reset_state()
    np.testing.assert_array_equal(to_numpy(stateful.states[0]), 0)
    np.testing.assert_allclose(
        to_numpy(stateful(x[:, :T])[0]), full_seq[:, :T], atol=1e-5
    )
