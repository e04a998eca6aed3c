"""The asyncapi tests run ``binder run`` too (the ``apps`` fixture)."""

from tests.support import apps  # noqa: F401  (the apps fixture)
