"""The one place the Kafka binder reaches below aiokafka's public API (quarantined here, and
checked by tests/kafka/test_internals.py, which names what an aiokafka release changed).

aiokafka's admin client returns DescribeConfigs answers as raw protocol structures, with no
parsed form: each response's ``resources`` is a list of tuples whose fifth item lists the
config entries as ``(name, value, ...)`` tuples. Reading them by position is below the
public API, so it happens here only.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

#: Position of the config entries in a DescribeConfigs resource, and of name and value in
#: an entry (DescribeConfigsResponse v0-v2: error_code, error_message, resource_type,
#: resource_name, config_entries).
RESOURCE_ENTRIES = 4
ENTRY_NAME, ENTRY_VALUE = 0, 1


class ClientShapeError(RuntimeError):
    """aiokafka no longer answers in the shape this module reads: it changed in a release."""


def config_entries(responses: Iterable[Any]) -> Iterator[tuple[str, Any]]:
    """Every ``(name, value)`` config entry of DescribeConfigs ``responses``."""
    for response in responses:
        resources = getattr(response, "resources", None)
        if resources is None:
            raise ClientShapeError(
                f"aiokafka's DescribeConfigs response ({type(response).__name__}) has no "
                "'resources' attribute any more"
            )
        for resource in resources:
            try:
                entries = resource[RESOURCE_ENTRIES]
                for entry in entries:
                    yield str(entry[ENTRY_NAME]), entry[ENTRY_VALUE]
            except (IndexError, TypeError, KeyError) as exc:
                raise ClientShapeError(
                    "aiokafka's DescribeConfigs resource is no longer a tuple with the config "
                    f"entries at position {RESOURCE_ENTRIES} ({type(exc).__name__}: {exc})"
                ) from exc
