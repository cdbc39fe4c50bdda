"""Training by the distributed engines of the three backends, in real
processes on this machine (addressing each other at 127.0.0.1 only, each
run bounded in time: `tests/processes.py`).

Each engine trains the model of `tests/scripts/distributed_model.py` (a
`Masking` input, a `Bidirectional` GRU, a layer-normalized GRU with
`reset_after=False`, every one trained through the hand-written backward
pass, which the scripts report) and must end with the weights of one
process on one device trained on the same global batches. The README's
recipes ("Beyond one machine") run as written. Marked `distributed`:
`-m "not distributed"` leaves them out. Each records how long its
processes took, and the run's summary lists it.

Each engine runs in the suite of its own backend (the session whose
`KERAS_BACKEND` it is), so that a suite installs and runs only its own
engine.
"""

import os
import re
import time

import keras
import numpy as np
import pytest
from packaging.version import Version

import keras_gru_plus  # noqa: F401 (registers the layer for load_model)
from tests import processes
from tests.scripts import distributed_model as shared

pytestmark = pytest.mark.distributed

BACKEND = keras.backend.backend()
# Largest difference allowed between distributed and single-device weights:
# measured 6e-8 on every engine (float32 sums of the parts of a batch in
# another order).
TOLERANCE = 1e-5
# Seconds for one launch of the processes (measured 10-23 s for the
# scripts, 11-43 s for the recipes, on 2 cores with two tests at once).
TIMEOUT = 300


def _on(backend):
    return pytest.mark.skipif(
        BACKEND != backend,
        reason=f"the {backend} engine runs in the suite of KERAS_BACKEND="
        f"{backend}; this suite's backend is {BACKEND}",
    )


# A multi-process `keras.distribution` takes NumPy arrays, each process's
# own part (`auto_shard_dataset = False`), from Keras 3.11 on; Keras 3.10
# takes only a `tf.data.Dataset`, which it shards itself.
ARRAYS_ACROSS_PROCESSES = Version(keras.version()) >= Version("3.11")
JAX_ARRAYS = pytest.mark.skipif(
    not ARRAYS_ACROSS_PROCESSES,
    reason=f"Keras {keras.version()} feeds a multi-process distribution from a "
    "tf.data.Dataset only (NumPy arrays from Keras 3.11 on)",
)


def _weights(path):
    with np.load(path) as saved:
        return [saved[f"arr_{i}"] for i in range(len(saved.files))]


def _largest_difference(a, b):
    assert len(a) == len(b) and len(a) > 0
    assert [x.shape for x in a] == [y.shape for y in b]
    return max(float(np.max(np.abs(x - y))) for x, y in zip(a, b))


def _timed_run(script, runs, cwd=None):
    started = time.perf_counter()
    texts = processes.run(script, runs, TIMEOUT, cwd=cwd)
    return texts, time.perf_counter() - started


_references = {}


def _reference(script, tmp_path_factory):
    """`(weights, facts, seconds)` of `script`'s `single` mode (once per
    script and test process)."""
    if script not in _references:
        out = tmp_path_factory.mktemp("single") / "single.npz"
        ((stdout, _),), seconds = _timed_run(
            script, [(["single", out], processes.environment())]
        )
        _references[script] = _weights(out), processes.facts(stdout), seconds
    return _references[script]


def _compare(script, mode, count, tmp_path, tmp_path_factory, record_property, ports=1):
    """Runs `script` in `mode` as `count` processes (with `ports` ports
    taken just before they start), checks the weights process 0 wrote
    against the single-device reference, and returns `(facts,
    reference_weights)`."""
    single, single_facts, single_seconds = _reference(script, tmp_path_factory)
    out = tmp_path / f"{mode}.npz"
    if count == 1:
        runs = [([mode, out], processes.environment())]
    else:
        listed = ",".join(map(str, processes.free_ports(ports)))
        runs = [
            ([mode, out, rank, count, listed], processes.environment())
            for rank in range(count)
        ]
    texts, seconds = _timed_run(script, runs)
    facts = processes.facts(texts[0][0])
    difference = _largest_difference(_weights(out), single)
    record_property(
        "distributed",
        f"{count} process(es) {seconds:.1f} s (one device {single_seconds:.1f} s), "
        f"largest weight difference {difference:.1e}",
    )
    # Every weight moved in training, so that equal weights mean equal
    # training, and the GRUs trained through the hand-written backward pass.
    for run in (single_facts, facts):
        assert run["smallest_move"] > 1e-4, run
        assert "bptt" in run["runners"], run
    assert difference < TOLERANCE, difference
    return facts, single


@_on("jax")
@JAX_ARRAYS
def test_jax_data_parallel_over_two_processes(
    tmp_path, tmp_path_factory, record_property
):
    """`keras.distribution.initialize` joins two processes (one CPU device
    each, gloo collectives); `DataParallel` over both devices, each process
    feeding its half of each global batch."""
    facts, _ = _compare(
        "jax_processes.py",
        "data_parallel",
        2,
        tmp_path,
        tmp_path_factory,
        record_property,
    )
    assert facts["processes"] == 2 and facts["devices"] == 2
    # Replicated weights: every process holds the whole kernel.
    assert facts["local_kernel_columns"] == 3 * shared.UNITS


