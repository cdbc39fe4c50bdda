"""Moving GRUs between `keras_gru_plus`, PyTorch, Keras 2 and Keras 3.

Weight conventions:

- Keras (`keras.layers.GRU`, `keras_gru_plus.GRU`, Keras 2 `tf.keras`)
  orders the gates **(z, r, h)** (update, reset, candidate) and stores
  `kernel` `(input_dim, 3 * units)`, `recurrent_kernel`
  `(units, 3 * units)` and, with `reset_after=True`, `bias`
  `(2, 3 * units)`: row 0 the input bias, row 1 the recurrent bias.
- `torch.nn.GRU` orders the gates **(r, z, n)** and stores, per layer `k`
  and direction (suffix `_reverse` for the backward one),
  `weight_ih_l{k}` `(3 * hidden_size, input_size)`, `weight_hh_l{k}`
  `(3 * hidden_size, hidden_size)`, `bias_ih_l{k}` and `bias_hh_l{k}`
  `(3 * hidden_size,)`. Its equations are Keras' `reset_after=True` ones
  with z and r swapped (and `h_t = (1 - z) * n + z * h_{t-1}`, which is
  Keras' update rule), so, with `swap` exchanging the first two gate
  blocks: `kernel = swap(weight_ih).T`,
  `recurrent_kernel = swap(weight_hh).T`,
  `bias = stack([swap(bias_ih), swap(bias_hh)])`. PyTorch has no
  `reset_after=False` variant, and its activations are fixed (`tanh`
  candidate, `sigmoid` gates).
- Keras 2's `CuDNNGRU` keeps the same (z, r, h) order but one flat bias
  `(6 * units,)`: the input bias, then the recurrent bias.

PyTorch is imported inside the functions that need it, never when this
module is imported; the other functions need only Keras.
"""

import copy
import importlib
import sys
import warnings

import keras
import numpy as np

from keras_gru_plus.gru import GRU
from keras_gru_plus.swap_batch_time import SwapBatchTime

_TORCH_ACTIVATIONS = {"activation": "tanh", "recurrent_activation": "sigmoid"}
# Keras 2 GRU config keys without effect on the numbers and no Keras 3
# argument: TensorFlow's variable caching inside `tf.while_loop`.
_KERAS2_ONLY = ("enable_caching_device",)
_CUDNN_DEFAULTS = {
    "activation": "tanh",
    "recurrent_activation": "sigmoid",
    "reset_after": True,
}


def _swap_gates(array, axis):
    """(z, r, h) <-> (r, z, n): exchanges the first two of three gate blocks.

    Its own inverse, so it converts both ways.
    """
    first, second, third = np.split(np.asarray(array), 3, axis=axis)
    return np.concatenate([second, first, third], axis=axis)


def _torch_to_numpy(tensor):
    # float32 on the CPU: works for CUDA, float64 and bfloat16 parameters.
    return tensor.detach().cpu().float().numpy()


def _import_torch(function_name):
    try:
        torch = importlib.import_module("torch")
    except ImportError as error:  # pragma: no cover - depends on the venv
        raise ImportError(
            f"`{function_name}` needs PyTorch, which is not installed: "
            "`pip install torch` (or `pip install keras-gru-plus[torch]`)."
        ) from error
    return torch


def _torch_gru_weights(module, layer, suffix):
    """Keras `[kernel, recurrent_kernel, (bias)]` of one torch layer/direction."""
    w_ih = _torch_to_numpy(getattr(module, f"weight_ih_l{layer}{suffix}"))
    w_hh = _torch_to_numpy(getattr(module, f"weight_hh_l{layer}{suffix}"))
    weights = [_swap_gates(w_ih, 0).T, _swap_gates(w_hh, 0).T]
    if module.bias:
        b_ih = _torch_to_numpy(getattr(module, f"bias_ih_l{layer}{suffix}"))
        b_hh = _torch_to_numpy(getattr(module, f"bias_hh_l{layer}{suffix}"))
        weights.append(np.stack([_swap_gates(b_ih, 0), _swap_gates(b_hh, 0)]))
    return weights


