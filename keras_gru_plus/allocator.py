"""`retain_freed_memory`: keep freed blocks in the process, so that the
arrays a layer makes at every call reuse memory instead of faulting in
fresh pages.

The layer's loops run over blocks of 25 to 100 steps, and each block's
vectorized work (the input projection, the gates kept for the backward
pass, a layer normalization's statistics) makes arrays of a megabyte or
more: `(25, 32, 384)` in float32 is 1.2 MB. Eager PyTorch and TensorFlow
allocate them through the C library's `malloc`. glibc serves such sizes
from `mmap` (above `M_MMAP_THRESHOLD`, 128 KiB at start, raised to the
largest block freed so far) and gives memory back to the system whenever
more than `M_TRIM_THRESHOLD` (twice that) is free at the top of its heap,
so every call of the layer maps pages again and the system zeroes them:
one page fault per 4 KiB. On this project's 2-core virtual machines a
fault costs far more than the arithmetic on its page. Measured on
PyTorch, the `layer_norm` row of the benchmark (base shape, 10 calls per
figure, `OMP_NUM_THREADS=1`), minor page faults per call and time per
call, glibc's defaults -> `retain_freed_memory()`:

| call | faults | ms |
|---|---|---|
| predict, `layer_norm=True` | 3,982 -> 1 | 66.4 -> 47.4 |
| train, `layer_norm=True` | 941 -> 109 | 133.5 -> 120.2 |

(TensorFlow, training with `layer_norm=True`: 3,368 -> 89 faults, 59.4
-> 49.6 ms. JAX's XLA reuses its buffers: 3 to 167 faults per call
either way.)

The setting is the process's, not the layer's: it holds for every array
of every library in the process, from the call on. So the layer does not
make it on import; the project's commands (`python -m keras_gru_plus`
and `benchmarks/compare.py`) do, and a user's program may, by calling
this function or by setting glibc's environment variables before Python
starts (what this function sets):

```bash
MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=134217728 python train.py
```

The cost: freed memory stays with the process instead of going back to
the system, up to `trim_threshold` bytes free at the top of each of
malloc's arenas.
"""

import ctypes
import operator
import os
import platform
import sys

# glibc's `mallopt` parameters (`malloc.h`).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3

# 32 MiB: the ceiling of glibc's own dynamic threshold on 64-bit systems
# (`DEFAULT_MMAP_THRESHOLD_MAX`); blocks above it are still mapped and
# unmapped one by one. The largest arrays of a training step of the
# benchmark's base shape are `(100, 32, 384)` float32, 4.9 MB.
MMAP_THRESHOLD = 32 * 2**20
# 128 MiB of free memory at the top of the heap before it is trimmed:
# four times the largest block that the heap serves.
TRIM_THRESHOLD = 128 * 2**20
# The environment variables that set the same before a process starts;
# where the user set either, their choice stands.
ENVIRONMENT = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")
# The same in `GLIBC_TUNABLES` (`name=value` pairs joined by colons).
_TUNABLES = ("glibc.malloc.mmap_threshold", "glibc.malloc.trim_threshold")
# `mallopt` takes a C int.
_INT_MAX = 2**31 - 1

# What the last call of `retain_freed_memory` did in this process: its line
# and the thresholds it set (`None` where it set none).
_state = {"line": "memory: the C library's defaults", "set": None}


def retain_freed_memory(
    mmap_threshold=MMAP_THRESHOLD, trim_threshold=TRIM_THRESHOLD, environ=None
):
    """Keeps freed memory in the process (glibc's `malloc`), from this call
    on: blocks up to `mmap_threshold` bytes come from its heap, and the
    heap is trimmed only when more than `trim_threshold` bytes are free at
    its top.

    Args:
        mmap_threshold: the size in bytes from which blocks are mapped one
            by one (glibc's `M_MMAP_THRESHOLD`).
        trim_threshold: the free bytes at the top of the heap that are kept
            (glibc's `M_TRIM_THRESHOLD`).
        environ: the environment to read the user's settings from (default
            `os.environ`).

    Returns:
        A line saying what was done, for a program's heading: set, left
        to the user's `MALLOC_*` variables (or their `GLIBC_TUNABLES` for
        the same thresholds), or not available (a C library other than
        glibc).

    Raises:
        ValueError: a threshold that is not a whole number of bytes from 1
            to 2**31 - 1, or that glibc refuses.

    Example:

    >>> import keras_gru_plus
    >>> keras_gru_plus.retain_freed_memory()  # doctest: +SKIP
    'memory: freed blocks up to 32 MiB reused, 128 MiB kept (glibc)'
    """
    mmap_threshold = _bytes("mmap_threshold", mmap_threshold)
    trim_threshold = _bytes("trim_threshold", trim_threshold)
    environ = os.environ if environ is None else environ
    users = [f"{name}={environ[name]}" for name in ENVIRONMENT if name in environ]
    users += [
        f"GLIBC_TUNABLES {tunable}"
        for tunable in environ.get("GLIBC_TUNABLES", "").split(":")
        if tunable.split("=")[0] in _TUNABLES
    ]
    if users:
        return _record(f"memory: yours ({', '.join(users)})")
    mallopt = _glibc_mallopt()
    if mallopt is None:
        return _record("memory: the C library's defaults (not glibc)")
    if not (
        mallopt(_M_MMAP_THRESHOLD, mmap_threshold)
        and mallopt(_M_TRIM_THRESHOLD, trim_threshold)
    ):
        raise ValueError(
            "retain_freed_memory: glibc refused the thresholds "
            f"(mmap_threshold={mmap_threshold}, trim_threshold="
            f"{trim_threshold}): older versions refuse an `mmap_threshold` "
            "above half their heap size (32 MiB on 64-bit systems)."
        )
    return _record(
        f"memory: freed blocks up to {_size(mmap_threshold)} reused, "
        f"{_size(trim_threshold)} kept (glibc)",
        (mmap_threshold, trim_threshold),
    )


def _bytes(name, value):
    """`value` as a count of bytes that `mallopt` takes (a C int)."""
    try:
        count = operator.index(value)
    except TypeError:
        count = None
    if isinstance(value, bool) or count is None or not 0 < count <= _INT_MAX:
        raise ValueError(
            f"retain_freed_memory: `{name}` must be a whole number of bytes "
            f"from 1 to {_INT_MAX} (glibc's `mallopt` takes a C int); "
            f"received {value!r}."
        )
    return count


def _record(line, thresholds=None):
    _state.update(line=line, set=thresholds)
    return line


def current():
    """The line of the last `retain_freed_memory` call in this process, or
    that the C library's defaults hold."""
    return _state["line"]


def environment():
    """glibc's environment variables for what `retain_freed_memory` set in
    this process (empty where it set nothing), for a child process to
    start with the same."""
    if _state["set"] is None:
        return {}
    return dict(zip(ENVIRONMENT, (str(v) for v in _state["set"])))


def _glibc_mallopt():
    """glibc's `mallopt` (a 1 on success), or `None` elsewhere: another
    system, or another C library (musl's `mallopt` does nothing)."""
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return None
    try:
        # The C library the process runs on (its symbols, not a file's).
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return None
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return mallopt


def _size(n):
    """Bytes in words: MiB where whole, else bytes."""
    return f"{n // 2**20} MiB" if n % 2**20 == 0 else f"{n} bytes"