@_on("jax")
@JAX_ARRAYS
def test_jax_model_parallel_shards_kernels_across_processes(
    tmp_path, tmp_path_factory, record_property
):
    """`ModelParallel` on a `(1, 2)` mesh over two processes: each process
    holds half the `3 * units` columns of the GRU kernels, and training
    gives the single-device weights. `get_weights()` cannot read a split
    kernel whole (the README's advice: gather, then save a copy)."""
    facts, _ = _compare(
        "jax_processes.py",
        "model_parallel",
        2,
        tmp_path,
        tmp_path_factory,
        record_property,
    )
    assert facts["processes"] == 2
    assert facts["local_kernel_columns"] == 3 * shared.UNITS // 2
    assert "'model'" in facts["kernel_sharding"], facts["kernel_sharding"]
    error = facts["get_weights_error"]
    assert error is not None and "non-addressable" in error, error


@_on("tensorflow")
def test_tensorflow_mirrored_strategy_fit(tmp_path, tmp_path_factory, record_property):
    """`fit` under `tf.distribute.MirroredStrategy` over two logical CPU
    devices of one process."""
    facts, _ = _compare(
        "tf_strategies.py", "mirrored", 1, tmp_path, tmp_path_factory, record_property
    )
    assert facts["replicas"] == 2


@_on("tensorflow")
def test_tensorflow_multi_worker_mirrored_strategy(
    tmp_path, tmp_path_factory, record_property
):
    """Two worker processes of `tf.distribute.MultiWorkerMirroredStrategy`
    (`TF_CONFIG` at 127.0.0.1): the custom loop (`strategy.run`, the hand-
    written backward pass in a replica context, the gradients all-reduced
    by the optimizer) gives the single-device weights of `fit`.

    `fit` itself fails under this strategy in Keras 3, for a model without
    our layer too: the test pins that failure, so that the README's advice
    is revisited on the day Keras trains there.
    """
    facts, _ = _compare(
        "tf_strategies.py",
        "multi_worker",
        2,
        tmp_path,
        tmp_path_factory,
        record_property,
        ports=2,  # one per worker (`TF_CONFIG`)
    )
    assert facts["replicas"] == 2
    error = facts["fit_error"]
    assert error is not None, (
        "fit now trains under MultiWorkerMirroredStrategy (keras-team/keras"
        "#20585 fixed): the README's recipe can use fit"
    )
    assert error.startswith("ValueError") and "PerReplica" in error, error


@_on("torch")
def test_torch_distributed_data_parallel(tmp_path, tmp_path_factory, record_property):
    """Two processes joined by `torch.distributed` (gloo, 127.0.0.1), the
    Keras model inside `DistributedDataParallel` in a custom loop."""
    facts, single = _compare(
        "torch_ddp.py", "ddp", 2, tmp_path, tmp_path_factory, record_property
    )
    assert facts["processes"] == 2
    # DDP holds every weight of the model as a parameter it all-reduces.
    assert facts["ddp_parameters"] == len(single)


README = os.path.join(processes.CHECKOUT, "README.md")
# The README's recipes: `python` code blocks whose first line is
# `# recipe: NAME`, with the backend they run on and their process count.
RECIPES = {
    "jax-data-parallel": ("jax", 2),
    "jax-model-parallel": ("jax", 2),
    "tensorflow-mirrored": ("tensorflow", 1),
    "tensorflow-multi-worker": ("tensorflow", 2),
    "torch-ddp": ("torch", 2),
}
# The addresses the recipes are written with, moved to free ports here.
WRITTEN_ADDRESSES = ("127.0.0.1:12345", "127.0.0.1:12346")


def _recipes():
    """`{name: code}` of the README's recipes."""
    with open(README, encoding="utf-8") as file:
        blocks = re.findall(r"```python\n(.*?)```", file.read(), re.DOTALL)
    return {
        match.group(1): block
        for block in blocks
        if (match := re.match(r"# recipe: (\S+)\n", block))
    }


def test_readme_names_every_recipe():
    recipes = _recipes()
    assert sorted(recipes) == sorted(RECIPES)
    for name, (_, count) in RECIPES.items():
        # A process count of 2 means the recipe's address is where the
        # test moves it from.
        assert (WRITTEN_ADDRESSES[0] in recipes[name]) == (count == 2), name


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_readme_recipes_run_as_written(name, tmp_path, record_property):
    """Each recipe, copied from the README, runs to its end in as many
    processes as it says, its addresses moved to free ports."""
    backend, count = RECIPES[name]
    if BACKEND != backend:
        pytest.skip(
            f"the {backend} recipe runs in the suite of KERAS_BACKEND={backend}; "
            f"this suite's backend is {BACKEND}"
        )
    if backend == "jax" and not ARRAYS_ACROSS_PROCESSES:
        pytest.skip(JAX_ARRAYS.kwargs["reason"])
    code = _recipes()[name]
    ports = processes.free_ports(2)
    for written, port in zip(WRITTEN_ADDRESSES, ports):
        code = code.replace(written, f"127.0.0.1:{port}")
    script = tmp_path / "train.py"
    script.write_text(code, encoding="utf-8")
    env = processes.environment(JAX_COORDINATOR_BIND_ADDRESS=f"127.0.0.1:{ports[0]}")
    texts, seconds = _timed_run(
        str(script), [([rank], env) for rank in range(count)], cwd=str(tmp_path)
    )
    record_property(
        "distributed", f"README recipe, {count} process(es) {seconds:.1f} s"
    )
    # Every process trained 2 epochs (Keras' `verbose=2` lines or the
    # custom loops' own).
    for stdout, _ in texts:
        assert re.search(r"(Epoch 2/2|epoch 2 loss)", stdout, re.IGNORECASE), stdout
    if name == "jax-model-parallel":
        model = keras.saving.load_model(tmp_path / "gru.keras")
        assert model.predict(np.ones((2, 20, 8), "float32"), verbose=0).shape == (2, 1)
