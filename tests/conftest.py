"""Shared test set-up: lrkit's cache folder points into a temporary folder, never the home."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _private_lrkit_cache(
    monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Results the pipeline keeps between runs (decode checks) go to a per-test folder."""
    monkeypatch.setenv("LRKIT_CACHE", str(tmp_path_factory.mktemp("lrkit-cache")))
