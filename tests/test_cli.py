"""The command line: `--help` without Keras, the environment it sets
(threads, TensorFlow's logging), and the package's two import modes."""

import importlib.util
import os
import re
import subprocess
import sys

import keras
import pytest

import keras_gru_plus
from keras_gru_plus import __main__
from keras_gru_plus import allocator

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HEAVY = {"keras", "jax", "jaxlib", "tensorflow", "torch"}
SCRIPT = os.path.join(os.path.dirname(sys.executable), "keras-gru-plus")
# A line of TensorFlow's or absl's C++ logging (any level), in absl's
# format or TensorFlow's older one, or absl's banner.
CPP_LOG = re.compile(
    r"^([IWEF]\d{4} [\d:.]+ +\d+ \S+:\d+\]"
    r"|\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: [IWEF] "
    r"|WARNING: All log messages before absl)",
    re.M,
)


def _environment(**values):
    """This process's environment without the variables the command line
    sets (or, for the allocator, reads as the user's: `GLIBC_TUNABLES` too),
    plus `values`."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in __main__.DEFAULT_ENVIRONMENT
        and k not in allocator.ENVIRONMENT + ("GLIBC_TUNABLES",)
    }
    return dict(env, **values)


def _imported(stderr):
    """The top-level modules named by `-X importtime`'s report."""
    names = re.findall(r"^import time:\s+\d+ \|\s+\d+ \|\s*([\w.]+)", stderr, re.M)
    return {name.split(".")[0] for name in names}


@pytest.mark.parametrize(
    "args", [["--help"], ["check", "--help"], ["bench", "--help"], ["demo", "-h"]]
)
def test_help_imports_no_backend(args):
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "keras_gru_plus", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "usage: keras-gru-plus" in result.stdout
    imported = _imported(result.stderr)
    assert "argparse" in imported  # the report was read
    assert not imported & HEAVY, sorted(imported & HEAVY)


def test_console_script_help_imports_no_backend():
    if not os.path.exists(SCRIPT):
        pytest.skip(f"no console script beside {sys.executable} (not installed)")
    result = subprocess.run(
        [SCRIPT, "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ, PYTHONPROFILEIMPORTTIME="1"),
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "check" in result.stdout
    assert not _imported(result.stderr) & HEAVY


def test_an_argument_error_names_the_argument_without_keras():
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "keras_gru_plus", "demo"]
        + ["--epochs", "many"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert result.returncode == 2
    assert "--epochs: invalid int value: 'many'" in result.stderr
    assert not _imported(result.stderr) & HEAVY


def test_a_bare_import_registers_the_layers():
    """User code: `import keras_gru_plus` imports the layers at once and
    registers them, so `.keras` files find them by name."""
    assert keras.saving.get_registered_object("keras_gru_plus>GRU") is (
        keras_gru_plus.GRU
    )
    assert keras.saving.get_registered_object("keras_gru_plus>GRUCell") is (
        keras_gru_plus.GRUCell
    )
    assert callable(keras_gru_plus.step_function)
    assert not hasattr(keras_gru_plus, "__getattr__")


@pytest.mark.parametrize(
    "argv, orig_argv, expected",
    [
        (["-m"], ["python", "-m", "keras_gru_plus", "check"], True),
        (["-m"], ["python", "-X", "importtime", "-mkeras_gru_plus"], True),
        (["-m"], ["python", "-m", "keras_gru_plus.__main__"], True),
        # Another program run with -m that imports the package on its way.
        (["-m"], ["python", "-m", "pytest", "tests"], False),
        (["/env/bin/keras-gru-plus", "check"], ["python", "/env/bin/x"], True),
        (["my_script.py"], ["python", "my_script.py"], False),
        (["-c"], ["python", "-c", "import keras_gru_plus"], False),
        ([], [], False),
    ],
)
def test_run_as_program(monkeypatch, argv, orig_argv, expected):
    monkeypatch.setattr(sys, "argv", argv)
    monkeypatch.setattr(sys, "orig_argv", orig_argv)
    assert keras_gru_plus._run_as_program() is expected


def test_configure_environment_leaves_the_users_values():
    env = {}
    assert __main__.configure_environment(env) == list(__main__.DEFAULT_ENVIRONMENT)
    assert env == {"OMP_NUM_THREADS": "1", "TF_CPP_MIN_LOG_LEVEL": "3"}
    env = {"OMP_NUM_THREADS": "4", "TF_CPP_MIN_LOG_LEVEL": "0"}
    assert __main__.configure_environment(env) == []
    assert env == {"OMP_NUM_THREADS": "4", "TF_CPP_MIN_LOG_LEVEL": "0"}


def test_startup_lines_are_dropped_and_the_rest_kept(capfd):
    with __main__.quiet_startup_logs():
        os.write(
            2,
            b"WARNING: All log messages before absl::InitializeLog() is called"
            b" are written to STDERR\n"
            b"I0000 00:00:1796190477.692934    4442 port.cc:153] oneDNN custom"
            b" operations are on.\n"
            b"2025-09-17 14:44:05.157831: I external/cudart_stub.cc:32] no GPU\n"
            b"E0000 00:00:1796190477.7    4442 util.cc:131] a real error\n"
            b"something else\n",
        )
    err = capfd.readouterr().err
    assert err == (
        "E0000 00:00:1796190477.7    4442 util.cc:131] a real error\nsomething else\n"
    )


def _demo(backend, **env):
    """`python -m keras_gru_plus demo --epochs 0` (builds and scores both
    models, trains nothing) under `backend`, in a fresh process."""
    return subprocess.run(
        [sys.executable, "-m", "keras_gru_plus", "demo", "--epochs", "0"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
        env=_environment(KERAS_BACKEND=backend, **env),
    )


@pytest.mark.slow
def test_the_commands_choose_threads_and_memory_unless_the_user_did():
    pytest.importorskip("sklearn", reason="the demo's data ships with scikit-learn")
    backend = keras.backend.backend()
    chosen = _demo(backend)
    assert chosen.returncode == 0, chosen.stderr[-2000:]
    heading, memory = chosen.stdout.splitlines()[:2]
    assert heading.startswith("threads: OMP_NUM_THREADS=1 (the default"), heading
    if allocator._glibc_mallopt() is not None:
        assert memory.startswith("memory: freed blocks up to 32 MiB reused"), memory
    users = _demo(backend, OMP_NUM_THREADS="2", MALLOC_TRIM_THRESHOLD_="131072")
    assert users.returncode == 0, users.stderr[-2000:]
    heading, memory = users.stdout.splitlines()[:2]
    assert heading.startswith("threads: OMP_NUM_THREADS=2 (yours)"), heading
    assert memory == "memory: yours (MALLOC_TRIM_THRESHOLD_=131072)", memory
    if backend == "torch":
        assert chosen.stdout.splitlines()[0].endswith("PyTorch 1")
        assert heading.endswith("PyTorch 2")


@pytest.mark.slow
def test_no_tensorflow_startup_lines():
    if importlib.util.find_spec("tensorflow") is None:
        pytest.skip("TensorFlow is not installed in this environment")
    pytest.importorskip("sklearn", reason="the demo's data ships with scikit-learn")
    result = _demo("tensorflow")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Held-out accuracy" in result.stdout
    assert not CPP_LOG.findall(result.stderr), result.stderr[-2000:]