def from_torch(module):
    """Builds the Keras layer that computes what a `torch.nn.GRU` computes.

    The result takes inputs in the module's layout and returns the module's
    first output (every step's output of the last layer; directions
    concatenated), to float32 rounding:

    - one unidirectional layer: a `keras_gru_plus.GRU(hidden_size,
      return_sequences=True, reset_after=True, use_bias=bias,
      time_major=not batch_first)`;
    - one bidirectional layer, `batch_first=True`:
      `keras.layers.Bidirectional(GRU(...), merge_mode="concat")`;
    - `num_layers > 1`: a `keras.Sequential` of those, with a
      `keras.layers.Dropout(module.dropout)` between layers when
      `module.dropout > 0` (PyTorch's dropout between layers, active in
      training only);
    - bidirectional with `batch_first=False` (PyTorch's default layout):
      `keras.layers.Bidirectional` reverses its backward output along
      axis 1, so it only works batch-major. The layers are then built
      batch-major inside a `keras.Sequential` that starts and ends with a
      `SwapBatchTime` layer: the result still takes and returns
      time-major `(time, batch, ...)` tensors.

    The final states (`h_n`, the module's second output) are not returned.
    Weights are copied as float32 values; the result is built (no call
    needed before `get_weights`).

    Args:
        module: A `torch.nn.GRU` (any `num_layers`, `bidirectional`, `bias`,
            `batch_first`, `dropout`).

    Returns:
        A built `keras_gru_plus.GRU`, `keras.layers.Bidirectional` or
        `keras.Sequential`, as above.

    Raises:
        ValueError: if `module` is not a `torch.nn.GRU`, or has a nonzero
            `proj_size`.

    Example:

    >>> import keras
    >>> import numpy as np
    >>> import torch
    >>> from keras_gru_plus.interop import from_torch
    >>> module = torch.nn.GRU(3, 4, num_layers=2, batch_first=True)
    >>> x = np.random.normal(size=(2, 5, 3)).astype("float32")
    >>> expected = module(torch.from_numpy(x))[0].detach().numpy()
    >>> layer = from_torch(module)
    >>> got = keras.ops.convert_to_numpy(layer(x))
    >>> bool(np.allclose(got, expected, atol=1e-5))
    True
    """
    # A `torch.nn.GRU` exists only if torch was imported: no import needed
    # to reject anything else.
    torch = sys.modules.get("torch")
    if torch is None or not isinstance(module, torch.nn.GRU):
        raise ValueError(
            "Received an invalid value for argument `module`, expected a "
            f"`torch.nn.GRU`, got {module!r} of type "
            f"{type(module).__module__}.{type(module).__qualname__}."
        )
    proj_size = getattr(module, "proj_size", 0)
    if proj_size:
        raise ValueError(
            "Received an invalid value for argument `module`: a "
            f"`torch.nn.GRU` with `proj_size={proj_size}` has no Keras "
            "equivalent; expected `proj_size=0`."
        )
    units = module.hidden_size
    batch_first = bool(module.batch_first)
    bidirectional = bool(module.bidirectional)
    num_layers = module.num_layers
    use_bias = bool(module.bias)
    # Time-major Keras layers only where Bidirectional is not involved.
    time_major = not batch_first and not bidirectional
    wrap_time_major = not batch_first and bidirectional

    def make_gru(**kwargs):
        return GRU(
            units,
            return_sequences=True,
            reset_after=True,
            use_bias=use_bias,
            time_major=time_major,
            **kwargs,
        )

    layers = []
    for k in range(num_layers):
        if k > 0 and module.dropout > 0:
            layers.append(keras.layers.Dropout(module.dropout))
        if bidirectional:
            layers.append(keras.layers.Bidirectional(make_gru(), merge_mode="concat"))
        else:
            layers.append(make_gru())
    grus = [layer for layer in layers if not isinstance(layer, keras.layers.Dropout)]

    input_shape = (None, None, module.input_size)
    if len(layers) == 1 and not wrap_time_major:
        result = layers[0]
        result.build(input_shape)
    else:
        if wrap_time_major:
            layers = [SwapBatchTime()] + layers + [SwapBatchTime()]
        result = keras.Sequential(layers)
        result.build(input_shape)

    for k, layer in enumerate(grus):
        if bidirectional:
            layer.forward_layer.set_weights(_torch_gru_weights(module, k, ""))
            layer.backward_layer.set_weights(_torch_gru_weights(module, k, "_reverse"))
        else:
            layer.set_weights(_torch_gru_weights(module, k, ""))
    return result


