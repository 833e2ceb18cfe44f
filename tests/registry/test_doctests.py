"""The examples in the registry's docstrings are true."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "delivery.registry.patch",
    "delivery.registry.schema",
    "delivery.registry.service",
    "delivery.registry.validation",
]


@pytest.mark.parametrize("name", MODULES)
def test_doctests(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name))
    assert result.attempted > 0 and result.failed == 0
