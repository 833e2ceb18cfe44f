"""Queue fixtures for this folder until tests.plugins.queue is in tests/conftest.py."""

from tests.plugins.queue import store, store_opener

__all__ = ["store", "store_opener"]
