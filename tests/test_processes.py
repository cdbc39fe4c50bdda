"""`tests/processes.py`, the launcher of the distributed tests: a failed or
late process never leaves its peers running."""

import os
import time

import pytest

from tests import processes


def test_a_failed_process_ends_its_peers_at_once(tmp_path):
    """A peer waiting on a collective would wait forever for one that
    died: `processes.run` ends the others when one fails, and reports it."""
    script = tmp_path / "peer.py"
    script.write_text(
        "import sys, time\n"
        "if sys.argv[1] == 'fail':\n"
        "    sys.exit('failed on purpose')\n"
        "time.sleep(120)\n"
    )
    runs = [(["fail"], dict(os.environ)), (["wait"], dict(os.environ))]
    started = time.perf_counter()
    with pytest.raises(AssertionError, match="failed on purpose"):
        processes.run(str(script), runs, 60)
    assert time.perf_counter() - started < 30


def test_processes_out_of_time_are_ended_with_their_children(tmp_path):
    """At the time limit the process and the processes it started end."""
    child_pid = tmp_path / "child.pid"
    script = tmp_path / "slow.py"
    script.write_text(
        "import subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', "
        "'import time; time.sleep(120)'])\n"
        f"open({str(child_pid)!r}, 'w').write(str(child.pid))\n"
        "time.sleep(120)\n"
    )
    started = time.perf_counter()
    with pytest.raises(AssertionError, match="not done within 3 s"):
        processes.run(str(script), [([], dict(os.environ))], 3)
    assert time.perf_counter() - started < 30
    pid = int(child_pid.read_text())
    for _ in range(50):  # the kill is asynchronous: up to 5 s to be gone
        if not _running(pid):
            break
        time.sleep(0.1)
    else:
        pytest.fail(f"the child process {pid} outlived the time limit")


def _running(pid):
    """Whether process `pid` runs (a zombie, ended but not yet reaped by
    its new parent, does not)."""
    try:
        with open(f"/proc/{pid}/stat") as file:
            return file.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_free_ports_are_distinct_and_bindable():
    import socket

    ports = processes.free_ports(3)
    assert len(set(ports)) == 3
    for port in ports:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", port))
