"""Shared test set-up: the decode check keeps its results in a temporary folder, not in the
user's cache (each test's folders are new, so their results would only pile up there)."""

from __future__ import annotations

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
