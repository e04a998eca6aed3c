"""Test-suite wiring: the broker fixtures and markers live in tests/brokers.py; the
property-based (fuzz) tests run a short profile unless ``HYPOTHESIS_PROFILE=long``."""

import os

from hypothesis import HealthCheck, settings

pytest_plugins = ["tests.brokers"]

# A few seconds in every run; HYPOTHESIS_PROFILE=long searches a hundred times longer.
# No example database: a failure prints the input that reproduces it, and nothing is
# written into the checkout.
settings.register_profile("short", max_examples=300, deadline=None, database=None)
settings.register_profile(
    "long",
    max_examples=30_000,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "short"))
