"""`step_model`: a sequence model run one time step at a time, its GRU
states explicit inputs and outputs; `initial_states` for a batch.

The step model is the same graph with every tensor that had a time axis
taken at one step: a `keras_gru_plus.GRU` becomes a `StepGRU` (state in,
state out), a layer that acts on each step alone is applied to the step
through `OneStep`, and a layer after the sequence is summed up (after a GRU
with `return_sequences=False`) is called as it is, on the running summary.
"""

import dataclasses

import keras
import numpy as np
from keras import tree

from keras_gru_plus.gru import GRU
from keras_gru_plus.one_step import OneStep
from keras_gru_plus.step_gru import StepGRU

# Layers that act on each time step alone: their output at step t depends
# only on their input at step t (and on their weights). Layers with an
# `axis` are per step only if that axis is not the time axis (checked).
PER_STEP_LAYERS = tuple(
    getattr(keras.layers, name)
    for name in (
        "Activation",
        "ActivityRegularization",
        "Add",
        "AlphaDropout",
        "Average",
        "BatchNormalization",
        "Concatenate",
        "Dense",
        "Dropout",
        "ELU",
        "Embedding",
        "GaussianDropout",
        "GaussianNoise",
        "Identity",
        "LayerNormalization",
        "LeakyReLU",
        "Masking",
        "Maximum",
        "Minimum",
        "Multiply",
        "Normalization",
        "PReLU",
        "ReLU",
        "Rescaling",
        "Softmax",
        "SpatialDropout1D",
        "Subtract",
        "TimeDistributed",
        "UnitNormalization",
    )
    if hasattr(keras.layers, name)
)

# Operations of `keras.ops` recorded in a functional graph (Keras 3.15
# records the masks that Masking and Embedding make as such nodes) that act
# elementwise or along an `axis` (checked not to be the time axis).
PER_STEP_OPS = frozenset(
    (
        "Abs",
        "Add",
        "All",
        "Any",
        "Cast",
        "Divide",
        "Equal",
        "Exp",
        "Greater",
        "GreaterEqual",
        "Less",
        "LessEqual",
        "Log",
        "LogicalAnd",
        "LogicalNot",
        "LogicalOr",
        "Max",
        "Maximum",
        "Mean",
        "Min",
        "Minimum",
        "Multiply",
        "Negative",
        "NotEqual",
        "Relu",
        "Sigmoid",
        "Sqrt",
        "Square",
        "Subtract",
        "Sum",
        "Tanh",
        "Where",
    )
)

# Why a layer that is not per step cannot run one step at a time.
_MIXES_STEPS = {
    "Bidirectional": "its backward direction reads the sequence from the "
    "last step, so its first output needs every later input",
    "Conv1D": "a convolution over time mixes neighbouring steps (a causal "
    "one would need a buffer of past inputs, which step_model does not "
    "keep)",
    "SeparableConv1D": "a convolution over time mixes neighbouring steps",
    "DepthwiseConv1D": "a convolution over time mixes neighbouring steps",
    "Conv1DTranspose": "a convolution over time mixes neighbouring steps",
    "GlobalAveragePooling1D": "it pools over every time step",
    "GlobalMaxPooling1D": "it pools over every time step",
    "AveragePooling1D": "it pools neighbouring time steps",
    "MaxPooling1D": "it pools neighbouring time steps",
    "Flatten": "it flattens the time axis into the features",
    "Reshape": "it can move the time axis",
    "Permute": "it can move the time axis",
    "Cropping1D": "it drops time steps",
    "ZeroPadding1D": "it adds time steps",
    "UpSampling1D": "it repeats time steps",
    "RepeatVector": "it makes a sequence from a vector",
    "Attention": "attention mixes every time step",
    "AdditiveAttention": "attention mixes every time step",
    "MultiHeadAttention": "attention mixes every time step",
    "GRU": "a keras.layers.GRU keeps its state inside; use keras_gru_plus.GRU",
    "LSTM": "its state is not a keras_gru_plus.GRU's; step_model steps only "
    "keras_gru_plus.GRU",
    "SimpleRNN": "its state is not a keras_gru_plus.GRU's; step_model steps "
    "only keras_gru_plus.GRU",
    "RNN": "its state is not a keras_gru_plus.GRU's; step_model steps only "
    "keras_gru_plus.GRU",
    "Lambda": "a Lambda can compute anything; if it acts on each step alone, "
    "pass `per_step_layers=(keras.layers.Lambda,)`",
    "SwapBatchTime": "it exchanges the batch and time axes",
}


