"""Sessions for keras_gru_plus: one virtual environment per Keras backend.

TensorFlow, JAX and PyTorch can clash in one process, so each backend gets
its own environment (`nox -s "tests(backend='jax')"`); `nox -s tests` runs
all three. `tests_keras` runs the suite on JAX under the oldest Keras on the
oldest Python, and under a keras-nightly on the newest Python. Positional
arguments after `--` go to pytest.
"""

import glob
import os
import pathlib
import re
import shutil

import nox

nox.options.reuse_venv = "yes"
# `nox` alone: the lint, the package check, the suite on all three backends,
# the suite on JAX under the oldest Keras and under keras-nightly, then the
# notebooks.
nox.options.sessions = [
    "lint",
    "package",
    "tests",
    "tests_keras",
    "notebooks",
]
# A Python version that a session asks for and that is not installed fails
# the run instead of skipping that session.
nox.options.error_on_missing_interpreters = True

BACKENDS = ["jax", "tensorflow", "torch"]
# Extras per backend. The JAX and PyTorch environments carry each other's
# backend too, so that the saving tests can write a model under the other
# backend in a subprocess and load it under this one.
EXTRAS = {
    "jax": "jax,torch,dev",
    "tensorflow": "tensorflow,dev",
    "torch": "torch,jax,dev",
}
# What the export tests need beside each backend: TensorFlow for the
# SavedModel export from JAX (jax2tf), and ONNX with each backend's converter.
EXPORT = {
    "jax": ["tensorflow-cpu", "onnx", "onnxruntime", "jax2onnx"],
    "tensorflow": ["onnx", "onnxruntime", "tf2onnx"],
    "torch": ["onnx", "onnxruntime", "onnxscript"],
}
# The Keras and Python versions tested, as a covering design: every claimed
# version at least once with the full suite, not every pair. The three
# `tests` sessions run the current release on the Python running nox (3.11);
# `tests_keras` runs the oldest Keras the package claims (pyproject.toml's
# `keras>=`) on the oldest Python (`requires-python`), and one keras-nightly
# build on the newest Python, each on JAX. (Before, four version sessions,
# one per Keras and one per Python: a CI run on 2 cores, one process per
# suite, spent 16 min on the nightly and 12 on Python 3.10 alone.)
KERAS_OLDEST = "3.10.0"
KERAS_CURRENT = "3.15.1"
# keras-nightly, pinned to one dated build so that a new nightly cannot turn
# CI red on its own. To bump it: `pip index versions --pre keras-nightly`
# lists the builds; put the newest here and run
# `nox -s "tests_keras(keras='nightly')"`.
KERAS_NIGHTLY = "3.16.0.dev2026102704"
# The oldest Keras with the NumPy of its release: under NumPy 2.4, Keras
# 3.10's own RNN.reset_state fails (NumPy no longer takes the `dtype` string
# of a Keras variable), and the tests compare with it.
KERAS_OLDEST_NUMPY = "numpy==2.2.6"
# The oldest and the newest Python the package runs on (`requires-python`),
# beside the default interpreter of the other sessions: the oldest Keras runs
# on the oldest, the nightly on the newest.
PYTHONS = ["3.10", "3.13"]
VERSIONS = [(PYTHONS[0], KERAS_OLDEST), (PYTHONS[1], "nightly")]
ENV = {
    # Two cores: one thread per op keeps PyTorch and XLA from
    # oversubscribing them.
    "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
    "TF_CPP_MIN_LOG_LEVEL": "3",
}


# The linter, pinned so that a new release cannot turn CI red on its own.
RUFF = "ruff==0.17.6"


def _install(session: nox.Session, extras: str, *also: str) -> None:
    session.install("-e", f".[{extras}]", *also)


def _let_pyenv_find(pythons: list[str]) -> None:
    """Lets nox find the pyenv interpreters of `pythons`.

    pyenv's shims (`python3.10`) run only the versions pyenv has activated
    (PYENV_VERSION, which pyenv's own `python3` sets, or `pyenv global`);
    the others are installed but not found. Where pyenv is used, the
    installed versions of `pythons` are activated for this process after the
    active ones, which stay the default `python3`.
    """
    root = os.environ.get("PYENV_ROOT")
    if not root:
        return
    active = [v for v in os.environ.get("PYENV_VERSION", "").split(":") if v]
    if not active:
        try:
            with open(os.path.join(root, "version")) as file:
                active = [line.strip() for line in file if line.strip()]
        except OSError:
            active = ["system"]
    for python in pythons:
        paths = glob.glob(os.path.join(root, "versions", f"{python}.*"))
        installed = sorted(
            (os.path.basename(p) for p in paths),
            key=lambda v: [int(n) for n in re.findall(r"\d+", v)],
        )
        if installed and not any(v in active for v in installed):
            active.append(installed[-1])
    os.environ["PYENV_VERSION"] = ":".join(active)


_let_pyenv_find(PYTHONS)


@nox.session
def lint(session: nox.Session) -> None:
    """Ruff: lint and format check (configured in pyproject.toml)."""
    session.install(RUFF)
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def package(session: nox.Session) -> None:
    """Builds the sdist and the wheel, checks them, and smoke-tests the wheel.

    `python -m build` builds the sdist, then the wheel from the sdist, so a
    file left out of either is missing from the wheel. The wheel (not an
    editable install) goes into this session's environment, and the smoke
    test runs from outside the checkout, so that Python imports the wheel.
    """
    session.install("build", "twine")
    dist = pathlib.Path(session.create_tmp()) / "dist"
    shutil.rmtree(dist, ignore_errors=True)
    session.run("python", "-m", "build", "--outdir", str(dist))
    session.run("twine", "check", "--strict", *map(str, dist.iterdir()))
    (wheel,) = dist.glob("*.whl")
    session.install(f"{wheel}[jax]")
    session.install("--force-reinstall", "--no-deps", str(wheel))
    checkout = os.getcwd()
    session.chdir(session.create_tmp())
    session.run(
        "python",
        os.path.join(checkout, "tests", "scripts", "wheel_smoke.py"),
        checkout,
        env={**ENV, "KERAS_BACKEND": "jax"},
    )


