"""keras_gru_plus: a GRU for Keras 3 written in `keras.ops`.

`GRU` and `GRUCell` match `keras.layers.GRU` and `keras.layers.GRUCell`
(same arguments, weights and numbers) on JAX, TensorFlow and PyTorch, and
add back the Keras 2 arguments and methods. Both are registered for saving
as `"keras_gru_plus>GRU"` and `"keras_gru_plus>GRUCell"`.
"""

import keras

from keras_gru_plus.gru import GRU
from keras_gru_plus.gru_cell import GRUCell
from keras_gru_plus.one_step import OneStep
from keras_gru_plus.step_function import step_function
from keras_gru_plus.step_gru import StepGRU
from keras_gru_plus.step_model import initial_states
from keras_gru_plus.step_model import step_model
from keras_gru_plus.stream_states import StreamStates
from keras_gru_plus.swap_batch_time import SwapBatchTime
from keras_gru_plus.version import __version__

GRU = keras.saving.register_keras_serializable(package="keras_gru_plus")(GRU)
GRUCell = keras.saving.register_keras_serializable(package="keras_gru_plus")(GRUCell)

__all__ = [
    "GRU",
    "GRUCell",
    "OneStep",
    "StepGRU",
    "StreamStates",
    "SwapBatchTime",
    "__version__",
    "initial_states",
    "step_function",
    "step_model",
]
