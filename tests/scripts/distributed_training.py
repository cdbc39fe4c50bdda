"""Trains a model with keras_gru_plus.GRU on 2 virtual CPU devices (JAX).

Run as a script (the device count must be set before JAX is imported):
prints a JSON line with the largest weight difference between single-device
and `keras.distribution.DataParallel` training, and between a single-device
forward pass and one under a `ModelParallel` layout that shards the GRU
kernels across the two devices.
"""

import json
import os

os.environ["KERAS_BACKEND"] = "jax"
# The single-device run on a CPU device too, so that both runs compute in
# float32 (a GPU's default matmul precision in JAX is TF32).
os.environ["JAX_PLATFORMS"] = "cpu"
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2"
)

import jax  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_gru_plus  # noqa: E402

T, F, UNITS = 12, 5, 8


def build():
    model = keras.Sequential(
        [
            keras.Input((T, F)),
            keras_gru_plus.GRU(UNITS, return_sequences=True, name="gru_seq"),
            keras_gru_plus.GRU(UNITS, reset_after=False, name="gru_last"),
            keras.layers.Dense(1),
        ]
    )
    model.compile(keras.optimizers.SGD(0.1), "mse")
    return model


def main():
    devices = jax.devices("cpu")
    assert len(devices) == 2, devices
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, T, F)).astype("float32")
    y = rng.normal(size=(32, 1)).astype("float32")

    keras.utils.set_random_seed(0)
    single = build()
    initial = single.get_weights()
    single.fit(x, y, batch_size=8, epochs=3, shuffle=False, verbose=0)

    data_parallel = keras.distribution.DataParallel(devices=devices)
    with data_parallel.scope():
        parallel = build()
        parallel.set_weights(initial)
        parallel.fit(x, y, batch_size=8, epochs=3, shuffle=False, verbose=0)
    dp_diff = max(
        float(np.max(np.abs(a - b)))
        for a, b in zip(single.get_weights(), parallel.get_weights())
    )
    moved = max(
        float(np.max(np.abs(a - b))) for a, b in zip(single.get_weights(), initial)
    )

    mesh = keras.distribution.DeviceMesh(
        shape=(1, 2), axis_names=["batch", "model"], devices=devices
    )
    layout_map = keras.distribution.LayoutMap(mesh)
    # Shard the fused kernels along their 3 * units (gate) axis. Keys are
    # regular expressions matched from the start of the variable path.
    layout_map[".*/gru_cell/kernel"] = (None, "model")
    layout_map[".*/gru_cell/recurrent_kernel"] = (None, "model")
    model_parallel = keras.distribution.ModelParallel(
        layout_map=layout_map, batch_dim_name="batch"
    )
    with model_parallel.scope():
        sharded = build()
        sharded.set_weights(single.get_weights())
        sharded_out = sharded.predict(x, verbose=0)
        kernel = sharded.get_layer("gru_seq").cell.kernel
        sharding = str(getattr(kernel.value, "sharding", ""))
    mp_diff = float(np.max(np.abs(sharded_out - single.predict(x, verbose=0))))
    print(
        json.dumps(
            {
                "devices": len(devices),
                "data_parallel_diff": dp_diff,
                "weights_moved": moved,
                "model_parallel_diff": mp_diff,
                "kernel_sharding": sharding,
            }
        )
    )


if __name__ == "__main__":
    main()
