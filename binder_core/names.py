"""Destination and group names checked against the broker's naming rules at configuration
load, so a name the broker would refuse (a Kafka topic with a space, a RabbitMQ queue over
255 bytes, a megabyte-long name) is one more problem in the start-up report instead of a
failure, or a retry loop, once the app runs.

The rules belong to each binder type (``BinderType.check_name``); this module asks them
about every name a binding will create. The kinds of name asked about:

- ``"destination"``: a topic, exchange or stream (and a configured ``dlq-name``);
- ``"group"``: a consumer group (and each of a producer's ``required-groups``);
- ``"subscription"``: ``<destination>.<group>``, the name brokers derive per group (a
  RabbitMQ queue and its ``.dlq``); a binder type that derives nothing answers ``None``.
"""

from __future__ import annotations

from collections.abc import Sequence

from binder_core.config_sources import Layered
from binder_core.errors import Problem
from binder_core.spi import BinderType

#: Characters of a name shown in a problem: a megabyte-long name is not echoed whole.
SHOWN = 60


def shown(name: str) -> str:
    """A name for a message: quoted, cut to ``SHOWN`` characters with its length."""
    if len(name) <= SHOWN:
        return repr(name)
    return f"{name[:SHOWN]!r}... ({len(name):,} characters)"


def ask(binder_type: BinderType, kind: str, name: str) -> str | None:
    """The binder type's verdict on one name: what is wrong, or ``None``."""
    check = binder_type.check_name
    if check is None:
        return None
    try:
        return check(kind, name)
    except Exception as exc:  # a plugin's broken rule must not hide every other problem
        return f"the {binder_type.name} binder's name check failed ({type(exc).__name__})"


def binding_name_problems(
    binder_type: BinderType,
    layered: Layered,
    binding: str,
    destination: str | None,
    *,
    group: str | None = None,
    required_groups: Sequence[str] = (),
    dlq_name: str | None = None,
) -> list[Problem]:
    """Every name binding ``binding`` would create, checked; one problem per bad name,
    located at the key that sets it. ``destination`` None: the binding's name is used."""
    if binder_type.check_name is None:
        return []
    base = ("stream", "bindings", binding)
    out: list[Problem] = []

    def check(path: tuple[str, ...], kind: str, name: str, what: str) -> None:
        problem = ask(binder_type, kind, name)
        if problem is not None:
            out.append(
                Problem(
                    ".".join(path),
                    f"{what} {shown(name)} is not a valid {binder_type.name} name: {problem}",
                    layered.source_of(path),
                )
            )

    what = "destination"
    if destination is None:
        destination, what = binding, "destination (the binding's name)"
    check((*base, "destination"), "destination", destination, what)
    if group is not None:
        check((*base, "group"), "group", group, "group")
        check((*base, "group"), "subscription", f"{destination}.{group}", "queue")
    path: tuple[str, ...]
    for required in required_groups:
        path = (*base, "producer", "required-groups")
        check(path, "group", required, "required group")
        check(path, "subscription", f"{destination}.{required}", "queue")
    if dlq_name is not None:
        path = ("stream", binder_type.name, "bindings", binding, "consumer", "dlq-name")
        check(path, "destination", dlq_name, "dead-letter destination")
    return out