def step_model(model, per_step_layers=()):
    """The model run one time step at a time, its GRU states explicit.

    From a built sequence model (Sequential or functional) whose recurrent
    layers are `keras_gru_plus.GRU`, a new `keras.Model` that shares its
    weights and computes one step:

        [y_t, *new_states] = step([x_t, *states])

    - Inputs: each of the model's inputs at one step, `(batch, ...)` for
      `(batch, time, ...)` and named as the model's inputs, then one state
      `(batch, units)` per GRU, in the order the model calls them, named
      `"<gru name>_state"`.
    - Outputs: each of the model's outputs at that step (a sequence output
      at step t; after a GRU with `return_sequences=False`, the output the
      model would give if the sequence ended at t), then each GRU's new
      state, named `"<gru name>_next_state"`.

    Fed a sequence step by step from zero states (`initial_states`), it
    gives the sequence model's outputs at every step and its final states.
    A masked step (a `Masking` layer, `Embedding(mask_zero=True)`) leaves
    the states unchanged, as in the sequence model. Dropout is off: the
    step model is for inference.

    Args:
        model: a built `keras.Model`. Every layer between its inputs and
            its GRUs must act on each time step alone (`PER_STEP_LAYERS`:
            Dense, TimeDistributed, LayerNormalization, Dropout,
            Embedding, Masking, merges, ...); after a GRU with
            `return_sequences=False` any layer is allowed.
        per_step_layers: further layer classes to treat as acting on each
            step alone.

    Returns:
        A `keras.Model` taking `[x_t, *states]` and returning
        `[y_t, *new_states]` (lists even with one model input and output).

    Raises:
        ValueError: a layer that cannot run one step at a time (a
            Bidirectional GRU, a GRU with `go_backwards=True`, a pooling
            over time, a Conv1D, a GRU whose initial state comes from the
            graph, ...), named with the reason; or a model not built.
        TypeError: `model` is not a `keras.Model`.

    Example:

    >>> import numpy as np
    >>> import keras
    >>> import keras_gru_plus
    >>> model = keras.Sequential([
    ...     keras.Input((None, 3)),
    ...     keras_gru_plus.GRU(8, return_sequences=True),
    ...     keras.layers.Dense(2),
    ... ])
    >>> step = keras_gru_plus.step_model(model)
    >>> [t.name for t in step.inputs][1:]
    ['gru_state']
    >>> states = keras_gru_plus.initial_states(step, batch_size=4)
    >>> y_t, *states = step([np.zeros((4, 3), "float32"), *states])
    >>> tuple(y_t.shape), tuple(states[0].shape)
    ((4, 2), (4, 8))
    """
    if not isinstance(model, keras.Model):
        raise TypeError(
            "step_model: expected a keras.Model for `model`, got "
            f"{type(model).__name__}."
        )
    if not model.built or not getattr(model, "inputs", None):
        raise ValueError(
            f"step_model: model {model.name!r} is not built; build it on "
            "sequence inputs first (keras.Input((time, features)) or a call)."
        )
    walk = _Walk(tuple(PER_STEP_LAYERS) + tuple(per_step_layers))
    inputs, outputs = walk.run(model)
    return keras.Model(
        inputs + walk.states, outputs + walk.new_states, name=f"{model.name}_step"
    )


def initial_states(model, batch_size=1):
    """Zero states for a step model's state inputs, one `(batch_size,
    units)` NumPy array per GRU, in the order the step model takes them.

    Args:
        model: a step model from `step_model`.
        batch_size: the number of sequences stepped together.

    Returns:
        A list of arrays of zeros, in each state input's dtype.
    """
    steps = _state_inputs(model)
    if not steps:
        raise ValueError(
            f"initial_states: model {model.name!r} has no StepGRU; expected "
            "a model built by keras_gru_plus.step_model."
        )
    if not isinstance(batch_size, int) or batch_size <= 0:
        raise ValueError(
            "Received an invalid value for argument `batch_size`, expected a "
            f"positive integer, got {batch_size!r}."
        )
    return [
        np.zeros((batch_size, s.units), keras.backend.standardize_dtype(s.state_dtype))
        for s in steps
    ]


def _state_inputs(model):
    """The `StepGRU` that takes each state input of `model`, in the order
    of its inputs (a GRU called twice has two states, one layer)."""
    consumer = {}
    operations = {op.name: op for op in getattr(model, "operations", [])}
    for entry in model.get_config().get("layers", []):
        # (A Sequential's config names its layers inside their config.)
        layer = operations.get(entry.get("name") or entry["config"].get("name"))
        if isinstance(layer, StepGRU):
            for node in entry.get("inbound_nodes", []):
                state = node["args"][1]["config"]["keras_history"][0]
                consumer[state] = layer
    return [consumer[t.name] for t in model.inputs if t.name in consumer]


@dataclasses.dataclass(frozen=True)
class _Ref:
    """A tensor of the sequence graph: the `index`-th output of `layer`'s
    call number `node` (a leaf for `keras.tree`, unlike a tuple)."""

    layer: str
    node: int
    index: int