def _is_gru(layer):
    return isinstance(layer, (GRU, keras.layers.GRU))


def _check_gru(layer, where):
    """Checks that one GRU has a `torch.nn.GRU` equivalent."""
    if not layer.built:
        raise ValueError(
            f"Received an invalid value for argument `layer`: {where} "
            f"`{layer.name}` is not built, so it has no weights yet. Call it "
            "on inputs (or `build` it) first."
        )
    cell = layer.cell
    if getattr(cell, "layer_norm", False):
        raise ValueError(
            f"Received an invalid value for argument `layer`: {where} "
            f"`{layer.name}` has `layer_norm=True`. `torch.nn.GRU` has no "
            "layer-normalized variant (no gains and shifts of the input and "
            "recurrent projections): its weights cannot be converted "
            "without changing the numbers."
        )
    if not cell.reset_after:
        raise ValueError(
            f"Received an invalid value for argument `layer`: {where} "
            f"`{layer.name}` has `reset_after=False`. `torch.nn.GRU` has no "
            "such variant: it always applies the reset gate after the "
            "recurrent matmul, with separate input and recurrent biases "
            "(Keras `reset_after=True`). Its weights cannot be converted "
            "without changing the numbers."
        )
    for name, expected in _TORCH_ACTIVATIONS.items():
        function = getattr(cell, name)
        if getattr(function, "__name__", None) != expected:
            raise ValueError(
                f"Received an invalid value for argument `layer`: {where} "
                f"`{layer.name}` has `{name}={function!r}`; "
                f"`torch.nn.GRU` always uses `{expected}` there."
            )
    return cell


def _keras_gru_state(layer, k, suffix, where):
    cell = _check_gru(layer, where)
    kernel = keras.ops.convert_to_numpy(cell.kernel)
    recurrent = keras.ops.convert_to_numpy(cell.recurrent_kernel)
    state = {
        f"weight_ih_l{k}{suffix}": _swap_gates(kernel.T, 0),
        f"weight_hh_l{k}{suffix}": _swap_gates(recurrent.T, 0),
    }
    if cell.use_bias:
        bias = keras.ops.convert_to_numpy(cell.bias)
        state[f"bias_ih_l{k}{suffix}"] = _swap_gates(bias[0], 0)
        state[f"bias_hh_l{k}{suffix}"] = _swap_gates(bias[1], 0)
    return state, cell


# Layers without weights that `from_torch` puts into a Sequential.
_SKIPPED = (SwapBatchTime, keras.layers.Dropout, keras.layers.InputLayer)


