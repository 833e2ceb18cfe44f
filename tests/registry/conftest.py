"""Until tests/conftest.py lists ``tests.plugins.registry``, make its fixtures visible here."""

from tests.plugins.registry import registry, registry_url

__all__ = ["registry", "registry_url"]
