"""The engine tests use the harness and engine plugins' fixtures.

Until tests/conftest.py lists ``tests.plugins.harness`` and ``tests.plugins.engine``,
importing the fixtures here makes them available to these tests (a conftest's fixtures
override a plugin's of the same name, so both together are harmless).
"""

from tests.plugins.engine import make_engine  # noqa: F401
from tests.plugins.harness import (  # noqa: F401
    harness,
    harness_ca_file,
    harness_certs,
    harness_pool,
    loopback_address,
    make_lab,
    make_receiver,
)
