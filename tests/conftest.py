"""Shared test set-up: the decode check keeps its results in a temporary folder, not in the
user's cache (each test's folders are new, so their results would only pile up there)."""

from __future__ import annotations

import pytest

from lrkit.data import pipeline


@pytest.fixture(autouse=True)
def _check_results_in_tmp(
    monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> None:
    root = tmp_path_factory.mktemp("checks")
    where = pipeline._checks_file
    monkeypatch.setattr(pipeline, "_checks_file", lambda folder: root / where(folder).name)
