"""`step_function`: a step model compiled by its backend, for serving one
step per call at the lowest latency.

`step.predict_on_batch([x_t, *states])` works on every backend, but each
call pays Keras' predict machinery (about 0.2-0.8 ms on a CPU, more than
the step itself); `step_function` compiles the step once per input shape
and calls it directly. Each backend has its compiler, named by its policy
(`policy.BackendPolicy.step_compiler`):

- JAX: `jax.jit` of the model's `stateless_call`, the variables' current
  values passed at every call (so later weight changes are seen);
- TensorFlow: `tf.function` with XLA (`jit_compile=True`);
- PyTorch: `torch.jit.trace` of `stateless_call`, the variables' values
  passed at every call, traced once per input shapes and dtypes, run under
  `torch.no_grad()`.
"""

import warnings

import keras
import numpy as np

from keras_gru_plus import policy


def step_function(model):
    """The step model `model` compiled for one call per step.

    Args:
        model: a step model from `step_model` (or any `keras.Model` whose
            inputs are a list of tensors).

    Returns:
        A function `inputs -> outputs`: `inputs` the list `[x_t, *states]`
        (NumPy arrays or backend tensors), `outputs` the list
        `[y_t, *new_states]` of backend tensors (`keras.ops.convert_to_numpy`
        turns them into NumPy). The first call for each new input shape
        compiles (or traces); later calls run the compiled step.

    Example:

    >>> import numpy as np
    >>> import keras
    >>> import keras_gru_plus
    >>> model = keras.Sequential([keras.Input((None, 3)), keras_gru_plus.GRU(8)])
    >>> step = keras_gru_plus.step_model(model)
    >>> run = keras_gru_plus.step_function(step)
    >>> states = keras_gru_plus.initial_states(step, batch_size=2)
    >>> y_t, *states = run([np.zeros((2, 3), "float32"), *states])
    >>> tuple(keras.ops.convert_to_numpy(y_t).shape)
    (2, 8)
    """
    if not isinstance(model, keras.Model):
        raise TypeError(
            "step_function: expected a keras.Model for `model`, got "
            f"{type(model).__name__}."
        )
    return _COMPILERS[policy.current().step_compiler](model)


def _variables(model):
    return (
        [v.value for v in model.trainable_variables],
        [v.value for v in model.non_trainable_variables],
    )


def _jax(model):
    import jax

    @jax.jit
    def compiled(trainable, non_trainable, inputs):
        outputs, _ = model.stateless_call(
            trainable, non_trainable, inputs, training=False
        )
        return outputs

    def call(inputs):
        return list(compiled(*_variables(model), list(inputs)))

    return call


def _tensorflow(model):
    import tensorflow as tf

    compiled = tf.function(
        lambda inputs: model(inputs, training=False),
        jit_compile=True,
        reduce_retracing=True,
    )

    def call(inputs):
        return list(compiled([tf.convert_to_tensor(v) for v in inputs]))

    return call


def _torch(model):
    import torch

    traces = {}
    n_trainable = len(model.trainable_variables)

    def stateless(*args):
        n_inputs = len(args) - len(model.variables)
        inputs, values = list(args[:n_inputs]), args[n_inputs:]
        outputs, _ = model.stateless_call(
            list(values[:n_trainable]),
            list(values[n_trainable:]),
            inputs,
            training=False,
        )
        return tuple(outputs)

    def call(inputs):
        tensors = [keras.ops.convert_to_tensor(np.asarray(v)) for v in inputs]
        trainable, non_trainable = _variables(model)
        values = [v.detach() for v in trainable + non_trainable]
        key = tuple((tuple(t.shape), t.dtype) for t in tensors)
        with torch.no_grad():
            if key not in traces:
                with warnings.catch_warnings():
                    # The checks on shapes run once, when traced.
                    warnings.simplefilter("ignore", torch.jit.TracerWarning)
                    traces[key] = torch.jit.trace(
                        stateless, (*tensors, *values), check_trace=False
                    )
            return list(traces[key](*tensors, *values))

    return call


_COMPILERS = {"jax_jit": _jax, "tf_xla": _tensorflow, "torch_trace": _torch}
