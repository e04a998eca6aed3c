"""Running an app: binders, producers, consumers and suppliers started in that order, and
stopped in the reverse order without losing what is in flight."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from types import ModuleType
from typing import TYPE_CHECKING

from binder_core import app_config, tracing
from binder_core.bridge import StreamBridge
from binder_core.config import AppConfig
from binder_core.consumer import ConsumerBinding
from binder_core.conversion import encoder_for
from binder_core.errors import BinderException
from binder_core.failures import ErrorHandler
from binder_core.functions import Kind, find_function
from binder_core.output import Output
from binder_core.pipeline import Pipeline
from binder_core.plan import AppPlan, BindingPlan, make_plan, plan_binding
from binder_core.plugins import Registry
from binder_core.polling import PolledSource
from binder_core.properties import ConsumerProperties, canonical
from binder_core.retry import RetryPolicy
from binder_core.routing import ROUTER, Router, Routes
from binder_core.spi import (
    Binder,
    BindingState,
    Capability,
    ConsumerSpec,
    ProducerSpec,
    Subscription,
)
from binder_core.stateful import AppState
from binder_core.streams import StreamDriver
from binder_core.subscriptions import MultiSubscription, guard
from binder_core.suppliers import SupplierRunner

if TYPE_CHECKING:
    from binder_core.cloudevents import CloudEvents
    from binder_core.management import Management

log = logging.getLogger(__name__)

#: How long stopping waits for a supplier to finish its current value before cancelling it.
SUPPLIER_GRACE = 5.0


class StartError(BinderException):
    """A binder or binding could not be started."""


class App:
    """One app: its plan, and once started its binders, outputs and bindings."""

    def __init__(
        self,
        module: ModuleType,
        config: AppConfig,
        registry: Registry,
        force_binder: str | None = None,
    ) -> None:
        self.module = module
        self.config = config
        self.registry = registry
        self.plan: AppPlan = make_plan(config, module, registry.converters, force_binder)
        self.force_binder = force_binder
        self.binders: dict[str, Binder] = {}
        self.outputs: dict[str, Output] = {}  # definition name -> (first) output
        #: definition name -> its outputs -out-1, -out-2, ... (multi-output functions)
        self.more_outputs: dict[str, list[Output]] = {}
        #: binding name -> the input the app polls itself (stream.pollable-source)
        self.pollables: dict[str, PolledSource] = {}
        self.outputs_by_name: dict[str, Output] = {}  # canonical binding name -> output
        self.bindings: dict[str, ConsumerBinding] = {}
        self._pipelines: list[Pipeline] = []
        self._binder_of: dict[str, str] = {}  # binding name -> binder name
        self._suppliers: list[tuple[SupplierRunner, asyncio.Task[None]]] = []
        #: This app's own ``StreamBridge`` (made at once, so that it is the current one in
        #: every task the app starts: two apps in one process each have their own).
        self.bridge = StreamBridge(self)
        self.management: Management | None = None
        #: The stores and tables of the app's functions (``binder_core.state``).
        self.state = AppState(config.stream.state)
        self._tracing = False  # decided at bind: the app may install its SDK until then

    async def start(self) -> None:
        """Start binders, bind producers, then consumers, then suppliers, then the
        management endpoint when one is configured."""
        if self.config.stream.management.port is not None:
            from binder_core.management import check

            check(self.config)  # a configuration error, raised before anything connects
        await self.bind()
        self.start_suppliers()
        await self.start_management()

    async def start_management(self) -> None:
        """Serve the management endpoint (``stream.management.port``), if configured."""
        props = self.config.stream.management
        if props.port is None or self.management is not None:
            return
        from binder_core.management import Management, ManagementError

        try:
            management = Management(self, props)
            await management.start()
        except ManagementError as exc:
            await self.stop()
            raise StartError(str(exc)) from None
        self.management = management

    async def bind(self) -> None:
        """Start binders, bind producers, then consumers; suppliers wait for
        ``start_suppliers`` (tests attach their probes in between)."""
        # What this app's tasks (consumers, suppliers) inherit: its bridge and settings.
        self.bridge.use()
        app_config.use(self.config.layered)
        self._tracing = tracing.enabled(self.config.stream.tracing)
        try:
            for name in sorted(self.plan.binders()):
                await self._binder(name)
            for plan in self.plan.outputs.values():
                self.outputs[plan.definition] = await self._bind_output(plan)
            for name, plans in self.plan.more_outputs.items():
                self.more_outputs[name] = [await self._bind_output(p) for p in plans]
            for plan in self.plan.bridge.values():
                await self._bind_output(plan)
            for name, plan in self.plan.pollable.items():
                self.pollables[name] = await self._bind_pollable(plan)
            for definition in self.plan.definitions:
                inputs = self.plan.inputs_of(definition.name)
                # A stream function over several inputs reads them all from one driver.
                driver = StreamDriver(definition.first, blocking=False) if len(inputs) > 1 else None
                for index, plan in enumerate(inputs):
                    await self._bind_input(plan, index, driver)
        except BaseException:
            await self.stop()
            raise

    def start_suppliers(self) -> None:
        """Start every supplier (the last step of start-up)."""
        loop = asyncio.get_running_loop()
        for definition in self.plan.definitions:
            if definition.kind is Kind.SUPPLIER and definition.name in self.outputs:
                output = self.outputs[definition.name]
                poller = self.config.poller(output.binding)  # its own, over stream.poller
                runner = SupplierRunner(definition, output, poller)
                task = loop.create_task(runner.run(), name=f"supplier:{definition.name}")
                task.add_done_callback(self._supplier_done)
                self._suppliers.append((runner, task))

    async def _binder(self, name: str) -> Binder:
        binder = self.binders.get(name)
        if binder is not None:
            return binder
        instance_type = self.config.instance_type(name)
        binder_type = self.config.types[instance_type]
        environment = self.config.environments.get(name) or binder_type.environment()
        binder = binder_type.factory(name, environment)
        try:
            await binder.start()
        except Exception as exc:
            raise StartError(f"binder '{name}' ({instance_type}) could not start: {exc}") from exc
        self.binders[name] = binder
        return binder

    async def _bind_output(self, plan: BindingPlan) -> Output:
        binder = await self._binder(plan.binder)
        # The binder gets its own producer model (stream.<type>.bindings.<name>.producer),
        # not the section holding both consumer and producer, as the SPI documents.
        ext = getattr(plan.extension, "producer", None)
        spec = ProducerSpec(plan.name, plan.destination, plan.properties.producer, ext)
        try:
            sink = await binder.provision_producer(spec)
        except Exception as exc:
            raise StartError(f"binding '{plan.name}' could not bind a producer: {exc}") from exc
        output = Output(
            plan.name,
            plan.destination,
            sink,
            encoder_for(plan.content_type, self.registry.converters),
            plan.content_type,
            plan.properties.producer,
        )
        if self._tracing:
            from binder_core.tracing import Tracing

            output.tracing = Tracing(plan.binder_type, plan.destination)
        events = self._cloudevents(plan, binder)
        if events is not None:
            output.message = events.writing(output.message)
        self.outputs_by_name[canonical(plan.name)] = output
        return output

    async def bind_output(self, name: str, dynamic: bool = False) -> Output:
        """Bind an output for ``name`` on first use (``StreamBridge``)."""
        plan = plan_binding(self.config, name, "out", "", self.force_binder)
        output = await self._bind_output(plan)
        if dynamic:
            self.outputs_by_name.pop(canonical(plan.name), None)  # the bridge's cache owns it
        return output

    async def _bind_input(
        self, plan: BindingPlan, index: int = 0, driver: StreamDriver | None = None
    ) -> None:
        binder = await self._binder(plan.binder)
        definition = next(d for d in self.plan.definitions if d.name == plan.definition)
        stateful = any(part.state for part in definition.parts)
        if stateful:
            definition, stores, tables = self.state.bind_functions(definition)
        stream = self.config.stream
        consumer = plan.properties.consumer
        consumer = consumer.model_copy(
            update={
                "instance_index": stream.instance_index
                if consumer.instance_index is None
                else consumer.instance_index,
                "instance_count": stream.instance_count
                if consumer.instance_count is None
                else consumer.instance_count,
            }
        )
        pipeline = (
            self._router(plan, consumer)
            if definition.name == ROUTER
            else Pipeline(
                plan.name,
                definition,
                plan.content_type,
                self.registry.converters,
                RetryPolicy.from_properties(consumer),
                self.outputs.get(definition.name),
                blocking=consumer.blocking,
                batch=consumer.batch_mode,
                more_outputs=self.more_outputs.get(definition.name, ()),
                input_index=index,
                stream=driver,
                native_decoding=consumer.use_native_decoding,
                ignore_headers=consumer.header_mode == "none",
            )
        )
        handler = plan.properties.error_handler_definition
        if handler:
            fn = find_function(self.module, handler)
            assert fn is not None, "checked by the plan"
            pipeline.error_handler = ErrorHandler(
                handler, fn, consumer.dead_letter_after_error_handler
            )
        events = self._cloudevents(plan, binder)
        if events is not None:
            pipeline.read_with(events.incoming)
        if self._tracing:
            from binder_core.tracing import Tracing

            pipeline.use_tracing(Tracing(plan.binder_type, plan.destination, plan.group))
        self._pipelines.append(pipeline)
        ext = getattr(plan.extension, "consumer", None)
        # One subscription per destination (destination: a,b), one binding over them all.
        parts: list[Subscription] = []
        try:
            for destination in plan.destinations:
                spec = ConsumerSpec(plan.name, destination, plan.group, consumer, ext)
                parts.append(await binder.provision_consumer(spec))
        except Exception as exc:
            for part in parts:
                with contextlib.suppress(Exception):
                    await part.close()
            raise StartError(f"binding '{plan.name}' could not bind a consumer: {exc}") from exc
        if stateful:
            try:
                read = {
                    name: (tables[name], table, await self._binder(table.binder))
                    for name, table in self.plan.tables.get(plan.definition, [])
                }
                await self.state.attach(plan, binder, parts, pipeline, stores, read)
            except Exception as exc:
                for part in parts:
                    with contextlib.suppress(Exception):
                        await part.close()
                raise StartError(f"binding '{plan.name}': its state: {exc}") from exc
        subscription = guard(parts[0] if len(parts) == 1 else MultiSubscription(parts))
        binding = ConsumerBinding(
            plan.name, subscription, pipeline, consumer.concurrency * len(parts)
        )
        self.bindings[plan.name] = binding
        self._binder_of[plan.name] = plan.binder
        if consumer.auto_startup:
            try:
                await binding.start()
            except Exception as exc:
                raise StartError(f"binding '{plan.name}' could not start consuming: {exc}") from exc

    def _cloudevents(self, plan: BindingPlan, binder: Binder) -> CloudEvents | None:
        """The binding's CloudEvents codec (``cloudevents: binary | structured``)."""
        props = plan.properties
        if props.cloudevents is None:
            return None
        from binder_core.cloudevents import for_binding

        return for_binding(
            props.cloudevents,
            plan.binder_type,
            binder,
            self.module.__name__,
            plan.name,
            props.cloudevents_source,
            props.cloudevents_type,
        )

    def _supplier_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            log.error("supplier %s stopped: %s", task.get_name(), type(exc).__name__)
            log.debug("supplier %s stopped with: %s", task.get_name(), exc)

    async def stop(self) -> None:
        """Stop intake, finish in-flight work, confirm outputs, acknowledge, close."""
        management, self.management = self.management, None
        if management is not None:
            await management.stop()
        for runner, _ in self._suppliers:
            runner.stop()
        for _runner, task in self._suppliers:
            try:
                await asyncio.wait_for(asyncio.shield(task), SUPPLIER_GRACE)
            except TimeoutError:
                task.cancel()
                await asyncio.wait([task])  # its cancellation, not ours: do not re-raise it
            except Exception:
                pass  # the supplier's own failure, already logged by _supplier_done
        self._suppliers.clear()
        await self._drain_volatile()
        stopping = [
            asyncio.ensure_future(self._stop_binding(name, binding))
            for name, binding in self.bindings.items()
        ]
        await asyncio.sleep(0)  # every binding stops taking messages
        # A stream function holds its last item until it asks for the next one: end its
        # inputs now, so that the items it holds are released and their batches finish.
        for pipeline in self._pipelines:
            try:
                await pipeline.close()
            except Exception as exc:
                log.error("binding %s: stream function did not finish: %s", pipeline.binding, exc)
        await asyncio.gather(*stopping)
        await self.state.close()
        for polled in self.pollables.values():
            try:
                await polled.close()
            except Exception as exc:
                log.error("binding %s did not close cleanly: %s", polled.binding, exc)
        self.pollables.clear()
        await self.bridge.close()
        self.bridge.release()
        for output in self.outputs_by_name.values():
            try:
                await output.close()
            except Exception as exc:
                log.error("binding %s: producer did not close cleanly: %s", output.binding, exc)
        for name, binder in list(self.binders.items()):
            try:
                await binder.close()
            except Exception as exc:
                log.error("binder %s did not close cleanly: %s", name, exc)
        self.binders.clear()
        self.bindings.clear()
        self.outputs_by_name.clear()

    async def _bind_pollable(self, plan: BindingPlan) -> PolledSource:
        binder = await self._binder(plan.binder)
        consumer = plan.properties.consumer
        ext = getattr(plan.extension, "consumer", None)
        spec = ConsumerSpec(plan.name, plan.destination, plan.group, consumer, ext)
        try:
            subscription = await binder.provision_consumer(spec)
        except Exception as exc:
            raise StartError(f"binding '{plan.name}' could not bind a consumer: {exc}") from exc
        self._binder_of[plan.name] = plan.binder
        return PolledSource(
            plan.name,
            subscription,
            plan.content_type,
            self.registry.converters,
            RetryPolicy.from_properties(consumer),
        )

    def _router(self, plan: BindingPlan, consumer: ConsumerProperties) -> Pipeline:
        """Spring's router function on ``functionRouter-in-0``."""
        function = self.config.stream.function
        routes = Routes(
            self.module,
            list(function.routing.functions),
            function.routing_expression,
            function.routing.default_function,
            plan.content_type,
            self.registry.converters,
        )
        return Router(
            plan.name,
            routes,
            plan.content_type,
            self.registry.converters,
            RetryPolicy.from_properties(consumer),
            self.outputs.get(ROUTER),
        )

    def binder_of(self, binding: str) -> str:
        """The name of the binder a consumer binding runs on."""
        return self._binder_of[binding]

    async def _stop_binding(self, name: str, binding: ConsumerBinding) -> None:
        try:
            await binding.stop()
        except Exception as exc:
            log.error("binding %s did not stop cleanly: %s", name, exc)

    async def _drain_volatile(self) -> None:
        """Bindings on binders that cannot keep messages past the process (memory) first
        process what they still hold, their outputs included: one deadline for all of them
        (the longest drain timeout among them), not one per binding."""
        volatile = [
            b
            for name, b in self.bindings.items()
            if b.state is not BindingState.STOPPED
            and Capability.PERSISTENCE not in self.binders[self._binder_of[name]].capabilities
        ]
        if not volatile:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(b.subscription.drain_timeout for b in volatile)

        # A stream function holds its last item until it asks for the next: such a
        # binding counts as done once nothing waits for it (its inputs end right after).
        streaming = {p.binding for p in self._pipelines if p.streaming}

        def busy() -> list[ConsumerBinding]:
            return [
                b
                for b in volatile
                if b.state is BindingState.RUNNING
                and (
                    (not b.idle and b.name not in streaming)
                    or getattr(b.subscription, "waiting", lambda: 0)() > 0
                )
            ]

        while busy():
            if loop.time() > deadline:
                left = sum(getattr(b.subscription, "waiting", lambda: 0)() for b in busy())
                log.warning("stopping with %d message(s) undelivered in memory", left)
                return
            await asyncio.sleep(0.001)

    @property
    def suppliers_running(self) -> bool:
        """Whether a supplier is still producing."""
        return any(not task.done() for _, task in self._suppliers)

    async def suppliers_done(self) -> None:
        """Wait until every supplier has finished (generators exhausted)."""
        if self._suppliers:
            await asyncio.gather(*(t for _, t in self._suppliers), return_exceptions=True)


