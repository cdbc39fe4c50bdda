"""Argument checks shared by `GRU` and `GRUCell`.

Each check raises before any backend op runs, with a message that names the
argument, the value received and what was expected, in the wording Keras
uses: "Received an invalid value for argument `units`, expected a positive
integer, got 0."
"""

import math
import numbers

import numpy as np


def _invalid(name, expected, value):
    return (
        f"Received an invalid value for argument `{name}`, expected "
        f"{expected}, got {value!r}."
    )


def check_units(units):
    """`units` must be a positive integer (not a bool, not a float)."""
    if isinstance(units, (bool, np.bool_)) or not isinstance(units, numbers.Integral):
        raise TypeError(_invalid("units", "a positive integer", units))
    if units <= 0:
        raise ValueError(_invalid("units", "a positive integer", units))
    return int(units)


def check_rate(name, value):
    """A dropout rate must be a real number in [0, 1].

    1.0 is accepted because `keras.layers.GRU` accepts and saves it (a file
    written by the built-in may hold it); `GRUCell` applies none at 1.0.
    Values outside [0, 1], which the built-in silently clips, are refused.
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(_invalid(name, "a float in the range [0, 1]", value))
    if math.isnan(value) or not 0.0 <= value <= 1.0:
        raise ValueError(_invalid(name, "a float in the range [0, 1]", value))
    return float(value)


def check_epsilon(name, value):
    """An epsilon must be a finite real number greater than 0."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(_invalid(name, "a float greater than 0", value))
    if not math.isfinite(value) or value <= 0:
        raise ValueError(_invalid(name, "a float greater than 0", value))
    return float(value)