def to_torch_state_dict(layer):
    """The `torch.nn.GRU` state dict holding a Keras GRU's weights.

    The reverse of `from_torch`. Every GRU must have `reset_after=True`,
    `activation="tanh"`, `recurrent_activation="sigmoid"` and no
    `layer_norm` (the only variant PyTorch has); a plain (unidirectional)
    GRU must not have `go_backwards=True`, and a `Bidirectional` must have
    `merge_mode="concat"`, since `torch.nn.GRU` concatenates directions.
    All GRUs of a stack must have the same `units` and `use_bias`, and be
    all bidirectional or all not. `use_bias=False` gives no bias keys, as
    `torch.nn.GRU(bias=False)` expects.

    Load the result into `torch.nn.GRU(input_size, units,
    num_layers=<GRUs in the stack>, bias=use_bias,
    bidirectional=<Bidirectional or not>, batch_first=<layout of yours>)`.

    Args:
        layer: A built `keras_gru_plus.GRU` or `keras.layers.GRU`, a
            `keras.layers.Bidirectional` of one, or a `keras.Sequential`
            of those (it may also hold `keras.layers.Dropout` and
            `SwapBatchTime` layers, as `from_torch` builds it).

    Returns:
        A `dict` from PyTorch's parameter names (`weight_ih_l0`,
        `weight_hh_l0`, `bias_ih_l0`, `bias_hh_l0`, with `_reverse` for the
        backward direction) to contiguous CPU `torch.Tensor`s.

    Raises:
        ValueError: for any other layer, an unbuilt one, or one that
            `torch.nn.GRU` cannot represent (see above).

    Example:

    >>> import numpy as np
    >>> import keras
    >>> import torch
    >>> from keras_gru_plus.interop import to_torch_state_dict
    >>> gru = keras.layers.GRU(4, return_sequences=True)
    >>> x = np.random.normal(size=(2, 5, 3)).astype("float32")
    >>> expected = keras.ops.convert_to_numpy(gru(x))
    >>> module = torch.nn.GRU(3, 4, batch_first=True)
    >>> module.load_state_dict(to_torch_state_dict(gru))
    <All keys matched successfully>
    >>> got = module(torch.from_numpy(x))[0].detach().numpy()
    >>> bool(np.allclose(got, expected, atol=1e-5))
    True
    """
    torch = _import_torch("to_torch_state_dict")
    if isinstance(layer, keras.Sequential):
        members = [
            member for member in layer.layers if not isinstance(member, _SKIPPED)
        ]
        if not members:
            raise ValueError(
                "Received an invalid value for argument `layer`: the "
                f"Sequential `{layer.name}` holds no GRU."
            )
    else:
        members = [layer]

    state = {}
    shared = None  # (units, use_bias, bidirectional) of the first GRU
    for k, member in enumerate(members):
        where = f"layer {k} of the stack," if len(members) > 1 else "the layer"
        if isinstance(member, keras.layers.Bidirectional):
            forward, backward = member.forward_layer, member.backward_layer
            if not (_is_gru(forward) and _is_gru(backward)):
                raise ValueError(
                    "Received an invalid value for argument `layer`: "
                    f"{where} `{member.name}` wraps "
                    f"{type(forward).__name__}, expected a GRU."
                )
            if member.merge_mode != "concat":
                raise ValueError(
                    "Received an invalid value for argument `layer`: "
                    f"{where} `{member.name}` has "
                    f"`merge_mode={member.merge_mode!r}`; `torch.nn.GRU` "
                    "concatenates its directions (`merge_mode='concat'`)."
                )
            part, cell = _keras_gru_state(forward, k, "", where)
            state.update(part)
            part, _ = _keras_gru_state(backward, k, "_reverse", where)
            state.update(part)
            bidirectional = True
        elif _is_gru(member):
            if member.go_backwards:
                raise ValueError(
                    "Received an invalid value for argument `layer`: "
                    f"{where} `{member.name}` has `go_backwards=True`; a "
                    "unidirectional `torch.nn.GRU` only runs forwards."
                )
            part, cell = _keras_gru_state(member, k, "", where)
            state.update(part)
            bidirectional = False
        else:
            raise ValueError(
                "Received an invalid value for argument `layer`, expected a "
                "`keras_gru_plus.GRU` or `keras.layers.GRU`, a "
                "`keras.layers.Bidirectional` of one, or a `keras.Sequential`"
                f" of those; got {where} `{member.name}` of type "
                f"{type(member).__name__}."
            )
        signature = (cell.units, cell.use_bias, bidirectional)
        if shared is None:
            shared = signature
        elif signature != shared:
            raise ValueError(
                "Received an invalid value for argument `layer`: a "
                "`torch.nn.GRU` stack has one `hidden_size`, one `bias` and "
                "one `bidirectional` for all its layers, but layer 0 has "
                "(units, use_bias, bidirectional)="
                f"{shared} and layer {k} has {signature}."
            )
    return {
        name: torch.from_numpy(np.ascontiguousarray(value))
        for name, value in state.items()
    }


def _as_array(value, name):
    try:
        return np.asarray(keras.ops.convert_to_numpy(value))
    except Exception as error:
        raise ValueError(
            f"Received an invalid value for argument `{name}`, expected an "
            f"array, got {value!r}."
        ) from error


def cudnn_bias_to_gru(bias):
    """Keras 2 `CuDNNGRU` bias `(6 * units,)` -> GRU bias `(2, 3 * units)`.

    Both keep the gate order (z, r, h); the flat bias holds the input
    bias, then the recurrent bias, which become rows 0 and 1 of the bias of
    a GRU with `reset_after=True`.

    Args:
        bias: Array-like of shape `(6 * units,)`, `units >= 1`.

    Returns:
        A NumPy array of shape `(2, 3 * units)`.

    Raises:
        ValueError: if `bias` is not 1-D with a positive length divisible
            by 6.

    Example:

    >>> import numpy as np
    >>> from keras_gru_plus.interop import cudnn_bias_to_gru
    >>> cudnn_bias_to_gru(np.arange(12.0))
    array([[ 0.,  1.,  2.,  3.,  4.,  5.],
           [ 6.,  7.,  8.,  9., 10., 11.]])
    """
    array = _as_array(bias, "bias")
    if array.ndim != 1 or array.shape[0] == 0 or array.shape[0] % 6:
        raise ValueError(
            "Received an invalid value for argument `bias`, expected a "
            "CuDNNGRU bias of shape (6 * units,) with units >= 1, got "
            f"shape {array.shape}."
        )
    return array.reshape(2, -1)


