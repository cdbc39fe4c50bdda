"""Fixtures that set the engine's policy for one test (`policy.override`)
and record the plans it chose (`policy.recording`)."""

import contextlib

import pytest

from keras_gru_plus import policy


@pytest.fixture
def resize():
    """`resize(block_steps=3, ...)`: the current backend's policy with these
    block and group sizes until the test ends. A size the backend's policy
    leaves off (`None`) stays off, so a test runs the plans of that
    backend, only on smaller inputs."""
    with contextlib.ExitStack() as stack:

        def apply(**sizes):
            current = policy.current()
            stack.enter_context(
                policy.override(
                    **{
                        name: size
                        for name, size in sizes.items()
                        if getattr(current, name) is not None
                    }
                )
            )

        yield apply


@pytest.fixture
def plans():
    """The list of the plans chosen during the test."""
    with policy.recording() as chosen:
        yield chosen


def pytest_terminal_summary(terminalreporter):
    """Lists how long each distributed training test's processes took
    (the `distributed` property they record)."""
    lines = [
        f"{report.nodeid}: {value}"
        for report in terminalreporter.stats.get("passed", [])
        if report.when == "call"
        for name, value in report.user_properties
        if name == "distributed"
    ]
    if lines:
        terminalreporter.section("distributed training")
        for line in lines:
            terminalreporter.write_line(line)