class _Walk:
    """One pass over a model's graph, building the step graph."""

    def __init__(self, per_step):
        self.per_step = per_step
        self.tensors = {}  # _Ref -> step tensor
        self.whole = set()  # keys of tensors without a time axis
        self.states, self.new_states = [], []
        self.wrappers = {}  # layer name -> its StepGRU or OneStep

    def run(self, model):
        config = model.get_config()
        if isinstance(model, keras.Sequential):
            nodes, ins, outs = _sequential_nodes(model, config)
        else:
            nodes, ins, outs = _functional_nodes(model, config)
        inputs = [self._input(*spec) for spec in ins]
        for layer, position, args, kwargs in nodes:
            self._apply(layer, position, args, kwargs)
        return inputs, [self.tensors[k] for k in outs]

    def _input(self, key, batch_shape, dtype):
        if len(batch_shape) < 2:
            raise ValueError(
                f"step_model: input {key.layer!r} has shape {tuple(batch_shape)}; "
                "expected a sequence (batch, time, ...)."
            )
        tensor = keras.Input(batch_shape[2:], dtype=dtype, name=key.layer)
        self.tensors[key] = tensor
        return tensor

    def _apply(self, layer, position, args, kwargs):
        keys = [k for k in tree.flatten((args, kwargs)) if isinstance(k, _Ref)]
        args, kwargs = _resolve((args, kwargs), self.tensors)
        whole = [k in self.whole for k in keys]
        if isinstance(layer, GRU):
            outputs, out_whole = self._gru(layer, args, kwargs, any(whole))
        elif all(whole) or not keys:
            # After the sequence is summed up: the layer as it is.
            outputs = layer(*args, **kwargs)
            out_whole = [True] * len(tree.flatten(outputs))
        elif any(whole):
            raise ValueError(
                f"Layer {layer.name!r} ({type(layer).__name__}) takes both a "
                "sequence and a tensor without a time axis; step_model "
                "cannot tell how to step it."
            )
        elif isinstance(layer, keras.Layer):
            outputs = self._per_step(layer, args, kwargs)
            out_whole = [False] * len(tree.flatten(outputs))
        else:
            outputs = _op_step(layer, args, kwargs)
            out_whole = [False] * len(tree.flatten(outputs))
        for index, (tensor, is_whole) in enumerate(
            zip(tree.flatten(outputs), out_whole)
        ):
            key = _Ref(layer.name, position, index)
            self.tensors[key] = tensor
            if is_whole:
                self.whole.add(key)

    def _gru(self, layer, args, kwargs, whole_input):
        if kwargs.get("initial_state") is not None or len(args) > 1:
            raise ValueError(
                f"Layer {layer.name!r} (GRU) takes its initial state from the "
                "graph; step_model makes every GRU state an input of its own "
                "and cannot step such a model."
            )
        if whole_input:
            raise ValueError(
                f"Layer {layer.name!r} (GRU) takes a tensor without a time axis."
            )
        step = self._wrapper(layer, StepGRU, f"{layer.name}_step")
        # A GRU called more than once (shared) has a state per call.
        calls = sum(s.name.startswith(f"{layer.name}_state") for s in self.states)
        suffix = f"_{calls}" if calls else ""
        state = keras.Input(
            (layer.cell.units,),
            dtype=step.state_dtype,
            name=f"{layer.name}_state{suffix}",
        )
        mask = kwargs.get("mask")
        if mask is None:
            output, new_state = step(args[0], state)
        else:
            output, new_state = step(args[0], state, inputs_mask=mask)
        self.states.append(state)
        self.new_states.append(
            # In the step's dtype: a float32 Identity would round a float64
            # state.
            keras.layers.Identity(
                name=f"{layer.name}_next_state{suffix}", dtype=step.dtype_policy.name
            )(new_state)
        )
        if layer.return_state:
            return (output, new_state), [not layer.return_sequences, True]
        return output, [not layer.return_sequences]

    def _per_step(self, layer, args, kwargs):
        _check_per_step(layer, self.per_step, args)
        others = {k: v for k, v in kwargs.items() if k not in ("training", "mask")}
        if len(args) != 1 or others:
            raise ValueError(
                f"Layer {layer.name!r} ({type(layer).__name__}) is called with "
                "more than one input argument; step_model steps layers called "
                "on one tensor or one list of tensors."
            )
        one_step = self._wrapper(layer, OneStep, layer.name)
        return one_step(args[0], **_mask_of(kwargs))

    def _wrapper(self, layer, kind, name):
        """One wrapper per layer, called once per call of the layer (a
        shared layer stays one layer with the same weights)."""
        if layer.name not in self.wrappers:
            self.wrappers[layer.name] = kind(layer, name=name)
        return self.wrappers[layer.name]


