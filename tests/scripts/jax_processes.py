"""Trains the shared model (`distributed_model.py`) with JAX, in one process
or as one of several processes joined by `keras.distribution.initialize`.

    python jax_processes.py single OUT.npz
    python jax_processes.py data_parallel OUT.npz RANK SIZE PORT
    python jax_processes.py model_parallel OUT.npz RANK SIZE PORT

`single`: one process, one CPU device: the reference. The other two join
SIZE processes (one CPU device each) through a coordinator at
127.0.0.1:PORT, with CPU collectives over gloo:

- `data_parallel`: `keras.distribution.DataParallel` over the devices of
  all processes; each process feeds its part of every global batch
  (`distributed_model.local_part`), and JAX joins the parts into the
  global batch.
- `model_parallel`: `keras.distribution.ModelParallel` on a `(1, SIZE)`
  mesh: the GRU kernels are split along their `3 * units` axis across the
  processes, every process feeds the whole global batch. A split kernel
  cannot be read whole by one process: the weights are gathered from all
  (`multihost_utils.process_allgather`), and the error that
  `model.get_weights()` raises is reported (`get_weights_error`).

Process 0 writes the trained weights to OUT.npz and prints a JSON line.
"""

import os
import sys
import time

import distributed_model as shared

STARTED = time.perf_counter()
shared.limit_lifetime()
os.environ["KERAS_BACKEND"] = "jax"
os.environ["JAX_PLATFORMS"] = "cpu"

import jax  # noqa: E402


def _join(rank, size, port):
    """Joins the processes before any JAX computation: gloo for the CPU
    collectives (the default of JAX 0.6.2 and 0.10.2, tested here), the
    coordinator listening on 127.0.0.1 alone."""
    import keras

    if getattr(jax.config, "jax_cpu_collectives_implementation", "gloo") != "gloo":
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    os.environ["JAX_COORDINATOR_BIND_ADDRESS"] = f"127.0.0.1:{port}"
    keras.distribution.initialize(
        job_addresses=f"127.0.0.1:{port}", num_processes=size, process_id=rank
    )


def _gathered(variable):
    """A variable's whole value as a NumPy array on every process: a
    kernel split across processes is gathered from them."""
    import numpy as np
    from jax.experimental import multihost_utils

    value = variable.value
    if not (value.is_fully_addressable or value.is_fully_replicated):
        value = multihost_utils.process_allgather(value, tiled=True)
    return np.asarray(value)


def _distribution(mode, rank, size):
    """The mode's distribution (`None` for one device), and the batch size
    this process feeds."""
    import keras

    if mode == "single":
        return None, shared.GLOBAL_BATCH
    if mode == "data_parallel":
        distribution = keras.distribution.DataParallel(devices=jax.devices())
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
    # The arrays are each process's own part already (Keras shards only a
    # `tf.data.Dataset` by itself).
    distribution.auto_shard_dataset = False
    return distribution, batch


def main(argv):
    mode, out, rank, size, ports = shared.args(argv)
    if mode != "single":
        _join(rank, size, ports[0])

    import contextlib

    import keras

    import keras_gru_plus
    from keras_gru_plus import policy

    x, y = shared.data()
    distribution, batch = _distribution(mode, rank, size)
    if mode == "data_parallel":
        x, y = shared.local_part(x, rank, size), shared.local_part(y, rank, size)
    scope = distribution.scope() if distribution else contextlib.nullcontext()
    with scope, policy.recording() as plans:
        model = shared.build(keras, keras_gru_plus.GRU)
        initial = [_gathered(v) for v in model.weights]
        model.compile(keras.optimizers.SGD(shared.LEARNING_RATE), "mse")
        model.fit(
            x, y, batch_size=batch, epochs=shared.EPOCHS, shuffle=False, verbose=0
        )
    kernel = model.get_layer("bidirectional").forward_layer.cell.kernel.value
    facts = {
        "mode": mode,
        "processes": jax.process_count(),
        "devices": len(jax.devices()),
        "kernel_sharding": str(getattr(kernel.sharding, "spec", None)),
        # The columns of the kernel this process holds: all unless split.
        "local_kernel_columns": int(kernel.addressable_shards[0].data.shape[-1]),
    }
    weights = [_gathered(v) for v in model.weights]
    if mode == "model_parallel":
        try:
            model.get_weights()
            facts["get_weights_error"] = None
        except Exception as error:  # reported whatever it is
            facts["get_weights_error"] = f"{type(error).__name__}: {error}"[:200]
    if rank == 0:
        shared.save(out, weights, initial, plans, STARTED, **facts)


if __name__ == "__main__":
    main(sys.argv)
