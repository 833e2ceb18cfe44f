"""The engine tests use the engine plugin's fixtures.

Until tests/conftest.py lists ``tests.plugins.engine``, importing its fixture here makes it
available to these tests (a conftest's fixtures override a plugin's of the same name, so both
together are harmless). The harness fixtures come from the registered harness plugin.
"""

from tests.plugins.engine import make_engine  # noqa: F401
