"""Sessions for keras_gru_plus: one virtual environment per Keras backend.

TensorFlow, JAX and PyTorch can clash in one process, so each backend gets
its own environment (`nox -s "tests(backend='jax')"`); `nox -s tests` runs
all three. Positional arguments after `--` go to pytest.
"""

import os
import pathlib
import shutil

import nox

nox.options.reuse_venv = "yes"
# `nox` alone: the lint, the suite on all three backends, then the notebooks.
nox.options.sessions = ["lint", "package", "tests", "notebooks"]

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
ENV = {
    # Two cores: one thread per op keeps PyTorch and XLA from
    # oversubscribing them.
    "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
    "TF_CPP_MIN_LOG_LEVEL": "3",
}


# The linter, pinned so that a new release cannot turn CI red on its own.
RUFF = "ruff==0.17.6"


def _install(session: nox.Session, extras: str) -> None:
    session.install("-e", f".[{extras}]")


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
    """Runs the test suite on one Keras backend."""
    _install(session, EXTRAS[backend])
    session.install(*EXPORT[backend])
    session.run(
        "python",
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        *session.posargs,
        env={**ENV, "KERAS_BACKEND": backend},
    )


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
