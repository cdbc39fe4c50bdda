"""Whether a backend's graph compiler is tracing the current call.

The policy (`policy.current`) takes a backend's `compiled` entries while
that backend's compiler traces the layer, because a traced program is
built and run differently from the eager one it replaces: on PyTorch,
Keras' `jit_compile=True` hands the training step to `torch.compile`,
which traces every step of the loops into one graph and compiles it with
Inductor, so each kernel the eager plan saves time with costs compile time
there instead (see `policy.POLICIES["torch"]`).

This is the engine's one question to a backend library itself, asked
lazily and only on the backend in use; the math never asks it. JAX and
TensorFlow trace every call of a compiled Keras model (`jit_compile` or
not), and their entries are measured traced, so they have no probe.
"""

import sys


def _torch_compiling():
    """`torch.compiler.is_compiling()`: True while TorchDynamo traces (it
    is a constant of the traced program, not a graph break), under
    `torch.compile` and `torch.export` alike. Keras' PyTorch backend has
    imported torch; the module is looked up, not imported, which
    TorchDynamo would not trace. PyTorch before 2.3 has no such function:
    there the answer is False (the eager entry).

    The flag is the process's: while one thread compiles, an eager call in
    another thread also reads True and runs the compiled fields' plan,
    with the same results (measured: True in 36 of 451 polls of a second
    thread during one compile).
    """
    is_compiling = getattr(sys.modules["torch"].compiler, "is_compiling", None)
    return is_compiling is not None and is_compiling()


# The probe of each backend that has one, by backend name.
PROBES = {"torch": _torch_compiling}


def compiler_tracing(backend):
    """Whether the graph compiler of `backend` (a `keras.backend.backend()`
    name) is tracing the call in progress; False where it has no probe."""
    probe = PROBES.get(backend)
    return probe is not None and probe()
