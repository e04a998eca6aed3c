"""The dead letters of a running app on its management endpoint, for binders whose dead
letters live in the app's process (memory) and for any other: ``binder dlq --url``.

- ``GET /dead-letters``: every dead-letter queue of the app's consumer bindings (and those
  its binders find), with count, oldest, newest and top reasons.
- ``GET /dead-letters/QUEUE?limit=&reason=&pattern=&since=&until=&payload=``: letters.
- ``POST /dead-letters/QUEUE/replay`` with ``{"to", "reason", "pattern", "since", "until",
  "count", "maxReplays", "dryRun"}``: the replay's summary.
- ``POST /dead-letters/QUEUE/purge``: how many were removed.

The endpoint's token guards these like every other route; posts take JSON only.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from binder_core.dlq import operations, view
from binder_core.dlq.spi import DeadLetterQueue, DeadLetters, NoDeadLetterQueue, access
from binder_core.spi import Binder, ConsumerSpec

if TYPE_CHECKING:
    from aiohttp import web

    from binder_core.plan import AppPlan

#: Letters one ``GET`` returns at most.
MAX_LETTERS = 1000


class DeadLetterRoutes:
    """The routes, over an app's plan and started binders."""

    def __init__(self, plan: AppPlan, binders: dict[str, Binder]) -> None:
        self._plan = plan
        self._binders = binders

    def routes(self) -> list[Any]:
        from aiohttp import web

        return [
            web.get("/dead-letters", self._list),
            web.get("/dead-letters/{queue}", self._show),
            web.post("/dead-letters/{queue}/replay", self._replay),
            web.post("/dead-letters/{queue}/purge", self._purge),
        ]

    def _known(self) -> list[tuple[str, str, DeadLetters]]:
        """(queue, binding, access) of every consumer binding with a dead-letter queue."""
        out: list[tuple[str, str, DeadLetters]] = []
        plans = [*self._plan.inputs.values(), *self._plan.pollable.values()]
        plans += [p for more in self._plan.more_inputs.values() for p in more]
        for plan in plans:
            found = access(self._binders.get(plan.binder))
            if found is None:
                continue
            ext = getattr(plan.extension, "consumer", None)
            for destination in plan.destinations:
                spec = ConsumerSpec(
                    plan.name, destination, plan.group, plan.properties.consumer, ext
                )
                name = found.locate(spec)
                if name is not None:
                    out.append((name, plan.name, found))
        return out

    async def _open(self, name: str) -> DeadLetterQueue:
        candidates = [a for q, _, a in self._known() if q == name]
        candidates += [a for b in self._binders.values() if (a := access(b)) is not None]
        for found in candidates:
            try:
                return await found.open(name)
            except NoDeadLetterQueue:
                continue
        raise NoDeadLetterQueue(f"no dead-letter queue '{name}' in this app")

    async def _list(self, request: web.Request) -> web.Response:
        from aiohttp import web

        seen: dict[str, tuple[str | None, DeadLetters]] = {}
        for name, binding, known in self._known():
            seen.setdefault(name, (binding, known))
        for binder in self._binders.values():
            offered = access(binder)
            if offered is not None:
                for discovered in await offered.discover():
                    seen.setdefault(discovered, (None, offered))
        queues = []
        for queue_name, (owner, found) in seen.items():
            try:
                queue = await found.open(queue_name)
            except NoDeadLetterQueue:
                continue
            try:
                queues.append((await operations.stats(queue, owner)).as_dict())
            finally:
                await queue.close()
        return web.json_response({"queues": queues})

    async def _show(self, request: web.Request) -> web.Response:
        from aiohttp import web

        q = request.query
        try:
            selection = _selection(dict(q))
            limit = min(int(q.get("limit", "20")), MAX_LETTERS)
            payload = int(q.get("payload", str(view.PAYLOAD_BYTES)))
            traces = q.get("traces", "") in ("1", "true")
        except ValueError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        try:
            queue = await self._open(request.match_info["queue"])
        except NoDeadLetterQueue as exc:
            return web.json_response({"error": str(exc)}, status=404)
        try:
            size = await queue.size()  # first: letters being read may not count
            found = await operations.select(queue, selection, limit)
            return web.json_response(
                {
                    "queue": queue.name,
                    "count": size,
                    "letters": [view.describe(x, payload, traces) for x in found],
                }
            )
        finally:
            await queue.close()

    async def _body(self, request: web.Request) -> dict[str, Any] | web.Response:
        from aiohttp import web

        if request.content_type != "application/json":
            return web.json_response({"error": "send the options as application/json"}, status=415)
        try:
            body = await request.json()
        except (ValueError, UnicodeDecodeError):
            body = None
        if not isinstance(body, dict):
            return web.json_response({"error": "send a JSON object"}, status=400)
        return body

    async def _replay(self, request: web.Request) -> web.Response:
        from aiohttp import web

        body = await self._body(request)
        if not isinstance(body, dict):
            return body
        try:
            selection = _selection(body)
            max_replays = int(body.get("maxReplays", operations.MAX_REPLAYS))
        except ValueError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        to = body.get("to")
        try:
            queue = await self._open(request.match_info["queue"])
        except NoDeadLetterQueue as exc:
            return web.json_response({"error": str(exc)}, status=404)
        try:
            summary = await operations.replay(
                queue,
                selection,
                str(to) if to else None,
                max_replays,
                bool(body.get("dryRun", False)),
            )
        finally:
            await queue.close()
        return web.json_response(summary.as_dict())

    async def _purge(self, request: web.Request) -> web.Response:
        from aiohttp import web

        body = await self._body(request)
        if not isinstance(body, dict):
            return body
        try:
            queue = await self._open(request.match_info["queue"])
        except NoDeadLetterQueue as exc:
            return web.json_response({"error": str(exc)}, status=404)
        try:
            removed = await queue.purge()
        finally:
            await queue.close()
        return web.json_response({"queue": queue.name, "purged": removed})


def _selection(options: dict[str, Any]) -> operations.Selection:
    """A selection from query or body options; ``ValueError`` says what is wrong."""

    def number(key: str) -> int | None:
        value = options.get(key)
        if value in (None, ""):
            return None
        count = int(value)
        if count < 0:
            raise ValueError(f"{key} cannot be negative")
        return count

    def when(key: str) -> float | None:
        value = options.get(key)
        if value in (None, ""):
            return None
        if isinstance(value, int | float):
            return float(value)
        return operations.parse_time(str(value))

    pattern = options.get("pattern")
    try:
        compiled = re.compile(str(pattern)) if pattern else None
    except re.error as exc:
        raise ValueError(f"pattern is not a regular expression: {exc}") from None
    reason = options.get("reason")
    return operations.Selection(
        reason=str(reason) if reason else None,
        pattern=compiled,
        since=when("since"),
        until=when("until"),
        count=number("count"),
    )
