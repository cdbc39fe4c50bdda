"""`retain_freed_memory`: glibc's thresholds, set in a fresh process, stop
the page faults of arrays freed and made again; the user's `MALLOC_*`
variables stand; bad thresholds raise."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from keras_gru_plus import allocator

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Eight arrays of 2.4 MB made and freed twenty times over: with glibc's
# defaults each round maps them again (its dynamic mmap threshold rises to
# 2.4 MB, but more than twice that is free at the top of the heap after
# each round, so the heap is trimmed), one fault per page.
_CHURN = """
import importlib.util, json, resource, sys
import numpy as np

# The module alone, without the package (which imports Keras and a backend).
spec = importlib.util.spec_from_file_location("allocator", sys.argv[1])
allocator = importlib.util.module_from_spec(spec)
spec.loader.exec_module(allocator)

def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt

def churn():
    for _ in range(20):
        arrays = [np.ones(300_000) for _ in range(8)]
        del arrays

def faults_of_churn():
    churn()  # the heap's first growth, either way
    before = faults()
    churn()
    return faults() - before

default = faults_of_churn()
line = allocator.retain_freed_memory()
print(json.dumps({"default": default, "retained": faults_of_churn(), "line": line,
                  "environment": allocator.environment()}))
"""


def _glibc():
    return allocator._glibc_mallopt() is not None


def _huge_pages_always():
    """Whether the kernel backs every large mapping with huge pages
    (transparent huge pages `[always]`): the defaults then fault once per
    2 MiB, not per page, and the churn counts too few faults to compare."""
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
            return "[always]" in f.read()
    except OSError:
        return False


@pytest.mark.skipif(not _glibc(), reason="needs glibc's mallopt (Linux with glibc)")
@pytest.mark.skipif(
    _huge_pages_always(),
    reason="transparent huge pages are [always]: the page faults of glibc's "
    "defaults are then too few to measure this way",
)
def test_freed_arrays_are_made_again_without_page_faults():
    # glibc's defaults: none of the user's settings of the thresholds.
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in allocator.ENVIRONMENT and k != "GLIBC_TUNABLES"
    }
    proc = subprocess.run(
        [sys.executable, "-c", _CHURN, allocator.__file__],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    # 8 x 2.4 MB x 20 rounds is about 94,000 pages.
    assert result["default"] > 10_000, result
    assert result["retained"] < result["default"] / 100, result
    assert result["line"] == (
        "memory: freed blocks up to 32 MiB reused, 128 MiB kept (glibc)"
    )
    assert result["environment"] == {
        "MALLOC_MMAP_THRESHOLD_": str(32 * 2**20),
        "MALLOC_TRIM_THRESHOLD_": str(128 * 2**20),
    }


# The user's trim threshold among other tunables.
_TWO_TUNABLES = ":".join(["glibc.malloc.arena_max=2", "glibc.malloc.trim_threshold=9"])


@pytest.fixture
def fresh_state(monkeypatch):
    """The module's record of what it set, restored after the test."""
    monkeypatch.setattr(allocator, "_state", dict(allocator._state))


@pytest.mark.parametrize(
    "environ, named",
    [
        ({"MALLOC_TRIM_THRESHOLD_": "0"}, "MALLOC_TRIM_THRESHOLD_=0"),
        ({"MALLOC_MMAP_THRESHOLD_": "65536"}, "MALLOC_MMAP_THRESHOLD_=65536"),
        (
            {"GLIBC_TUNABLES": _TWO_TUNABLES},
            "GLIBC_TUNABLES glibc.malloc.trim_threshold=9",
        ),
    ],
)
def test_the_users_variables_stand(environ, named, fresh_state, monkeypatch):
    def never(*args):
        raise AssertionError("mallopt called although the user set the thresholds")

    monkeypatch.setattr(allocator, "_glibc_mallopt", lambda: never)
    line = allocator.retain_freed_memory(environ=environ)
    assert line == f"memory: yours ({named})"
    assert allocator.current() == line
    # Nothing set: a child process gets no variables from us.
    assert allocator.environment() == {}


def test_other_tunables_are_not_the_users_thresholds(fresh_state, monkeypatch):
    asked = []
    monkeypatch.setattr(
        allocator, "_glibc_mallopt", lambda: lambda *a: asked.append(a) or 1
    )
    line = allocator.retain_freed_memory(
        environ={"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}
    )
    assert line.startswith("memory: freed blocks up to 32 MiB reused")
    assert asked == [
        (allocator._M_MMAP_THRESHOLD, 32 * 2**20),
        (allocator._M_TRIM_THRESHOLD, 128 * 2**20),
    ]
    assert allocator.environment()["MALLOC_TRIM_THRESHOLD_"] == str(128 * 2**20)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"mmap_threshold": 0}, "mmap_threshold"),
        ({"trim_threshold": -1}, "trim_threshold"),
        ({"mmap_threshold": 1.5e6}, "mmap_threshold"),
        ({"trim_threshold": True}, "trim_threshold"),
        # `mallopt` takes a C int: 2**32 would reach glibc as 0.
        ({"trim_threshold": 2**32}, "trim_threshold"),
        ({"mmap_threshold": 2**31}, "mmap_threshold"),
    ],
)
def test_bad_thresholds_raise_naming_them(kwargs, name):
    with pytest.raises(ValueError, match=rf"`{name}` must be a whole number") as info:
        allocator.retain_freed_memory(**kwargs, environ={})
    assert repr(next(iter(kwargs.values()))) in str(info.value)


def test_numpy_integers_are_taken(fresh_state):
    line = allocator.retain_freed_memory(
        mmap_threshold=np.int64(2**20),
        trim_threshold=np.int32(2**22),
        environ={"MALLOC_TRIM_THRESHOLD_": "1"},
    )
    assert line == "memory: yours (MALLOC_TRIM_THRESHOLD_=1)"


def test_a_threshold_the_c_library_refuses_raises(monkeypatch, fresh_state):
    # Some glibc versions refuse an mmap threshold above half their heap
    # size (`mallopt` returns 0); glibc 2.36 takes any. A stand-in that
    # refuses everything, recording what it was asked.
    asked = []

    def refusing(param, value):
        asked.append((param, value))
        return 0

    monkeypatch.setattr(allocator, "_glibc_mallopt", lambda: refusing)
    with pytest.raises(ValueError, match=r"glibc refused the thresholds \(mmap_th"):
        allocator.retain_freed_memory(mmap_threshold=2**30, environ={})
    assert asked == [(allocator._M_MMAP_THRESHOLD, 2**30)]
    assert allocator.environment() == {}
