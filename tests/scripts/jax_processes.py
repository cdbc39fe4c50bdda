"""Trains the shared model (`distributed_model.py`) with JAX, in one process
or as one of several processes joined by `keras.distribution.initialize`.

    python jax_processes.py single OUT.npz
    python jax_processes.py data_parallel OUT.npz RANK SIZE PORT
    python jax_processes.py model_parallel OUT.npz RANK SIZE PORT

`single`: one process, one CPU device: the reference. The other two join
SIZE processes (one CPU device each) through a coordinator on
127.0.0.1:PORT, with CPU collectives over gloo:

- `data_parallel`: `keras.distribution.DataParallel` over the devices of
  all processes; each process feeds its slice of every global batch
  (`distributed_model.local_part`), and JAX joins the slices into the
  global batch.
- `model_parallel`: `keras.distribution.ModelParallel` on a `(1, SIZE)`
  mesh: the GRU kernels are split along their `3 * units` axis across the
  processes, every process feeds the whole global batch.

Process 0 writes the trained weights to OUT.npz and prints a JSON line.
"""

import os
import sys
import time

os.environ["KERAS_BACKEND"] = "jax"
os.environ["JAX_PLATFORMS"] = "cpu"

import jax  # noqa: E402

STARTED = time.perf_counter()


def _join(rank, size, port):
    """Joins the processes before any JAX computation: gloo for the CPU
    collectives (the default from JAX 0.5 on; older releases have none)."""
    import keras

    if getattr(jax.config, "jax_cpu_collectives_implementation", "gloo") != "gloo":
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    keras.distribution.initialize(
        job_addresses=f"127.0.0.1:{port}", num_processes=size, process_id=rank
    )


def _gathered(variable):
    """A variable's whole value as a NumPy array on every process: a
    kernel split across processes is gathered from them."""
    from jax.experimental import multihost_utils

    value = variable.value
    if value.is_fully_addressable or value.is_fully_replicated:
        return value
    return multihost_utils.process_allgather(value, tiled=True)


def main(argv):
    mode, out = argv[1], argv[2]
    rank, size, port = (int(a) for a in argv[3:6]) if len(argv) > 3 else (0, 1, 0)
    if mode != "single":
        _join(rank, size, port)

    import distributed_model as shared
    import keras
    import numpy as np

    import keras_gru_plus

    x, y = shared.data()
    facts = {"mode": mode, "processes": jax.process_count()}
    if mode == "single":
        distribution = None
        batch = shared.GLOBAL_BATCH
    elif mode == "data_parallel":
        distribution = keras.distribution.DataParallel(devices=jax.devices())
        x, y = shared.local_part(x, rank, size), shared.local_part(y, rank, size)
        batch = shared.GLOBAL_BATCH // size
    elif mode == "model_parallel":
        mesh = keras.distribution.DeviceMesh(
            shape=(1, len(jax.devices())),
            axis_names=["batch", "model"],
            devices=jax.devices(),
        )
        layout_map = keras.distribution.LayoutMap(mesh)
        for key in shared.SHARDED_KERNELS:
            layout_map[key] = (None, "model")
        distribution = keras.distribution.ModelParallel(
            layout_map=layout_map, batch_dim_name="batch"
        )
        batch = shared.GLOBAL_BATCH
    else:
        raise ValueError(f"unknown mode {mode!r}")
    if distribution is not None:
        # The arrays are each process's own part already (Keras shards by
        # itself only a `tf.data.Dataset`).
        distribution.auto_shard_dataset = False
    facts["devices"] = len(jax.devices())

    def train():
        model = shared.build(keras, keras_gru_plus.GRU)
        initial.extend(np.asarray(_gathered(v)) for v in model.weights)
        model.compile(keras.optimizers.SGD(shared.LEARNING_RATE), "mse")
        model.fit(
            x, y, batch_size=batch, epochs=shared.EPOCHS, shuffle=False, verbose=0
        )
        return model

    initial = []
    if distribution is None:
        model = train()
    else:
        with distribution.scope():
            model = train()
    kernel = model.get_layer("bidirectional").forward_layer.cell.kernel.value
    facts["kernel_sharding"] = str(getattr(kernel.sharding, "spec", None))
    # The columns of the kernel this process holds: all of them unless split.
    facts["local_kernel_columns"] = int(kernel.addressable_shards[0].data.shape[-1])
    weights = [np.asarray(_gathered(v)) for v in model.weights]
    if rank == 0:
        shared.save(out, weights, STARTED, initial=initial, **facts)


if __name__ == "__main__":
    main(sys.argv)
