"""Registry fixtures: a Registry on a fresh SQLite database per test.

``registry_url`` is the store URL (reopen it to test durability); ``registry`` is a Registry
opened on it with the first-start objects, closed after the test. ``set_ok`` runs a /set and
fails the test unless every item succeeded.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from delivery.registry import Registry

__all__ = ["registry", "registry_url", "set_ok"]


@pytest.fixture
def registry_url(tmp_path: Path) -> str:
    """A sqlite:// URL in a folder that does not exist yet (the registry creates it)."""
    return f"sqlite://{tmp_path}/data/delivery.db"


@pytest.fixture
async def registry(registry_url: str) -> AsyncIterator[Registry]:
    reg = await Registry.open(registry_url)
    try:
        yield reg
    finally:
        await reg.close()


async def set_ok(
    reg: Registry,
    type_name: str,
    *,
    create: dict[str, Any] | None = None,
    update: dict[str, Any] | None = None,
    destroy: list[str] | None = None,
) -> dict[str, Any]:
    """A /set whose every item must succeed; returns the response."""
    result = await reg.set(
        type_name, if_in_state=None, create=create, update=update, destroy=destroy
    )
    for member in ("notCreated", "notUpdated", "notDestroyed"):
        assert result[member] is None, result[member]
    return result