def gru_bias_to_cudnn(bias):
    """GRU bias `(2, 3 * units)` -> Keras 2 `CuDNNGRU` bias `(6 * units,)`.

    The reverse of `cudnn_bias_to_gru`: the input bias (row 0) then the
    recurrent bias (row 1), gate order (z, r, h). Only a GRU with
    `reset_after=True` has such a bias.

    Args:
        bias: Array-like of shape `(2, 3 * units)`, `units >= 1`.

    Returns:
        A NumPy array of shape `(6 * units,)`.

    Raises:
        ValueError: if `bias` is not of shape `(2, 3 * units)` (for example
            the `(3 * units,)` bias of a `reset_after=False` GRU).

    Example:

    >>> import numpy as np
    >>> from keras_gru_plus.interop import gru_bias_to_cudnn
    >>> gru_bias_to_cudnn(np.arange(12.0).reshape(2, 6)).shape
    (12,)
    """
    array = _as_array(bias, "bias")
    if (
        array.ndim != 2
        or array.shape[0] != 2
        or array.shape[1] == 0
        or array.shape[1] % 3
    ):
        raise ValueError(
            "Received an invalid value for argument `bias`, expected a GRU "
            "bias of shape (2, 3 * units) with units >= 1 (a reset_after="
            f"True GRU), got shape {array.shape}."
        )
    return array.reshape(-1)


def from_keras2_config(config):
    """A `keras_gru_plus.GRU` from a Keras 2 (`tf.keras`) layer config.

    Keras 2 arguments that Keras 3 dropped (`time_major`, `implementation`,
    `batch_input_shape`) are accepted as they are. A `CuDNNGRU` config
    becomes a GRU with `reset_after=True`, `activation="tanh"` and
    `recurrent_activation="sigmoid"` (what CuDNNGRU computes); convert its
    flat bias with `cudnn_bias_to_gru`. `enable_caching_device` (a
    TensorFlow detail of Keras 2's loop) is dropped.

    Note: Keras 2's `hard_sigmoid` was `clip(0.2 * x + 0.5, 0, 1)`, Keras
    3's is `clip(x / 6 + 0.5, 0, 1)`. A config naming `"hard_sigmoid"`
    loads, with a warning, but computes the Keras 3 function.

    Args:
        config: The layer's config dict (`layer.get_config()`), or the
            serialized layer `{"class_name": "GRU" or "CuDNNGRU",
            "config": {...}}` as in a Keras 2 model JSON. Not modified.

    Returns:
        A new, unbuilt `keras_gru_plus.GRU`.

    Raises:
        ValueError: if `config` is not a dict, names another class, or has
            `layer_norm=True` (no Keras 2 GRU has it).
        TypeError: for an argument the layer does not take (from the
            layer).

    Example:

    >>> from keras_gru_plus.interop import from_keras2_config
    >>> layer = from_keras2_config({"class_name": "GRU", "config": {
    ...     "name": "gru", "units": 8, "time_major": True,
    ...     "implementation": 1, "reset_after": False,
    ...     "batch_input_shape": [None, None, 4]}})
    >>> layer.units, layer.time_major, layer.implementation
    (8, True, 1)
    """
    if not isinstance(config, dict):
        raise ValueError(
            "Received an invalid value for argument `config`, expected a "
            f"dict, got {config!r}."
        )
    class_name = "GRU"
    if "class_name" in config:
        class_name = config["class_name"]
        if not isinstance(config.get("config"), dict):
            raise ValueError(
                "Received an invalid value for argument `config`: a "
                "serialized layer needs a dict under 'config', got "
                f"{config.get('config')!r}."
            )
        config = config["config"]
    if class_name not in ("GRU", "CuDNNGRU"):
        raise ValueError(
            "Received an invalid value for argument `config`, expected the "
            "config of a 'GRU' or 'CuDNNGRU' layer, got class_name="
            f"{class_name!r}."
        )
    if config.get("layer_norm"):
        raise ValueError(
            "Received an invalid value for argument `config`: it has "
            "`layer_norm=True`, which no Keras 2 GRU has (Keras 2 has no "
            "layer-normalized GRU). Load a keras_gru_plus config with "
            "`keras_gru_plus.GRU.from_config`."
        )
    config = copy.deepcopy(config)
    for name in _KERAS2_ONLY:
        config.pop(name, None)
    if class_name == "CuDNNGRU":
        config.update(_CUDNN_DEFAULTS)
    for name in ("activation", "recurrent_activation"):
        if config.get(name) == "hard_sigmoid":
            warnings.warn(
                f"`{name}='hard_sigmoid'`: Keras 3's hard_sigmoid is "
                "clip(x / 6 + 0.5, 0, 1), Keras 2's was "
                "clip(0.2 * x + 0.5, 0, 1); the converted layer computes "
                "the Keras 3 function.",
                stacklevel=2,
            )
    return GRU.from_config(config)