def check_bool(name, value):
    """A flag must be a bool (NumPy bools and the integers 0 and 1 pass)."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, numbers.Integral) and value in (0, 1):
        return bool(value)
    raise TypeError(_invalid(name, "a boolean (True or False)", value))


def check_choice(name, value, choices):
    """`value` must be one of `choices` (compared with `==`, bools exact)."""
    for choice in choices:
        if type(value) is type(choice) and value == choice:
            return value
        if isinstance(choice, bool) and isinstance(value, np.bool_):
            if bool(value) == choice:
                return choice
    raise ValueError(_invalid(name, f"one of {list(choices)}", value))


def check_seed(seed):
    """`seed` is `None` or an integer."""
    if seed is None:
        return None
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, numbers.Integral):
        raise TypeError(_invalid("seed", "None or an integer", seed))
    return int(seed)


def check_kwargs(kwargs, allowed, layer_name):
    """Unknown keyword arguments raise a `TypeError` naming each of them."""
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        raise TypeError(
            f"{layer_name} got unknown keyword argument(s) "
            f"{', '.join(f'`{k}`' for k in unknown)} "
            f"(values: {', '.join(repr(kwargs[k]) for k in unknown)}). "
            f"Expected the arguments of `keras.layers.GRU`; see "
            f"`help(keras_gru_plus.{layer_name})`."
        )


# Keyword arguments `keras.Layer` understands, plus the Keras 2 ones that
# old configs carry (`batch_input_shape`, `batch_size`).
LAYER_KWARGS = (
    "name",
    "dtype",
    "trainable",
    "autocast",
    "input_shape",
    "input_dim",
    "batch_input_shape",
    "batch_size",
)


def layer_kwargs(kwargs, layer_name):
    """Checks `**kwargs` and maps the Keras 2 ones onto Keras 3's.

    `batch_input_shape` becomes `input_shape` without its batch axis;
    `batch_size` is dropped (Keras 3 layers take it from `keras.Input`).
    """
    check_kwargs(kwargs, LAYER_KWARGS, layer_name)
    kwargs = dict(kwargs)
    batch_input_shape = kwargs.pop("batch_input_shape", None)
    kwargs.pop("batch_size", None)
    if batch_input_shape is not None and "input_shape" not in kwargs:
        kwargs["input_shape"] = tuple(batch_input_shape)[1:]
    return kwargs


def check_dtype(inputs, name="inputs"):
    """Inputs must be numbers: float (or integer/bool, cast to float)."""
    dtype = getattr(inputs, "dtype", None)
    if dtype is None:
        return
    if isinstance(dtype, np.dtype):
        bad = dtype.kind in "USO"  # unicode, bytes, Python objects
    else:
        bad = "str" in str(dtype).lower()  # tf.string
    if bad:
        raise ValueError(
            f"Received an invalid value for argument `{name}`, expected a "
            f"tensor of numbers (float, or integers cast to float), got "
            f"dtype {dtype}."
        )


def _shape(value):
    shape = getattr(value, "shape", None)
    if shape is None:
        shape = np.shape(value)
    # A dimension not known as an integer (None, or a symbolic one such as
    # JAX's export's `batch`) is unknown here.
    return tuple(int(d) if isinstance(d, numbers.Integral) else None for d in shape)


def check_sequence(shape, time_major, input_dim=None, name="inputs"):
    """Inputs are 3-D; after build, their last axis is the built input_dim."""
    layout = "(time, batch, features)" if time_major else "(batch, time, features)"
    if len(shape) != 3:
        raise ValueError(
            f"Received an invalid value for argument `{name}`, expected a "
            f"3-D tensor of shape {layout}, got a tensor of rank "
            f"{len(shape)} with shape {tuple(shape)}."
        )
    if shape[-1] is None:
        raise ValueError(
            f"Received an invalid value for argument `{name}`, expected a "
            f"known last (features) dimension, got shape {tuple(shape)}."
        )
    if input_dim is not None and shape[-1] != input_dim:
        raise ValueError(
            f"Received an invalid value for argument `{name}`, expected "
            f"{input_dim} features (the size the layer was built with), got "
            f"shape {tuple(shape)}."
        )


def _compatible(actual, expected):
    return len(actual) == len(expected) and all(
        a is None or e is None or a == e for a, e in zip(actual, expected)
    )


def check_mask(mask, batch, time, time_major):
    """A mask is boolean-like with shape (batch, time), or (time, batch)."""
    shape = _shape(mask)
    expected = (time, batch) if time_major else (batch, time)
    layout = "(time, batch)" if time_major else "(batch, time)"
    if not _compatible(shape, expected):
        raise ValueError(
            f"Received an invalid value for argument `mask`, expected shape "
            f"{layout} = {expected} to match the inputs, got shape {shape}."
        )


def check_initial_state(initial_state, batch, units, name="initial_state"):
    """One state tensor of shape (batch, units), bare or in a list of one."""
    if isinstance(initial_state, (list, tuple)):
        if len(initial_state) != 1:
            raise ValueError(
                f"Received an invalid value for argument `{name}`, "
                "expected one state tensor (a GRU has a single state), got "
                f"a {type(initial_state).__name__} of {len(initial_state)}."
            )
        initial_state = initial_state[0]
    shape = _shape(initial_state)
    expected = (batch, units)
    if not _compatible(shape, expected):
        raise ValueError(
            f"Received an invalid value for argument `{name}`, expected "
            f"shape (batch, units) = {expected}, got shape {shape}."
        )
    return initial_state


def check_weights(layer, weights):
    """Every new weight has the shape of the one it replaces.

    Checked for all of them before any is assigned, so that a bad list
    leaves the layer as it was (`keras.Layer.set_weights` assigns one at a
    time and raises on the first bad one).
    """
    current = layer.weights
    if len(weights) != len(current):
        raise ValueError(
            f"Received an invalid value for argument `weights` of "
            f"{layer.name}.set_weights, expected a list of {len(current)} "
            f"arrays ({', '.join(v.path for v in current)}), got "
            f"{len(weights)}."
        )
    for variable, value in zip(current, weights):
        shape = _shape(value)
        if shape != tuple(variable.shape):
            raise ValueError(
                f"Received an invalid value for argument `weights` of "
                f"{layer.name}.set_weights, expected shape "
                f"{tuple(variable.shape)} for {variable.path}, got shape "
                f"{shape}. No weight was changed."
            )