def _mask_of(kwargs):
    """The `mask` argument of a call, where the graph passes one (Keras
    3.15 records masks as graph tensors); absent otherwise, so that Keras
    passes the mask it attached to the inputs."""
    mask = kwargs.get("mask")
    return {} if mask is None else {"mask": mask}


def _op_step(op, args, kwargs):
    """A `keras.ops` operation of the graph applied to one step: its
    tensors get a time axis of length 1, which is taken off its outputs."""
    kind = type(op).__name__
    if kind not in PER_STEP_OPS:
        raise ValueError(
            f"Operation {op.name!r} ({kind}) cannot run one step at a time: "
            "step_model cannot tell whether it acts on each time step alone."
        )
    _check_axis(op, kind, args)
    args, kwargs = tree.map_structure(_with_time, (args, kwargs))
    return tree.map_structure(_without_time, op(*args, **kwargs))


def _check_per_step(layer, per_step, args):
    kind = type(layer).__name__
    if isinstance(layer, keras.Model):
        raise ValueError(
            f"Layer {layer.name!r} is a nested model ({kind}); step_model "
            "steps the layers of one model: build the model flat."
        )
    if not isinstance(layer, per_step):
        why = _MIXES_STEPS.get(
            kind,
            "step_model cannot tell whether it acts on each time step "
            "alone; if it does, pass its class in `per_step_layers`",
        )
        raise ValueError(
            f"Layer {layer.name!r} ({kind}) cannot run one step at a time: {why}."
        )
    _check_axis(layer, kind, args)


def _check_axis(layer, kind, args):
    """A layer or operation with an `axis` must not act along time (axis 1
    of the sequence; `axis=None`, every axis, includes it)."""
    if not hasattr(layer, "axis"):
        return
    axis = layer.axis
    rank = len([a for a in tree.flatten(args) if hasattr(a, "shape")][0].shape) + 1
    listed = axis if isinstance(axis, (list, tuple)) else [axis]
    if axis is None or 1 in [a % rank for a in listed]:
        raise ValueError(
            f"Layer {layer.name!r} ({kind}, axis={axis}) cannot run one step "
            "at a time: it acts along the time axis (axis 1)."
        )


def _with_time(x):
    return keras.ops.expand_dims(x, 1) if _is_tensor(x) else x


def _without_time(x):
    return keras.ops.squeeze(x, 1) if _is_tensor(x) else x


def _is_tensor(x):
    return hasattr(x, "shape") and hasattr(x, "dtype")


def _resolve(structure, tensors):
    """`structure` with every `_Ref` replaced by its step tensor."""
    return tree.map_structure(
        lambda k: tensors[k] if isinstance(k, _Ref) else k, structure
    )


def _key(value):
    """A node argument of a functional config with its Keras tensors as
    `_Ref`s (other values as they are)."""
    if isinstance(value, dict) and value.get("class_name") == "__keras_tensor__":
        return _Ref(*value["config"]["keras_history"])
    if isinstance(value, dict):
        return {k: _key(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_key(v) for v in value]
    return value


def _functional_nodes(model, config):
    ins, nodes = [], []
    entries = {e["name"]: e for e in config["layers"]}
    operations = {op.name: op for op in model.operations}
    for key in _keys(config["input_layers"]):
        layer_config = entries[key.layer]["config"]
        shape = layer_config.get("batch_shape") or layer_config.get("batch_input_shape")
        ins.append((key, shape, layer_config.get("dtype")))
    for entry in config["layers"]:
        if entry["class_name"] == "InputLayer":
            continue
        layer = operations[entry["name"]]
        for position, node in enumerate(entry["inbound_nodes"]):
            args = [_key(a) for a in node.get("args", [])]
            kwargs = {k: _key(v) for k, v in node.get("kwargs", {}).items()}
            nodes.append((layer, position, args, kwargs))
    return nodes, ins, _keys(config["output_layers"])


def _sequential_nodes(model, config):
    first = config["layers"][0]["config"]
    input_key = _Ref(first.get("name", "inputs"), 0, 0)
    shape = tuple(model.inputs[0].shape)
    ins = [(input_key, shape, model.inputs[0].dtype)]
    nodes, previous = [], input_key
    for layer in model.layers:
        nodes.append((layer, 0, [previous], {}))
        previous = _Ref(layer.name, 0, 0)
    return nodes, ins, [previous]


def _keys(layers):
    """`input_layers`/`output_layers` of a config as a list of `_Ref`s (one
    input is saved as a single `[name, node, index]`)."""
    if layers and isinstance(layers[0], str):
        layers = [layers]
    return [_Ref(*k) for k in layers]
