"""Example applications: plain functions, bound by the YAML in ``config/``."""
