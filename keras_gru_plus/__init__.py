"""keras_gru_plus: a GRU for Keras 3 written in `keras.ops`.

`GRU` and `GRUCell` match `keras.layers.GRU` and `keras.layers.GRUCell`
(same arguments, weights and numbers) on JAX, TensorFlow and PyTorch, and
add back the Keras 2 arguments and methods. Both are registered for saving
as `"keras_gru_plus>GRU"` and `"keras_gru_plus>GRUCell"`.
"""

import os
import sys

from keras_gru_plus.allocator import retain_freed_memory
from keras_gru_plus.version import __version__

__all__ = [
    "GRU",
    "GRUCell",
    "OneStep",
    "StepGRU",
    "StreamStates",
    "SwapBatchTime",
    "__version__",
    "initial_states",
    "retain_freed_memory",
    "step_function",
    "step_model",
]

# The name of the console script (`[project.scripts]` in pyproject.toml).
_SCRIPT = "keras-gru-plus"


def _load():
    """Imports the layers (and Keras with its backend) into the package and
    registers `GRU` and `GRUCell` for saving. Idempotent."""
    if "GRU" in globals():
        return
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

    register = keras.saving.register_keras_serializable(package="keras_gru_plus")
    globals().update(
        GRU=register(GRU),
        GRUCell=register(GRUCell),
        OneStep=OneStep,
        StepGRU=StepGRU,
        StreamStates=StreamStates,
        SwapBatchTime=SwapBatchTime,
        initial_states=initial_states,
        # (after the submodule of the same name, which importing it bound)
        step_function=step_function,
        step_model=step_model,
    )


def _run_as_program():
    """Whether this import is the start of the command line: `python -m
    keras_gru_plus` (while Python locates the module, `sys.argv[0]` is
    "-m", and `sys.orig_argv` names the module), or the console script
    (`sys.argv[0]` is its path)."""
    argv0 = sys.argv[0] if sys.argv else ""
    if argv0 == "-m":
        args = list(getattr(sys, "orig_argv", ()))
        for i, arg in enumerate(args[1:], 1):
            if arg.startswith("-m"):  # "-m name" or "-mname"
                module = arg[2:] or (args[i + 1] if i + 1 < len(args) else "")
                return module.split(".")[0] == __name__
        return False
    name = os.path.splitext(os.path.basename(argv0))[0]
    return name in (_SCRIPT, f"{_SCRIPT}-script")


# Imported by user code, the package imports its layers at once: Keras
# finds `keras_gru_plus>GRU` in its registry only once `register` ran, so
# `keras.saving.load_model` works after a bare `import keras_gru_plus`.
# Run as a program, it imports nothing heavy yet: `--help` and argument
# errors answer before Keras and its backend load (seconds), and
# `__main__` sets the environment the backend reads at import
# (`OMP_NUM_THREADS`, TensorFlow's logging) first, then calls `_load()`.
# Until then the names come on first use (PEP 562 `__getattr__`).
if _run_as_program():

    def __getattr__(name):
        if name in __all__:
            _load()
            return globals()[name]
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

    def __dir__():
        return sorted(set(globals()) | set(__all__))

else:
    _load()
