"""The in-memory binder: the embedded default, for one-process apps and for tests."""
