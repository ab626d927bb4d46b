"""Settings for every test.

Hypothesis fails an example that runs longer than its deadline (200 ms by default) and
calls a test flaky when a rerun is faster. On a shared machine under load a single
example can take that long without anything being wrong, and the time of an example is
not what these properties test; pytest-timeout (``pyproject.toml``) still stops a test
that hangs.
"""

from hypothesis import settings

settings.register_profile("cipherdrop", deadline=None)
settings.load_profile("cipherdrop")
