"""`StreamStates`: one set of GRU states per stream, for serving a step
model to many streams (users, sensors) that arrive at their own pace."""

import numpy as np

from keras_gru_plus.step_model import initial_states


class StreamStates:
    """Keeps the states of a step model for each stream, by stream id.

    A server calls the step model on the streams that have a new frame,
    as one batch: `gather` stacks their states (zeros for a stream not seen
    before), the step model returns the new states, `scatter` stores them
    back per stream. A stream's states are NumPy arrays `(1, units)`, one
    per GRU, in the step model's order.

    Args:
        model: a step model from `step_model`.

    Example:

    >>> import numpy as np
    >>> import keras
    >>> import keras_gru_plus
    >>> model = keras.Sequential([
    ...     keras.Input((None, 3)),
    ...     keras_gru_plus.GRU(8),
    ...     keras.layers.Dense(2),
    ... ])
    >>> step = keras_gru_plus.step_model(model)
    >>> streams = keras_gru_plus.StreamStates(step)
    >>> ids = ["alice", "bob"]  # the streams with a new frame now
    >>> frames = np.zeros((2, 3), "float32")
    >>> y, *new_states = step.predict_on_batch([frames, *streams.gather(ids)])
    >>> streams.scatter(ids, new_states)
    >>> sorted(streams), tuple(streams["bob"][0].shape)
    (['alice', 'bob'], (1, 8))
    """

    def __init__(self, model):
        self._zeros = initial_states(model, batch_size=1)
        self._states = {}

    def gather(self, stream_ids):
        """The states of `stream_ids` stacked into a batch: one array
        `(len(stream_ids), units)` per GRU. A new stream starts from
        zeros."""
        stream_ids = list(stream_ids)
        if not stream_ids:
            raise ValueError("StreamStates.gather: expected at least one stream id.")
        per_stream = [self._states.get(s, self._zeros) for s in stream_ids]
        return [
            np.concatenate([states[i] for states in per_stream], axis=0)
            for i in range(len(self._zeros))
        ]

    def scatter(self, stream_ids, new_states):
        """Stores the step model's new states `[(batch, units), ...]`, row
        `i` as the states of `stream_ids[i]`."""
        stream_ids = list(stream_ids)
        if len(new_states) != len(self._zeros):
            raise ValueError(
                f"StreamStates.scatter: expected {len(self._zeros)} state "
                f"arrays (one per GRU), got {len(new_states)}."
            )
        arrays = [np.asarray(s) for s in new_states]
        for array, zeros in zip(arrays, self._zeros):
            if array.shape != (len(stream_ids), zeros.shape[1]):
                raise ValueError(
                    "StreamStates.scatter: expected states of shape "
                    f"({len(stream_ids)}, {zeros.shape[1]}) for "
                    f"{len(stream_ids)} streams, got {array.shape}."
                )
        for row, stream_id in enumerate(stream_ids):
            self._states[stream_id] = [a[row : row + 1].copy() for a in arrays]

    def reset(self, stream_id=None):
        """Forgets one stream's states (it starts again from zeros), or
        every stream's with no id."""
        if stream_id is None:
            self._states.clear()
        else:
            self._states.pop(stream_id, None)

    def __getitem__(self, stream_id):
        return self._states[stream_id]

    def __contains__(self, stream_id):
        return stream_id in self._states

    def __iter__(self):
        return iter(self._states)

    def __len__(self):
        return len(self._states)
