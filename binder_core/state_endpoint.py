"""The stores and tables of a running app on its management endpoint (``binder state``):

- ``GET /state``: every store and table, with its kind, key count and, for a durable
  store, its changelog and last restore;
- ``GET /state/NAME?limit=``: its keys and values (committed state, at most ``limit``);
- ``GET /state/NAME/KEY``: one value, 404 when the key has none.

``NAME`` is ``function.parameter`` (``price_alerts.references``) or the parameter alone when
one function has it. The endpoint's token guards these like every other route. A store
shows what acknowledged batches left: what a batch in flight wrote is not state yet.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pydantic_core

from binder_core.state import GlobalTable, Store, Table

if TYPE_CHECKING:
    from aiohttp import web

    from binder_core.stateful import AppState

#: Entries one ``GET /state/NAME`` returns at most (unless ``limit`` asks for fewer).
MAX_ENTRIES = 1000


class StateRoutes:
    """The routes over one app's stores and tables."""

    def __init__(self, state: AppState) -> None:
        self._state = state

    def routes(self) -> list[Any]:
        from aiohttp import web

        return [
            web.get("/state", self._list),
            web.get("/state/{name}", self._show),
            web.get("/state/{name}/{key}", self._get),
        ]

    def _describe(self, name: str, found: Store[Any] | Table[Any]) -> dict[str, Any]:
        entry: dict[str, Any] = {"name": name}
        if isinstance(found, Store):
            entry["kind"] = "store"
            entry["keys"] = found.size()
            keeper = next((k for k in self._state.keepers if found.name in k.changelogs), None)
            entry["durable"] = keeper is not None
            if keeper is not None:
                entry["changelog"] = keeper.changelogs[found.name]
                if keeper.restores:
                    last = keeper.restores[-1]
                    entry["lastRestore"] = {
                        "records": last.records,
                        "seconds": round(last.seconds, 3),
                        "recordsPerSecond": round(last.rate, 1),
                    }
        else:
            entry["kind"] = "global-table" if isinstance(found, GlobalTable) else "table"
            entry["keys"] = len(found)
            entry["updates"] = found.updates
        return entry

    async def _list(self, request: web.Request) -> web.Response:
        from aiohttp import web

        state = self._state
        answer = []
        for name in state.names():
            found = state.find(name)
            if found is not None:
                answer.append(self._describe(name, found))
        return web.json_response(answer)

    def _lookup(self, request: web.Request) -> tuple[str, Store[Any] | Table[Any] | None]:
        name = request.match_info["name"]
        return name, self._state.find(name)

    async def _show(self, request: web.Request) -> web.Response:
        from aiohttp import web

        name, found = self._lookup(request)
        if found is None:
            return self._unknown(name)
        try:
            limit = max(0, min(int(request.query.get("limit", MAX_ENTRIES)), MAX_ENTRIES))
        except ValueError:
            return web.json_response({"error": "limit must be a whole number"}, status=400)
        values = found.snapshot()
        shown = dict(list(values.items())[:limit])
        answer = self._describe(found.name, found)
        answer["entries"] = pydantic_core.to_jsonable_python(shown)
        answer["truncated"] = len(values) > len(shown)
        return web.json_response(answer)

    async def _get(self, request: web.Request) -> web.Response:
        from aiohttp import web

        name, found = self._lookup(request)
        if found is None:
            return self._unknown(name)
        key = request.match_info["key"]
        present, value = found.lookup(key)
        if not present:
            return web.json_response(
                {"error": f"{found.name} has no value for key '{key}'"}, status=404
            )
        return web.json_response(
            {"name": found.name, "key": key, "value": pydantic_core.to_jsonable_python(value)}
        )

    def _unknown(self, name: str) -> web.Response:
        from aiohttp import web

        from binder_core.errors import did_you_mean

        known = self._state.names()
        short = [n.partition(".")[2] for n in known]
        hint = did_you_mean(name, [*known, *short]) if known else " (this app keeps no state)"
        return web.json_response({"error": f"no store or table '{name}'{hint}"}, status=404)
