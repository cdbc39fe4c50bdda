"""Training by the distributed engines of the three backends, in real
processes on this machine (127.0.0.1 only, each run bounded in time).

Each engine trains the model of `tests/scripts/distributed_model.py` (a
`Masking` input, a `Bidirectional` GRU, a layer-normalized GRU with
`reset_after=False`, every one trained through the hand-written backward
pass) and must end with the weights of one process on one device trained
on the same global batches. Marked `distributed`: `-m "not distributed"`
skips them. Each records how long its processes took, and the run's
summary lists it.

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

from tests import processes
from tests.scripts import distributed_model as shared

pytestmark = pytest.mark.distributed

BACKEND = keras.backend.backend()
# Largest difference allowed between distributed and single-device weights:
# measured 6e-8 on every engine (float32 sums of two halves of a batch in
# another order).
TOLERANCE = 1e-5
# Seconds for one launch of the processes (measured 9-34 s on 2 cores).
TIMEOUT = 300


def _on(backend):
    return pytest.mark.skipif(
        BACKEND != backend,
        reason=f"the {backend} engine runs in the suite of KERAS_BACKEND="
        f"{backend}; this suite's backend is {BACKEND}",
    )


def _keras_at_least(*version):
    release = re.match(r"(\d+)\.(\d+)", keras.version()).groups()
    return tuple(map(int, release)) >= version


# A multi-process `keras.distribution` takes NumPy arrays, each process's
# own part (`auto_shard_dataset = False`), from Keras 3.11 on; Keras 3.10
# takes only a `tf.data.Dataset`, which it shards itself.
JAX_ARRAYS = pytest.mark.skipif(
    not _keras_at_least(3, 11),
    reason=f"Keras {keras.version()} feeds a multi-process distribution from a "
    "tf.data.Dataset only (NumPy arrays from Keras 3.11 on)",
)


def _weights(path):
    with np.load(path) as saved:
        return [saved[f"arr_{i}"] for i in range(len(saved.files))]


def _largest_difference(a, b):
    assert len(a) == len(b) and len(a) > 0
    return max(float(np.max(np.abs(x - y))) for x, y in zip(a, b))


_references = {}


def _reference(script, tmp_path_factory):
    """`(weights, facts)` of `script`'s `single` mode (once per script)."""
    if script not in _references:
        out = tmp_path_factory.mktemp("single") / "single.npz"
        ((stdout, _),) = processes.run(
            script, [(["single", out], processes.environment())], TIMEOUT
        )
        _references[script] = _weights(out), processes.facts(stdout)
    return _references[script]


def _compare(script, runs, out, tmp_path_factory, record_property):
    """Runs `runs` of `script` and checks the weights process 0 wrote to
    `out` against the single-device reference; returns its facts."""
    single, single_facts = _reference(script, tmp_path_factory)
    started = time.perf_counter()
    texts = processes.run(script, runs, TIMEOUT)
    seconds = time.perf_counter() - started
    facts = processes.facts(texts[0][0])
    difference = _largest_difference(_weights(out), single)
    record_property(
        "distributed",
        f"{len(runs)} process(es) {seconds:.1f} s (single device "
        f"{single_facts['seconds']:.1f} s), largest weight difference "
        f"{difference:.1e}",
    )
    # Training moved the weights, so that equal weights mean equal training.
    assert single_facts["weights_moved"] > 1e-2
    assert difference < TOLERANCE, difference
    return facts


