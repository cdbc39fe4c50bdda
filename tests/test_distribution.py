"""Training across devices with keras.distribution (JAX, 2 CPU devices)."""

import importlib.util
import json
import os
import re
import subprocess
import sys

import pytest

SCRIPT = os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "scripts", "distributed_training.py"
)


@pytest.mark.skipif(
    importlib.util.find_spec("jax") is None,
    reason="keras.distribution needs jax, not installed here",
)
def test_data_parallel_equals_single_device_and_model_parallel_shards():
    env = dict(
        os.environ,
        PYTHONPATH=os.path.dirname(os.path.dirname(SCRIPT))
        + os.pathsep
        + os.environ.get("PYTHONPATH", ""),
    )
    proc = subprocess.run(
        [sys.executable, SCRIPT], capture_output=True, text=True, timeout=600, env=env
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["devices"] == 2
    assert result["weights_moved"] > 1e-3  # training did change the weights
    assert result["data_parallel_diff"] < 1e-5
    assert result["model_parallel_diff"] < 1e-5
    # The GRU kernel is really split across the "model" axis.
    # (`P(...)` in its repr from JAX 0.7 on, `PartitionSpec(...)` before.)
    assert re.search(r"\b(P|PartitionSpec)\(None, 'model'\)", result["kernel_sharding"])
