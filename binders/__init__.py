"""The built-in binders. Each sub-package is a plugin of ``binder_core.hookspecs`` and is
registered through the ``binder_core.plugins`` entry points, exactly as a third-party
binder is."""
