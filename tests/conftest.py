"""Shared test set-up: the decode check keeps its results in a temporary folder, not in the
user's cache (each test's folders are new, so their results would only pile up there); Ctrl-C
reaches the tests as it does under a terminal, also when the runner was started in the
background."""

from __future__ import annotations

import signal
from collections.abc import Iterator

import pytest

from lrkit.data import pipeline


@pytest.fixture(scope="session", autouse=True)
def _check_results_in_tmp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Session-wide, so that module-scoped fixtures building data are covered too."""
    root = tmp_path_factory.mktemp("checks")
    where = pipeline._checks_file
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(pipeline, "_checks_file", lambda folder: root / where(folder).name)
        yield


@pytest.fixture(scope="session", autouse=True)
def _ctrl_c_as_in_a_terminal() -> Iterator[None]:
    """A shell starts a background job (`cmd &`, nohup) with SIGINT ignored, and Python then
    installs no KeyboardInterrupt handler; the Ctrl-C tests send a real SIGINT, so give them
    the handler a terminal session has, and put back what was there."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)