@nox.session
@nox.parametrize("backend", BACKENDS)
def tests(session: nox.Session, backend: str) -> None:
    """Runs the test suite on one Keras backend, under the current Keras."""
    _install(session, EXTRAS[backend], f"keras=={KERAS_CURRENT}")
    session.install(*EXPORT[backend])
    _pytest(session, backend)


# pytest-xdist workers per suite. One pytest process keeps one core busy
# (OMP_NUM_THREADS=1), so two workers halve a suite on 2 cores: the JAX suite
# took 11.2 min with `-n 2` against 23 min without, within a day on one 2-core
# machine (TensorFlow 4.1 min against 10, PyTorch 2.6 against 7). Capped at 4:
# each worker imports Keras and its backends (0.9 GB resident each in the
# TensorFlow suite). `-- -n 0` runs a suite in one process.
WORKERS = max(1, min(4, os.cpu_count() or 1))


def _pytest(session: nox.Session, backend: str) -> None:
    """The suite, on `backend`; positional arguments after `--` go to pytest."""
    session.run(
        "python",
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "-n",
        str(WORKERS),
        *session.posargs,
        env={**ENV, "KERAS_BACKEND": backend},
    )


def _versions(session: nox.Session, keras: str) -> None:
    """Prints the Python, Keras and JAX versions the session runs; fails
    where Keras is not version `keras`."""
    script = (
        "import platform, sys, jax, keras; "
        "print('Python', platform.python_version(), 'Keras', keras.version(), "
        "'JAX', jax.__version__); "
        f"sys.exit(keras.version() != {keras!r})"
    )
    session.run("python", "-c", script, env={**ENV, "KERAS_BACKEND": "jax"})


@nox.session
@nox.parametrize(
    ("python", "keras"), VERSIONS, ids=[f"keras={k!r}" for _, k in VERSIONS]
)
def tests_keras(session: nox.Session, keras: str) -> None:
    """Runs the suite on JAX under the oldest Keras or keras-nightly.

    The oldest Keras on the oldest Python, the nightly on the newest.

    JAX and the test tools only, with the newest JAX that installs on that
    Python: the tests that need another backend or an export package skip,
    naming it.
    """
    if keras != "nightly":
        _install(session, "jax,dev", f"keras=={keras}", KERAS_OLDEST_NUMPY)
        expected = keras
    else:
        # keras-nightly installs the `keras` module under another name and
        # conflicts with the `keras` package, which the project's install
        # pulls in (again at each rerun): uninstall it, then reinstall the
        # nightly over the files they share.
        _install(session, "jax,dev")
        session.run_install("python", "-m", "pip", "uninstall", "--yes", "keras")
        session.install("--pre", f"keras-nightly=={KERAS_NIGHTLY}")
        session.install(
            "--pre", "--force-reinstall", "--no-deps", f"keras-nightly=={KERAS_NIGHTLY}"
        )
        expected = KERAS_NIGHTLY
    _versions(session, expected)
    _pytest(session, "jax")


@nox.session(default=False)
@nox.parametrize("backend", BACKENDS)
def check(session: nox.Session, backend: str) -> None:
    """Parity self-test against keras.layers.GRU on one backend."""
    _install(session, backend)
    session.run(
        "python",
        "-m",
        "keras_gru_plus",
        "check",
        *session.posargs,
        env={**ENV, "KERAS_BACKEND": backend},
    )


@nox.session(default=False)
def main(session: nox.Session) -> None:
    """Sets up JAX and runs the main job, `python -m keras_gru_plus` (demo)."""
    _install(session, "jax,demo")
    session.run(
        "python",
        "-m",
        "keras_gru_plus",
        *session.posargs,
        env={**ENV, "KERAS_BACKEND": "jax"},
    )


@nox.session(default=False)
@nox.parametrize("backend", BACKENDS)
def bench(session: nox.Session, backend: str) -> None:
    """Benchmark against keras.layers.GRU (and torch.nn.GRU) on one backend."""
    _install(session, backend)
    session.install("matplotlib")
    session.run(
        "python",
        "-m",
        "keras_gru_plus",
        "bench",
        *session.posargs,
        env={**ENV, "KERAS_BACKEND": backend},
    )


@nox.session(default=False)
def bench_report(session: nox.Session) -> None:
    """Merges the benchmark results into one table, plot and README section."""
    _install(session, "jax")
    session.install("matplotlib")
    session.run(
        "python",
        "benchmarks/report.py",
        "--readme",
        "README.md",
        env={**ENV, "KERAS_BACKEND": "jax"},
    )


@nox.session(default=False)
def notebooks(session: nox.Session) -> None:
    """Executes the notebooks top to bottom on JAX (into a temp folder).

    `nox -s notebooks -- --inplace` rewrites the committed notebooks with
    their new outputs instead.
    """
    _install(session, "jax,demo")
    session.install("nbformat", "nbclient", "ipykernel")
    args = [] if "--inplace" in session.posargs else ["--out", session.create_tmp()]
    session.run(
        "python", "notebooks/build.py", *args, env={**ENV, "KERAS_BACKEND": "jax"}
    )
