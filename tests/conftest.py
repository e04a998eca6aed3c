"""Test-suite wiring: the broker fixtures and markers live in tests/brokers.py."""

pytest_plugins = ["tests.brokers"]
