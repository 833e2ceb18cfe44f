"""The harness tests use the harness plugin's fixtures.

tests/conftest.py lists plugin modules for the whole suite; until it lists
``tests.plugins.harness``, importing the fixtures here makes them available to these tests
(a conftest's fixtures override a plugin's of the same name, so both together are harmless).
"""

from tests.plugins.harness import (  # noqa: F401
    harness,
    harness_ca_file,
    harness_certs,
    harness_pool,
    loopback_address,
    make_lab,
    make_receiver,
)
