"""binder: plain Python functions bound to message brokers by YAML.

The common case needs no import of this package at all: a plain function plus YAML is an
app. What is exported here is for the less common cases: reading payload and headers
together (`Message`), sending from arbitrary code (`StreamBridge`), and reading the app's
own settings from the same configuration sources (`app_settings`), and keeping state
(`Store`, `Table`, `GlobalTable`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from binder_core.message import Message

if TYPE_CHECKING:
    from binder_core.app_config import app_settings
    from binder_core.bridge import StreamBridge
    from binder_core.failures import FailedMessage
    from binder_core.polling import PolledSource
    from binder_core.state import GlobalTable, Store, Table

__all__ = [
    "FailedMessage",
    "GlobalTable",
    "Message",
    "Store",
    "StreamBridge",
    "Table",
    "app_settings",
    "pollable",
]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    # Imported on first use: `import binder_core` stays cheap for apps that never need them.
    if name == "StreamBridge":
        from binder_core.bridge import StreamBridge

        return StreamBridge
    if name == "app_settings":
        from binder_core.app_config import app_settings

        return app_settings
    if name in ("Store", "Table", "GlobalTable"):
        from binder_core import state

        return getattr(state, name)
    if name == "FailedMessage":
        from binder_core.failures import FailedMessage

        return FailedMessage
    raise AttributeError(name)


def pollable(binding: str) -> PolledSource:
    """The running app's input ``binding`` that the app polls itself
    (``stream.pollable-source``), see ``binder_core.polling``."""
    from binder_core.bridge import StreamBridge

    return StreamBridge.current().pollable(binding)
