"""`SwapBatchTime`: exchanges the batch and time axes."""

import keras


@keras.saving.register_keras_serializable(package="keras_gru_plus")
class SwapBatchTime(keras.Layer):
    """Swaps the first two axes: `(time, batch, ...)` <-> `(batch, time, ...)`.

    `keras.layers.Permute` cannot move the batch axis. `from_torch` puts
    this layer around the batch-major layers it builds for a time-major
    (`batch_first=False`) bidirectional `torch.nn.GRU`, because
    `keras.layers.Bidirectional` reverses its backward output along axis 1
    and so only works batch-major. A mask `(time, batch)` is swapped too.
    Registered as `"keras_gru_plus>SwapBatchTime"` when `keras_gru_plus` is
    imported.

    Args:
        **kwargs: `keras.Layer` arguments (`name`, `dtype`).

    Example:

    >>> import numpy as np
    >>> from keras_gru_plus.swap_batch_time import SwapBatchTime
    >>> tuple(SwapBatchTime()(np.zeros((5, 2, 3), "float32")).shape)
    (2, 5, 3)
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True

    def call(self, inputs):
        axes = (1, 0) + tuple(range(2, len(inputs.shape)))
        return keras.ops.transpose(inputs, axes)

    def compute_mask(self, inputs, mask=None):
        if mask is None:
            return None
        return keras.ops.transpose(mask, (1, 0))

    def compute_output_shape(self, input_shape):
        input_shape = tuple(input_shape)
        return (input_shape[1], input_shape[0]) + input_shape[2:]
