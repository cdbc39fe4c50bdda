"""Runs the distributed training scripts of `tests/scripts/` as real
processes on this machine: loopback addresses only, every process bounded
in time and ended with the others when one fails, so that no test can hang
on a peer that died (a collective waits for its peers forever)."""

import json
import os
import socket
import subprocess
import sys
import tempfile
import time

SCRIPTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "scripts")
CHECKOUT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_ports(count):
    """`count` distinct TCP ports free on 127.0.0.1 now (each was bound,
    then released, for the scripts' coordinators and workers)."""
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
    """The scripts' environment: this one, the checkout importable, one
    thread per operation (two processes share two cores), and `extra`."""
    path = os.pathsep.join([CHECKOUT, os.environ.get("PYTHONPATH", "")])
    return {
        **os.environ,
        "PYTHONPATH": path,
        "OMP_NUM_THREADS": "1",
        "TF_CPP_MIN_LOG_LEVEL": "3",
        **extra,
    }


def run(script, runs, timeout, cwd=None):
    """Runs `python SCRIPT ARGS...` once per `(args, env)` in `runs`, all at
    once, in folder `cwd` (a temporary one by default), and returns their
    `(stdout, stderr)`.

    Raises `AssertionError`, with the end of every process's error output,
    when one exits non-zero or when they are not all done within `timeout`
    seconds; the others are then ended at once.
    """
    path = os.path.join(SCRIPTS, script)
    with tempfile.TemporaryDirectory() as folder:
        logs, procs = [], []
        for i, (args, env) in enumerate(runs):
            out = open(os.path.join(folder, f"{i}.out"), "w+")
            err = open(os.path.join(folder, f"{i}.err"), "w+")
            logs.append((out, err))
            procs.append(
                subprocess.Popen(
                    [sys.executable, path, *map(str, args)],
                    stdout=out,
                    stderr=err,
                    env=env,
                    cwd=cwd or folder,
                )
            )
        deadline = time.monotonic() + timeout
        failure = None
        while any(p.poll() is None for p in procs):
            if any(p.returncode not in (None, 0) for p in procs):
                failure = "a process failed"
                break
            if time.monotonic() > deadline:
                failure = f"not done within {timeout} s"
                break
            time.sleep(0.2)
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        if failure is None and any(p.returncode for p in procs):
            failure = "a process failed"
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


def facts(stdout):
    """The JSON line a script printed last."""
    return json.loads(stdout.strip().splitlines()[-1])
