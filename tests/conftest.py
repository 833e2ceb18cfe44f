"""Test-suite wiring: each area's fixtures live in a plugin module of its own."""

pytest_plugins = [
    "tests.plugins.api",
    "tests.plugins.engine",
    "tests.plugins.harness",
    "tests.plugins.queue",
    "tests.plugins.registry",
]
