"""Smoke test of an installed wheel: `python wheel_smoke.py CHECKOUT`.

Run by `nox -s package` from outside the checkout, in an environment where
the wheel (not the checkout) is installed, so that a module or file missing
from the wheel fails here rather than for a user. Exits non-zero on failure.
"""

import importlib
import importlib.metadata
import os
import pathlib
import subprocess
import sys
import tempfile

import numpy as np


def _modules_in(folder):
    """Dotted module names of the `.py` files under `folder`, at any depth."""
    folder = pathlib.Path(folder)
    return sorted(
        ".".join(path.relative_to(folder).with_suffix("").parts)
        for path in folder.rglob("*.py")
        if "__pycache__" not in path.parts
    )


def main(checkout):
    import keras

    import keras_gru_plus

    installed = pathlib.Path(keras_gru_plus.__file__).parent
    source = pathlib.Path(checkout) / "keras_gru_plus"
    # The wheel, not the checkout, must be what Python imported.
    assert installed.resolve() != source.resolve(), installed
    assert "site-packages" in str(installed), installed

    # Every module of the checkout is in the wheel and imports.
    missing = sorted(set(_modules_in(source)) - set(_modules_in(installed)))
    assert not missing, f"modules missing from the wheel: {missing}"
    for name in _modules_in(installed):
        if not name.endswith("__main__"):
            importlib.import_module(f"keras_gru_plus.{name}")

    version = importlib.metadata.version("keras-gru-plus")
    assert version == keras_gru_plus.__version__, (version, keras_gru_plus.__version__)

    # The numbers of keras.layers.GRU with the same weights, with a mask.
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 7, 4)).astype("float32")
    mask = np.ones((3, 7), bool)
    mask[1, 5:] = False
    theirs = keras.layers.GRU(5, return_sequences=True)
    ours = keras_gru_plus.GRU(5, return_sequences=True)
    theirs.build(x.shape)
    ours.build(x.shape)
    ours.set_weights(theirs.get_weights())
    difference = np.abs(
        keras.ops.convert_to_numpy(ours(x, mask=mask))
        - keras.ops.convert_to_numpy(theirs(x, mask=mask))
    ).max()
    assert difference < 1e-5, difference

    # A `.keras` file round trip (the registered names are in the wheel).
    model = keras.Sequential([keras.Input((7, 4)), keras_gru_plus.GRU(5)])
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "model.keras")
        model.save(path)
        loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(
        loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6
    )

    # The command line answers.
    for args in (["--help"], ["check", "--help"]):
        subprocess.run(
            [sys.executable, "-m", "keras_gru_plus", *args],
            check=True,
            capture_output=True,
        )
    print(
        f"wheel smoke test passed: keras_gru_plus {version} from {installed}, "
        f"{len(_modules_in(installed))} modules, Keras {keras.__version__} "
        f"on {keras.backend.backend()}, max difference {difference:.1e}"
    )


if __name__ == "__main__":
    main(sys.argv[1])
