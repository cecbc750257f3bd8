"""Shared test helpers."""

from __future__ import annotations

import contextlib

import pytest

from bigxanes.integrity import tree_checksum


@contextlib.contextmanager
def unchanged(path):
    """Assert that the store at ``path`` is byte-for-byte the same after the block (sha256 over
    all its files), even when the block raises."""
    before = tree_checksum(path)
    try:
        yield before
    finally:
        after = tree_checksum(path)
        assert after == before, f"input store {path} was modified"


@pytest.fixture
def input_guard():
    """``with input_guard(path): unmix_store(path, ...)`` fails the test if ``path`` changes."""
    return unchanged
