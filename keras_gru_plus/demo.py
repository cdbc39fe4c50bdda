"""`python -m keras_gru_plus demo`: a GRU trained on real data, offline.

The data set is the UCI optical recognition of handwritten digits (1,797
images of 8x8 pixels, 10 classes) as shipped inside scikit-learn, so
nothing is downloaded. Each image is read as a sequence: 8 time steps (the
rows) of 8 features (the pixels of a row). The same model is built twice,
with `keras_gru_plus.GRU` and with `keras.layers.GRU`, from the same initial
weights, trained the same way, and scored on the same held-out images.
"""

import time

import keras
import numpy as np

from keras_gru_plus.gru import GRU


def load_digits(test_fraction=0.25, seed=0):
    """Digits as sequences: `(x_train, y_train), (x_test, y_test)`.

    `x` is `(n, 8, 8)` float32 in [0, 1]: 8 steps (rows) of 8 pixels.
    """
    try:
        from sklearn.datasets import load_digits as sklearn_digits
    except ImportError as error:
        raise ImportError(
            "The demo reads the digits data set shipped with scikit-learn: "
            "pip install scikit-learn (or pip install -e '.[demo]')."
        ) from error
    digits = sklearn_digits()
    x = (digits.images / 16.0).astype("float32")
    y = digits.target.astype("int32")
    order = np.random.default_rng(seed).permutation(len(x))
    n_test = int(len(x) * test_fraction)
    test, train = order[:n_test], order[n_test:]
    return (x[train], y[train]), (x[test], y[test])


def build_model(gru_cls, units=64):
    """Input (8 steps, 8 features) -> GRU -> Dense(10) softmax."""
    model = keras.Sequential(
        [
            keras.Input((8, 8)),
            gru_cls(units),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    model.compile(
        keras.optimizers.Adam(3e-3),
        "sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


def run(epochs=20, batch_size=32, verbose=1, seed=0):
    """Trains ours and the built-in from the same weights; returns results.

    Returns:
        A dict with, for "keras_gru_plus" and "keras.layers.GRU", the test
        accuracy, training seconds and the per-epoch `history`.
    """
    (x_train, y_train), (x_test, y_test) = load_digits(seed=seed)
    keras.utils.set_random_seed(seed)
    ours = build_model(GRU)
    builtin = build_model(keras.layers.GRU)
    builtin.set_weights(ours.get_weights())
    results = {}
    for name, model in (("keras_gru_plus", ours), ("keras.layers.GRU", builtin)):
        if verbose:
            print(
                f"\nTraining with {name} on {len(x_train)} digits "
                f"({keras.backend.backend()} backend)"
            )
        keras.utils.set_random_seed(seed)
        start = time.perf_counter()
        history = model.fit(
            x_train,
            y_train,
            epochs=epochs,
            batch_size=batch_size,
            validation_data=(x_test, y_test),
            verbose=verbose,
        )
        seconds = time.perf_counter() - start
        _, accuracy = model.evaluate(x_test, y_test, verbose=0)
        results[name] = {
            "test_accuracy": float(accuracy),
            "train_seconds": seconds,
            "history": {k: [float(v) for v in vs] for k, vs in history.history.items()},
        }
    if verbose:
        print(f"\nHeld-out accuracy on {len(x_test)} digits after {epochs} epochs:")
        for name, r in results.items():
            print(
                f"  {name:<18} {r['test_accuracy']:.4f}   "
                f"(trained in {r['train_seconds']:.1f} s)"
            )
    return results