@_on("jax")
@JAX_ARRAYS
def test_jax_data_parallel_over_two_processes(
    tmp_path, tmp_path_factory, record_property
):
    """`keras.distribution.initialize` joins two processes (one CPU device
    each, gloo collectives); `DataParallel` over both devices, each process
    feeding its half of each global batch."""
    (port,) = processes.free_ports(1)
    out = tmp_path / "data_parallel.npz"
    runs = [
        (["data_parallel", out, rank, 2, port], processes.environment())
        for rank in range(2)
    ]
    facts = _compare("jax_processes.py", runs, out, tmp_path_factory, record_property)
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
    gives the single-device weights."""
    (port,) = processes.free_ports(1)
    out = tmp_path / "model_parallel.npz"
    runs = [
        (["model_parallel", out, rank, 2, port], processes.environment())
        for rank in range(2)
    ]
    facts = _compare("jax_processes.py", runs, out, tmp_path_factory, record_property)
    assert facts["processes"] == 2
    assert facts["local_kernel_columns"] == 3 * shared.UNITS // 2
    assert "'model'" in facts["kernel_sharding"], facts["kernel_sharding"]


@_on("tensorflow")
def test_tensorflow_mirrored_strategy_fit(tmp_path, tmp_path_factory, record_property):
    """`fit` under `tf.distribute.MirroredStrategy` over two logical CPU
    devices of one process."""
    out = tmp_path / "mirrored.npz"
    runs = [(["mirrored", out], processes.environment())]
    facts = _compare("tf_strategies.py", runs, out, tmp_path_factory, record_property)
    assert facts["replicas"] == 2


@_on("tensorflow")
def test_tensorflow_multi_worker_mirrored_strategy(
    tmp_path, tmp_path_factory, record_property
):
    """Two worker processes of `tf.distribute.MultiWorkerMirroredStrategy`
    (`TF_CONFIG` on 127.0.0.1): the custom loop (`strategy.run`, the hand-
    written backward pass in a replica context, the gradients all-reduced
    by the optimizer) gives the single-device weights of `fit`.

    `fit` itself fails under this strategy in Keras 3 for any model, a
    Dense alone too: the test pins that failure, so that the README's
    advice is revisited on the day Keras trains there.
    """
    ports = ",".join(map(str, processes.free_ports(2)))
    out = tmp_path / "multi_worker.npz"
    runs = [
        (["multi_worker", out, rank, ports], processes.environment())
        for rank in range(2)
    ]
    facts = _compare("tf_strategies.py", runs, out, tmp_path_factory, record_property)
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
    (port,) = processes.free_ports(1)
    out = tmp_path / "ddp.npz"
    runs = [(["ddp", out, rank, 2, port], processes.environment()) for rank in range(2)]
    facts = _compare("torch_ddp.py", runs, out, tmp_path_factory, record_property)
    assert facts["processes"] == 2
    # Every weight of the model reaches DDP's gradient all-reduce.
    assert facts["ddp_parameters"] == len(_references["torch_ddp.py"][0])


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


def _recipes():
    """`{name: code}` of the README's recipes."""
    with open(README) as file:
        blocks = re.findall(r"```python\n(.*?)```", file.read(), re.DOTALL)
    return {
        match.group(1): block
        for block in blocks
        if (match := re.match(r"# recipe: (\S+)\n", block))
    }


def test_readme_names_every_recipe():
    assert sorted(_recipes()) == sorted(RECIPES)


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
    if backend == "jax" and not _keras_at_least(3, 11):
        pytest.skip(JAX_ARRAYS.kwargs["reason"])
    code = _recipes()[name]
    for written, port in zip(("12345", "12346"), processes.free_ports(2)):
        code = code.replace(f"127.0.0.1:{written}", f"127.0.0.1:{port}")
    script = tmp_path / "train.py"
    script.write_text(code)
    started = time.perf_counter()
    texts = processes.run(
        str(script),
        [([rank], processes.environment()) for rank in range(count)],
        TIMEOUT,
        cwd=str(tmp_path),
    )
    record_property(
        "distributed",
        f"README recipe, {count} process(es) {time.perf_counter() - started:.1f} s",
    )
    # Every process trained 2 epochs (Keras' `verbose=2` lines or the
    # custom loops' own).
    for stdout, _ in texts:
        assert re.search(r"(Epoch 2/2|epoch 2 loss)", stdout, re.IGNORECASE), stdout
    if name == "jax-model-parallel":
        model = keras.saving.load_model(tmp_path / "gru.keras")
        assert model.predict(np.ones((2, 20, 8), "float32"), verbose=0).shape == (2, 1)


def test_a_failed_process_ends_its_peers_at_once(tmp_path):
    """A peer waiting on a collective would wait forever for one that
    died: `processes.run` ends the others when one fails, and reports it."""
    script = tmp_path / "peer.py"
    script.write_text(
        "import sys, time\n"
        "if sys.argv[1] == 'fail':\n"
        "    sys.exit('failed on purpose')\n"
        "time.sleep(120)\n"
    )
    started = time.perf_counter()
    with pytest.raises(AssertionError, match="failed on purpose"):
        processes.run(
            str(script),
            [(["fail"], dict(os.environ)), (["wait"], dict(os.environ))],
            60,
        )
    assert time.perf_counter() - started < 30


def test_processes_out_of_time_are_ended(tmp_path):
    script = tmp_path / "slow.py"
    script.write_text("import time\ntime.sleep(120)\n")
    started = time.perf_counter()
    with pytest.raises(AssertionError, match="not done within 1 s"):
        processes.run(str(script), [([], dict(os.environ))], 1)
    assert time.perf_counter() - started < 30
