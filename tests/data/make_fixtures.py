"""Writes the cross-backend fixtures: a model saved under this backend.

Run once per backend, e.g. `KERAS_BACKEND=torch python tests/data/make_fixtures.py`.
Writes `model_<backend>.keras` and `inputs_<backend>.npz` (the inputs and
the weights as saved), read back by tests/test_saving.py under every backend.
"""

import os

import keras
import numpy as np

import keras_gru_plus

HERE = os.path.dirname(os.path.abspath(__file__))


def build_model(gru_cls):
    """Masking, two GRUs (both formula variants), Dense."""
    inputs = keras.Input((6, 4))
    x = keras.layers.Masking(0.0)(inputs)
    x = gru_cls(5, return_sequences=True, reset_after=False)(x)
    x = gru_cls(3, go_backwards=True)(x)
    outputs = keras.layers.Dense(2)(x)
    return keras.Model(inputs, outputs)


def main():
    backend = keras.backend.backend()
    keras.utils.set_random_seed(0)
    model = build_model(keras_gru_plus.GRU)
    rng = np.random.default_rng(0)
    model.set_weights(
        [
            rng.normal(scale=0.4, size=w.shape).astype("float32")
            for w in model.get_weights()
        ]
    )
    x = rng.normal(size=(3, 6, 4)).astype("float32")
    x[1, 4:] = 0.0
    model.save(os.path.join(HERE, f"model_{backend}.keras"))
    np.savez(
        os.path.join(HERE, f"inputs_{backend}.npz"),
        x=x,
        **{f"w{i}": w for i, w in enumerate(model.get_weights())},
    )
    print("wrote fixtures for", backend)


if __name__ == "__main__":
    main()