def _replacement(layer):
    """The clone of one layer, with keras.layers.GRU swapped for ours."""
    if isinstance(layer, keras.layers.GRU):
        return GRU.from_config(layer.get_config())
    if isinstance(layer, keras.layers.Bidirectional) and (
        isinstance(layer.forward_layer, keras.layers.GRU)
        or isinstance(layer.backward_layer, keras.layers.GRU)
    ):
        config = layer.get_config()
        config.pop("layer")
        config.pop("backward_layer", None)
        return keras.layers.Bidirectional(
            _replacement(layer.forward_layer),
            backward_layer=_replacement(layer.backward_layer),
            **config,
        )
    return layer.__class__.from_config(layer.get_config())


def _copy_weights(source, target):
    by_name = {layer.name: layer for layer in target.layers}
    for layer in source.layers:
        if not layer.weights:
            continue  # input layers (renamed by the cloning) and the like
        clone = by_name.get(layer.name)
        if clone is None:
            raise RuntimeError(
                f"The copy of the model has no layer named `{layer.name}`."
            )
        if isinstance(layer, keras.Model):
            _copy_weights(layer, clone)
        else:
            clone.set_weights(layer.get_weights())


def replace_gru(model):
    """A copy of a model with every `keras.layers.GRU` a `keras_gru_plus.GRU`.

    Each `keras.layers.GRU`, also inside a `keras.layers.Bidirectional` and
    in nested Sequential or functional models, becomes a
    `keras_gru_plus.GRU` from the same config; every layer of the copy gets
    the original's weights, so the copy predicts the same. The input model
    is not modified. Like `keras.models.clone_model`, the copy is not
    compiled, and layers shared within the model are cloned once per use.

    Args:
        model: A `keras.Sequential` or functional `keras.Model` (subclassed
            models cannot be cloned).

    Returns:
        A new model of the same kind.

    Raises:
        ValueError: if `model` is not a Sequential or functional
            `keras.Model`.

    Example:

    >>> import numpy as np
    >>> import keras
    >>> import keras_gru_plus
    >>> from keras_gru_plus.interop import replace_gru
    >>> model = keras.Sequential([keras.Input((5, 3)), keras.layers.GRU(4)])
    >>> copy = replace_gru(model)
    >>> isinstance(copy.layers[0], keras_gru_plus.GRU)
    True
    >>> x = np.random.normal(size=(2, 5, 3)).astype("float32")
    >>> bool(np.allclose(keras.ops.convert_to_numpy(copy(x)),
    ...                  keras.ops.convert_to_numpy(model(x)), atol=1e-5))
    True
    """
    if not isinstance(model, keras.Model):
        raise ValueError(
            "Received an invalid value for argument `model`, expected a "
            f"`keras.Model`, got {model!r}."
        )
    try:
        clone = keras.models.clone_model(
            model, clone_function=_replacement, recursive=True
        )
    except ValueError as error:
        raise ValueError(
            "Received an invalid value for argument `model`, expected a "
            "Sequential or functional `keras.Model` (subclassed models "
            f"cannot be cloned), got {type(model).__name__}: {error}"
        ) from error
    _copy_weights(model, clone)
    return clone
