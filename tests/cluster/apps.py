"""The app the cluster tests run as several processes: it passes each message on, saying
which instance handled it (``CLUSTER_APP_INSTANCE``) and from which input partition, so a
test can see from the outputs alone how the work was shared."""

from __future__ import annotations

import os

from binder_core import Message

INSTANCE = os.environ.get("CLUSTER_APP_INSTANCE", "")


def relay(message: Message[bytes]) -> Message[bytes]:
    """The payload unchanged, with the instance and the input partition as headers."""
    headers: dict[str, str] = {"instance": INSTANCE}
    if message.partition is not None:
        headers["from-partition"] = str(message.partition)
    return Message(message.payload, headers=headers)
