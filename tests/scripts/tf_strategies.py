"""Trains the shared model (`distributed_model.py`) with TensorFlow, on one
device or under a `tf.distribute` strategy.

    python tf_strategies.py single OUT.npz
    python tf_strategies.py mirrored OUT.npz
    python tf_strategies.py multi_worker OUT.npz RANK SIZE PORT0,PORT1,...

- `single`: `fit` on one CPU device: the reference.
- `mirrored`: `fit` under `tf.distribute.MirroredStrategy` over two logical
  CPU devices of this process.
- `multi_worker`: `tf.distribute.MultiWorkerMirroredStrategy`, one worker
  per process, the cluster given through `TF_CONFIG` at 127.0.0.1 (one
  port per worker), collectives over gRPC. Keras 3's `fit` fails under
  this strategy (keras-team/keras#20585: `fit` asks the strategy to reduce
  the first batch, a tuple of `PerReplica` values, which the collective
  strategy cannot convert), so the model trains in a custom loop
  (`strategy.run` over a `tf.GradientTape` step, the optimizer
  all-reducing the gradients), as TensorFlow's custom-loop guide writes
  it. Then `fit` is tried on a model without our layer (`Flatten`,
  `Dense`), and the error it raises is reported (`fit_error`), to show
  that the failure is Keras'.

Every mode feeds one `tf.data.Dataset` of the global batches, as a user
does; the strategy gives each replica its part of every global batch
(across workers by `AutoShardPolicy.DATA`). Worker 0 writes the trained
weights to OUT.npz and prints a JSON line.
"""

import contextlib
import json
import os
import sys
import time

import distributed_model as shared

STARTED = time.perf_counter()
shared.limit_lifetime()
os.environ["KERAS_BACKEND"] = "tensorflow"


def _strategy(mode, rank, ports):
    """The strategy of `mode`, made before TensorFlow runs anything (the
    logical devices and the cluster are fixed at its start)."""
    import tensorflow as tf

    if mode == "single":
        return None
    if mode == "mirrored":
        (cpu,) = tf.config.list_physical_devices("CPU")
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * 2
        )
        return tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    if mode == "multi_worker":
        os.environ["TF_CONFIG"] = json.dumps(
            {
                "cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
                "task": {"type": "worker", "index": rank},
            }
        )
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ValueError(f"unknown mode {mode!r}")


def main(argv):
    mode, out, rank, _, ports = shared.args(argv)
    strategy = _strategy(mode, rank, ports)

    import keras
    import tensorflow as tf

    import keras_gru_plus
    from keras_gru_plus import policy

    x, y = shared.data()
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(shared.GLOBAL_BATCH)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = (
        tf.data.experimental.AutoShardPolicy.DATA
    )
    dataset = dataset.with_options(options)

    facts = {"mode": mode, "tensorflow": tf.__version__}
    with policy.recording() as plans:
        if mode == "multi_worker":
            model, initial = _custom_loop(strategy, dataset, keras, tf)
        else:
            with strategy.scope() if strategy else contextlib.nullcontext():
                model = shared.build(keras, keras_gru_plus.GRU)
                initial = model.get_weights()
                model.compile(keras.optimizers.SGD(shared.LEARNING_RATE), "mse")
            model.fit(dataset, epochs=shared.EPOCHS, shuffle=False, verbose=0)
    facts["replicas"] = strategy.num_replicas_in_sync if strategy else 1
    if mode == "multi_worker":
        facts["fit_error"] = _fit_error(strategy, dataset, keras)
    if rank == 0:
        shared.save(out, model.get_weights(), initial, plans, STARTED, **facts)


def _custom_loop(strategy, dataset, keras, tf):
    """`(model, initial_weights)`: the model trained by `strategy.run` in a
    custom loop, the loss averaged over the global batch
    (`tf.nn.compute_average_loss`), so that the gradients the optimizer sums
    over the replicas are those of the global batch's mean loss, as in
    `fit`."""
    import keras_gru_plus

    with strategy.scope():
        model = shared.build(keras, keras_gru_plus.GRU)
        initial = model.get_weights()
        optimizer = keras.optimizers.SGD(shared.LEARNING_RATE)
        optimizer.build(model.trainable_variables)
    per_example_loss = keras.losses.MeanSquaredError(reduction=None)

    def replica_step(x, y):
        with tf.GradientTape() as tape:
            loss = tf.nn.compute_average_loss(
                per_example_loss(y, model(x, training=True)),
                global_batch_size=shared.GLOBAL_BATCH,
            )
        gradients = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(gradients, model.trainable_variables))

    @tf.function
    def train_step(batch):
        strategy.run(replica_step, args=batch)

    batches = strategy.experimental_distribute_dataset(dataset)
    for _ in range(shared.EPOCHS):
        for batch in batches:
            train_step(batch)
    return model, initial


def _fit_error(strategy, dataset, keras):
    """The error `fit` raises under `strategy` for a model without our
    layer (`Flatten`, `Dense`), or `None` if it trains."""
    with strategy.scope():
        model = keras.Sequential(
            [
                keras.Input((shared.STEPS, shared.FEATURES)),
                keras.layers.Flatten(),
                keras.layers.Dense(1),
            ]
        )
        model.compile(keras.optimizers.SGD(shared.LEARNING_RATE), "mse")
    try:
        model.fit(dataset, epochs=1, shuffle=False, verbose=0)
    except Exception as error:  # reported whatever it is
        return f"{type(error).__name__}: {str(error)[:80]} ... {str(error)[-80:]}"
    return None


if __name__ == "__main__":
    main(sys.argv)
