"""Runs the distributed training scripts of `tests/scripts/` (and the
README's recipes) as real processes on this machine.

The processes address each other at 127.0.0.1 only. Every run is bounded
in time: when one process fails or the time is up, all of them are ended
at once with their children (a collective waits for its peers forever, so
a peer left behind would never stop), and their error output is reported.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

SCRIPTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "scripts")
CHECKOUT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_ports(count):
    """`count` distinct TCP ports free on 127.0.0.1 now (each was bound,
    then released: take them just before starting the processes)."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def environment(**extra):
    """The scripts' environment: this one, with the checkout importable,
    CPUs only (the single-device reference and the distributed run compute
    alike on a GPU machine too), gloo on the loopback interface, and
    `extra`.

    `OMP_NUM_THREADS` stays the caller's, 1 by default: two processes share
    two cores here. TensorFlow keeps its warnings and errors (level 2),
    which name what a failed collective waited for.
    """
    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)  # a forced host device count would add devices
    paths = [CHECKOUT] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env.update(
        PYTHONPATH=os.pathsep.join(paths),
        OMP_NUM_THREADS=env.get("OMP_NUM_THREADS", "1"),
        TF_CPP_MIN_LOG_LEVEL="2",
        CUDA_VISIBLE_DEVICES="",
        JAX_PLATFORMS="cpu",
        GLOO_SOCKET_IFNAME="lo",
        PYTHONFAULTHANDLER="1",
    )
    env.update(extra)
    return env


def run(script, runs, timeout, cwd=None):
    """Runs a script in several processes at once.

    Args:
        script: a file name in `tests/scripts/`, or a path.
        runs: one `(args, env)` per process: `python SCRIPT *args` runs
            with the environment `env`.
        timeout: seconds for all of them together.
        cwd: their working folder; a temporary one by default.

    Returns:
        The `(stdout, stderr)` of each process, in the order of `runs`.

    Raises:
        AssertionError: a process exited non-zero, or they were not all
            done within `timeout` seconds. The others are ended at once
            (each process leads a process group of its own, ended whole),
            and the message holds the end of every process's error output.
    """
    path = os.path.join(SCRIPTS, script)
    with tempfile.TemporaryDirectory() as folder:
        logs, procs = [], []
        failure = None
        try:
            for i, (args, env) in enumerate(runs):
                logs.append(
                    tuple(
                        open(
                            os.path.join(folder, f"{i}.{kind}"),
                            "w+",
                            encoding="utf-8",
                            errors="replace",
                        )
                        for kind in ("out", "err")
                    )
                )
                procs.append(
                    subprocess.Popen(
                        [sys.executable, path, *map(str, args)],
                        stdout=logs[-1][0],
                        stderr=logs[-1][1],
                        # The scripts' own limit (`limit_lifetime`), past
                        # this one: they stop even where this process died.
                        env={**env, "SCRIPT_TIME_LIMIT": str(timeout + 30)},
                        cwd=cwd or folder,
                        start_new_session=True,
                    )
                )
            failure = _wait(procs, timeout)
        finally:
            _end(procs)
            texts = []
            for out, err in logs:
                out.seek(0)
                err.seek(0)
                texts.append((out.read(), err.read()))
                out.close()
                err.close()
    if failure:
        report = "\n".join(
            f"--- {script} {runs[i][0]}: exit {p.returncode}\n{err[-3000:]}"
            for i, (p, (_, err)) in enumerate(zip(procs, texts))
        )
        raise AssertionError(f"{script}: {failure}\n{report}")
    return texts


def _wait(procs, timeout):
    """`None` once every process exited 0, else why not (as soon as one
    fails, or when `timeout` seconds are up)."""
    deadline = time.monotonic() + timeout
    while True:
        codes = [p.poll() for p in procs]
        if any(code not in (None, 0) for code in codes):
            return "a process failed"
        if all(code == 0 for code in codes):
            return None
        if time.monotonic() > deadline:
            return f"not done within {timeout} s"
        time.sleep(0.2)


def _end(procs):
    """Ends every process still running, with the processes it started."""
    for p in procs:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:  # the group has ended already
            pass
        p.wait()


def facts(stdout):
    """The JSON line a script printed last."""
    return json.loads(stdout.strip().splitlines()[-1])
