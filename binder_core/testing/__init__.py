"""Testing support for apps and binders.

* ``TestApp`` runs an app's functions on the in-memory binder: send to an input
  destination, receive from an output destination with a timeout, read dead letters (the
  equivalent of Spring's InputDestination / OutputDestination).
* The ``binder_app`` pytest fixture (``binder_core.testing.fixtures``, registered as a
  pytest plugin when this package is installed) starts and stops ``TestApp`` for a test.
* ``binder_core.testing.conformance`` is the behavioural suite every binder must pass.
"""

from binder_core.testing.harness import TestApp

__all__ = ["TestApp"]
