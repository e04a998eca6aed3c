"""The stores and tables of an app's functions: made when their bindings are bound, passed
to the functions, kept durable and restored where the binder can (``Capability.STATE``),
queried by name while the app runs, and closed when it stops."""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import shutil
import tempfile
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter

from binder_core.committed import InSqlite
from binder_core.conversion import OCTET, ToBytes
from binder_core.errors import BinderException
from binder_core.functions import Definition
from binder_core.keepers import StateKeeper, TableFollower
from binder_core.kit import bind_consumer
from binder_core.message import Message
from binder_core.output import Output
from binder_core.pipeline import Pipeline
from binder_core.plan import BindingPlan
from binder_core.properties import ProducerProperties, StateProperties
from binder_core.spi import (
    Binder,
    Capability,
    ConsumerSpec,
    Outcome,
    Subscription,
)
from binder_core.state import GlobalTable, Store, Table

log = logging.getLogger(__name__)


class StateError(BinderException):
    """A function's state cannot be kept as its bindings are configured."""


def changelog_name(group: str, function: str, param: str) -> str:
    """The changelog topic of a store: named from the app's group, function and store."""
    return f"{group}.{function}.{param}.changelog"


class AppState:
    """Every store and table of one app, by name (``function.parameter``)."""

    def __init__(self, props: StateProperties | None = None) -> None:
        self._props = props or StateProperties()
        self._directory: Path | None = None  # made for sqlite stores when first needed
        self._temporary = False
        self.stores: dict[str, Store[Any]] = {}
        self.tables: dict[str, Table[Any]] = {}
        #: The table each table binding (``<function>-in-1``, ...) feeds.
        self.by_binding: dict[str, Table[Any]] = {}
        self.keepers: list[StateKeeper] = []
        self._followers: list[TableFollower] = []
        self._outputs: list[Output] = []
        self._consumers: list[Any] = []  # table bindings on binders without replay

    # -- binding ---------------------------------------------------------------------------

    def _sqlite(self, name: str, encode: Any) -> InSqlite:
        """An SQLite file for store ``name`` (``stream.state.backend: sqlite``)."""
        if self._directory is None:
            configured = self._props.directory
            if configured is None:
                self._directory = Path(tempfile.mkdtemp(prefix="binder-state-"))
                self._temporary = True
            else:
                configured.mkdir(parents=True, exist_ok=True)
                self._directory = configured
        unique = f"{name}-{os.getpid()}-{uuid.uuid4().hex[:8]}.sqlite"
        return InSqlite(self._directory / unique, encode)

    def bind_functions(
        self, definition: Definition
    ) -> tuple[Definition, list[Store[Any]], dict[str, Table[Any]]]:
        """``definition`` with each function's stores and tables passed to it; the stores
        and tables (by ``function.parameter``), new ones for this definition."""
        stores: list[Store[Any]] = []
        tables: dict[str, Table[Any]] = {}
        parts = []
        for part in definition.parts:
            if not part.state:
                parts.append(part)
                continue
            passed: dict[str, Any] = {}
            for param, kind, value_type in part.state:
                name = f"{part.name}.{param}"
                if kind == "store":
                    committed = (
                        self._sqlite(name, TypeAdapter(value_type).dump_json)
                        if self._props.backend == "sqlite"
                        else None
                    )
                    store: Store[Any] = Store(name, value_type, committed)
                    stores.append(store)
                    self.stores[name] = store
                    passed[param] = store
                else:
                    table: Table[Any] = (GlobalTable if kind == "global-table" else Table)(
                        name, value_type
                    )
                    tables[name] = table
                    self.tables[name] = table
                    passed[param] = table
            fn = functools.partial(part.fn, **passed)
            parts.append(dataclasses.replace(part, fn=fn, state=()))
        return dataclasses.replace(definition, parts=tuple(parts)), stores, tables

    async def attach(
        self,
        plan: BindingPlan,
        binder: Binder,
        parts: Sequence[Subscription],
        pipeline: Pipeline,
        stores: list[Store[Any]],
        tables: dict[str, tuple[Table[Any], BindingPlan, Binder]],
    ) -> None:
        """Make the stores durable and the tables read, before the binding consumes."""
        durable = Capability.STATE in binder.capabilities
        changelogs: dict[str, Output] = {}
        keeper: StateKeeper | None = None
        partitioned: dict[str, tuple[Table[Any], str]] = {}
        for name, (table, table_plan, table_binder) in tables.items():
            self.by_binding[table_plan.name] = table
            if Capability.STATE in table_binder.capabilities:
                reader: Any = table_binder
                if type(table) is Table and durable and table_binder is binder:
                    await reader.provision_table(table_plan.destination, plan.destination)
                    await self._check_copartitioned(binder, plan, table_plan)
                    partitioned[name] = (table, table_plan.destination)
                else:
                    await reader.provision_table(table_plan.destination, None)
                    await self._follow(table_binder, table, table_plan.destination)
            else:
                await self._consume(table_binder, table, table_plan)
        if durable and (stores or partitioned):
            if len(parts) != 1:
                raise StateError(
                    f"binding '{plan.name}': a function that keeps state reads one "
                    f"destination, not {len(parts)} ({plan.destination})"
                )
            state_binder: Any = binder
            if stores and not plan.group:
                raise StateError(
                    f"binding '{plan.name}': '{plan.definition}' keeps state on binder "
                    f"'{plan.binder}', which makes it durable in changelog topics named from "
                    f"the consumer group: set stream.bindings.{plan.name}.group"
                )
            for store in stores:
                function, _, param = store.name.partition(".")
                name = changelog_name(plan.group or "", function, param)
                sink = await state_binder.provision_changelog(name, plan.destination)
                output = Output(
                    f"{store.name}.changelog",
                    name,
                    sink,
                    ToBytes(bytes, OCTET),
                    OCTET,
                    ProducerProperties(),
                )
                self._outputs.append(output)
                changelogs[store.name] = output
            keeper = StateKeeper(
                plan.name,
                state_binder,
                {s.name: (s, changelogs[s.name].destination) for s in stores},
                partitioned,
            )
            listen = getattr(parts[0], "listen", None)
            if listen is None:
                raise StateError(
                    f"binder '{plan.binder}' declares the state capability, but its "
                    "subscriptions take no partition listener"
                )
            listen(keeper)
            self.keepers.append(keeper)
        elif stores:
            log.info(
                "binding %s: store(s) %s kept in this process (binder '%s' has no durable "
                "state): lost when it stops",
                plan.name,
                ", ".join(s.name for s in stores),
                plan.binder,
            )
        pipeline.use_state(stores, changelogs)

    @staticmethod
    async def _check_copartitioned(binder: Any, plan: BindingPlan, table: BindingPlan) -> None:
        ours = await binder.partition_count(plan.destination)
        theirs = await binder.partition_count(table.destination)
        if theirs is None:
            raise StateError(
                f"binding '{table.name}': table topic '{table.destination}' does not exist; "
                f"create it with the partitions of '{plan.destination}' ({ours}), or read it "
                "whole as a GlobalTable"
            )
        if ours != theirs:
            raise StateError(
                f"binding '{table.name}': table topic '{table.destination}' has {theirs} "
                f"partition(s) and input '{plan.destination}' {ours}: a Table is read by the "
                "partitions of the input, so both must be partitioned alike (and keyed "
                "alike); read it whole as a GlobalTable otherwise"
            )

    async def _follow(self, binder: Any, table: Table[Any], destination: str) -> None:
        follower = TableFollower(binder, table, destination, None)
        self._followers.append(follower)
        await follower.start()
        log.info("table %s: read %d key(s) from %s", table.name, len(table), destination)

    async def _consume(self, binder: Binder, table: Table[Any], plan: BindingPlan) -> None:
        """A table on a binder that cannot replay a destination: fed by an anonymous
        consumer from now on (what was sent before the app started is not seen)."""

        async def apply(messages: Sequence[Message[bytes]]) -> list[Outcome]:
            for message in messages:
                table.apply(message)
            return [None] * len(messages)

        ext = getattr(plan.extension, "consumer", None)
        spec = ConsumerSpec(plan.name, plan.destination, None, plan.properties.consumer, ext)
        binding = await bind_consumer(binder, spec, apply)
        self._consumers.append(binding)
        log.info(
            "table %s: binder '%s' cannot replay %s, so the table holds what is sent to it "
            "from now on",
            table.name,
            plan.binder,
            plan.destination,
        )

    # -- queries ---------------------------------------------------------------------------

    def find(self, name: str) -> Store[Any] | Table[Any] | None:
        """A store or table by ``function.parameter``, or by parameter when one has it."""
        every: dict[str, Store[Any] | Table[Any]] = {**self.stores, **self.tables}
        found = every.get(name)
        if found is not None:
            return found
        matches = [v for k, v in every.items() if k.partition(".")[2] == name]
        return matches[0] if len(matches) == 1 else None

    def names(self) -> list[str]:
        return sorted({*self.stores, *self.tables})

    # -- stopping --------------------------------------------------------------------------

    async def close(self) -> None:
        """After the bindings stopped: table readers and changelog producers."""
        for binding in self._consumers:
            try:
                await binding.stop()
            except Exception as exc:
                log.error("table binding %s did not stop cleanly: %s", binding.name, exc)
        for follower in self._followers:
            await follower.close()
        for keeper in self.keepers:
            await keeper.close()
        for output in self._outputs:
            try:
                await output.close()
            except Exception as exc:
                log.error("changelog %s did not close cleanly: %s", output.destination, exc)
        self._consumers.clear()
        self._followers.clear()
        self._outputs.clear()
        for store in self.stores.values():
            store.close()
        if self._temporary and self._directory is not None:
            shutil.rmtree(self._directory, ignore_errors=True)
            self._directory = None