async def _idle_for(app: App, seconds: float, stop: asyncio.Event) -> None:
    """Set ``stop`` once no binding has received anything for ``seconds`` (and no supplier
    is producing): scale-to-zero, an autoscaler starts the app again on lag."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    while not stop.is_set():
        last = max([started, *(b.stats.last_received for b in app.bindings.values())])
        busy = any(b.in_flight for b in app.bindings.values()) or app.suppliers_running
        if busy:
            last = loop.time()
        left = last + seconds - loop.time()
        if left <= 0:
            log.info("no input for %g s: stopping (idle-exit)", seconds)
            stop.set()
            return
        await asyncio.sleep(min(left, 1.0))


async def run_until_stopped(
    app: App, run_for: float | None = None, idle_exit: float | None = None
) -> None:
    """Start ``app``, run until SIGINT/SIGTERM (or ``run_for`` seconds, or ``idle_exit``
    seconds without input), stop gracefully. A second signal while stopping cancels what is
    left."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    main = asyncio.current_task()
    signals = 0

    def on_signal(signum: int) -> None:
        nonlocal signals
        signals += 1
        if signals == 1:
            log.info("received %s: stopping (again to force)", signal.Signals(signum).name)
            stop.set()
        elif main is not None:
            main.cancel()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        await app.start()
        log.info(
            "started: %s",
            ", ".join(f"{b.name} -> {b.destination}" for b in app.plan.all()) or "no bindings",
        )
        idle = (
            loop.create_task(_idle_for(app, idle_exit, stop), name="idle-exit")
            if idle_exit is not None
            else None
        )
        try:
            if run_for is not None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), run_for)
            else:
                await stop.wait()
        finally:
            if idle is not None:
                idle.cancel()
    finally:
        await app.stop()
        log.info("stopped")
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
