"""An AsyncAPI 3.0 document of an app: what it consumes and sends, where, and in which
shape, made from the same plan ``binder run`` binds (``plan.py``) and from the functions'
type hints (``functions.py``).

- servers: one per binder the app uses, with its protocol and first address, read from the
  binder's environment; never a user name, a password or any other secret;
- channels: one per destination and binder, with Kafka's and AMQP's channel bindings;
- operations: one per binding, ``receive`` for inputs (pollable sources too), ``send`` for
  outputs (StreamBridge bindings too); the group as Kafka's ``groupId`` operation binding
  and, for every binder, ``x-binder-group``;
- messages: the payload's JSON Schema from the parameter or return type: pydantic models
  and dataclasses (their examples become message examples), ``Message[T]`` as ``T``, a
  batch's ``list[T]`` as ``T`` per message, ``str`` and ``bytes`` with their content types,
  each position of a multi-output function's tuple on its own binding.

pydantic writes JSON Schema 2020-12; AsyncAPI's schema object is draft 07. The few
keywords that differ are translated (``$defs`` become ``components.schemas``, tuples'
``prefixItems`` become ``items`` lists, an OpenAPI-style ``discriminator`` becomes its
property name), so every document validates against the official AsyncAPI 3.0 schema.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import re
import typing
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, TypeAdapter

from binder_core.config import AppConfig
from binder_core.conversion import OCTET, TEXT, is_json, media_type
from binder_core.functions import Definition, FunctionInfo
from binder_core.message import Message
from binder_core.plan import AppPlan, BindingPlan
from binder_core.routing import ROUTER

ASYNCAPI_VERSION = "3.0.0"

#: AsyncAPI's protocol names per binder type (others are named as their type).
_PROTOCOLS = {"kafka": "kafka", "rabbit": "amqp", "redis": "redis", "memory": "memory"}
_KAFKA_BINDING = "0.5.0"
_AMQP_BINDING = "0.3.0"

#: What AsyncAPI accepts as a key of channels, operations, messages and schemas.
_KEY = re.compile(r"[^A-Za-z0-9_.\-]")

_ITERATORS = {
    collections.abc.Iterator,
    collections.abc.Iterable,
    collections.abc.Generator,
    collections.abc.AsyncIterator,
    collections.abc.AsyncIterable,
    collections.abc.AsyncGenerator,
    collections.abc.Awaitable,
    collections.abc.Coroutine,
}

_NO_TYPE = object()


def key(text: str) -> str:
    """``text`` as an AsyncAPI component key."""
    return _KEY.sub("_", text) or "_"


def document(
    plan: AppPlan, config: AppConfig, title: str, version: str = "1.0.0"
) -> dict[str, Any]:
    """The AsyncAPI 3.0 document of an app's plan."""
    builder = _Builder(plan, config)
    return builder.build(title, version)


class _Builder:
    def __init__(self, plan: AppPlan, config: AppConfig) -> None:
        self.plan = plan
        self.config = config
        self.servers: dict[str, Any] = {}
        self.channels: dict[str, Any] = {}
        self.operations: dict[str, Any] = {}
        self.messages: dict[str, Any] = {}
        self.schemas: dict[str, Any] = {}
        self.definitions = {d.name: d for d in plan.definitions}

    def build(self, title: str, version: str) -> dict[str, Any]:
        for name in sorted(self.plan.binders()):
            self.servers[key(name)] = self._server(name)
        for definition in self.plan.definitions:
            for index, binding in enumerate(self.plan.inputs_of(definition.name)):
                self._operation(binding, "receive", self._input_type(definition, index))
            for index, binding in enumerate(self.plan.outputs_of(definition.name)):
                self._operation(binding, "send", self._output_type(definition, index))
        for binding in self.plan.pollable.values():
            self._operation(binding, "receive", _NO_TYPE, pollable=True)
        for binding in self.plan.bridge.values():
            self._operation(binding, "send", _NO_TYPE, bridge=True)
        doc: dict[str, Any] = {
            "asyncapi": ASYNCAPI_VERSION,
            "info": {
                "title": title,
                "version": version,
                "description": f"The channels of {title}, bound by binder.",
            },
            "defaultContentType": "application/json",
        }
        if self.servers:
            doc["servers"] = self.servers
        doc["channels"] = self.channels
        doc["operations"] = self.operations
        components: dict[str, Any] = {"messages": self.messages}
        if self.schemas:
            components["schemas"] = self.schemas
        doc["components"] = components
        return doc

    # -- servers ---------------------------------------------------------------------------

    def _server(self, name: str) -> dict[str, Any]:
        binder_type = (
            self.config.instance_type(name) if name in self.config.stream.binders else name
        )
        protocol = _PROTOCOLS.get(binder_type, key(binder_type))
        env = self.config.environments.get(name)
        host, pathname, scheme = _address(env)
        if scheme:
            protocol = scheme
        elif _tls(env) and protocol in ("amqp", "redis"):
            protocol += "s"
        server: dict[str, Any] = {
            "host": host or ("in-process" if binder_type == "memory" else "localhost"),
            "protocol": protocol,
            "description": f"binder '{name}' (type {binder_type})",
        }
        if pathname:
            server["pathname"] = pathname
        return server

    # -- types -------------------------------------------------------------------------------

    def _input_type(self, definition: Definition, index: int) -> Any:
        if definition.name == ROUTER:
            return _NO_TYPE
        first = definition.first
        item = first.input_types[index] if index < len(first.input_types) else first.input_type
        return _unwrap_message(item)

    def _output_type(self, definition: Definition, index: int) -> Any:
        if definition.name == ROUTER:
            return _NO_TYPE
        last = definition.last
        returned = _return_type(last)
        if returned is _NO_TYPE:
            return _NO_TYPE
        if last.outputs > 1 and typing.get_origin(returned) is tuple:
            args = typing.get_args(returned)
            returned = args[index] if index < len(args) else Any
        if last.batch and typing.get_origin(returned) in (list, collections.abc.Sequence):
            returned = (typing.get_args(returned) or (Any,))[0]
        return _unwrap_message(_not_none(returned))

    # -- channels and operations -----------------------------------------------------------

    def _operation(
        self,
        binding: BindingPlan,
        action: str,
        payload_type: Any,
        pollable: bool = False,
        bridge: bool = False,
    ) -> None:
        message_key = self._message(binding, payload_type)
        for destination in binding.destinations:
            channel_key = key(f"{binding.binder}.{destination}")
            channel = self.channels.get(channel_key)
            if channel is None:
                channel = self.channels[channel_key] = self._channel(binding, destination)
            channel["messages"].setdefault(
                message_key, {"$ref": f"#/components/messages/{message_key}"}
            )
            op_key = key(
                binding.name if len(binding.destinations) == 1 else f"{binding.name}.{destination}"
            )
            operation: dict[str, Any] = {
                "action": action,
                "channel": {"$ref": f"#/channels/{channel_key}"},
                "messages": [{"$ref": f"#/channels/{channel_key}/messages/{message_key}"}],
                "summary": _summary(binding, action, pollable, bridge),
                "x-binder-binding": binding.name,
            }
            if binding.definition:
                operation["x-binder-function"] = binding.definition
            if action == "receive":
                operation["x-binder-group"] = binding.group
                if binding.group and binding.binder_type == "kafka":
                    operation["bindings"] = {
                        "kafka": {
                            "groupId": {"type": "string", "enum": [binding.group]},
                            "bindingVersion": _KAFKA_BINDING,
                        }
                    }
                if pollable:
                    operation["x-binder-pollable"] = True
                definition = self.definitions.get(binding.definition)
                if definition is not None and (
                    definition.first.batch or binding.properties.consumer.batch_mode
                ):
                    operation["x-binder-batch"] = True
            self.operations[op_key] = operation

    def _channel(self, binding: BindingPlan, destination: str) -> dict[str, Any]:
        channel: dict[str, Any] = {
            "address": destination,
            "messages": {},
            "servers": [{"$ref": f"#/servers/{key(binding.binder)}"}],
        }
        if binding.binder_type == "kafka":
            partitions = max(binding.properties.producer.partition_count, 1)
            channel["bindings"] = {
                "kafka": {
                    "topic": destination,
                    "partitions": partitions,
                    "bindingVersion": _KAFKA_BINDING,
                }
            }
        elif binding.binder_type == "rabbit":
            ext = binding.extension
            side = getattr(ext, "consumer" if binding.direction == "in" else "producer", None)
            prefix = str(getattr(side, "prefix", "") or "")
            exchange_type = str(getattr(side, "exchange_type", "topic") or "topic")
            exchange: dict[str, Any] = {
                "name": prefix + destination,
                "durable": bool(getattr(side, "exchange_durable", True)),
                "autoDelete": bool(getattr(side, "exchange_auto_delete", False)),
            }
            if exchange_type in ("topic", "direct", "fanout", "headers", "default"):
                exchange["type"] = exchange_type
            channel["bindings"] = {
                "amqp": {"is": "routingKey", "exchange": exchange, "bindingVersion": _AMQP_BINDING}
            }
        return channel

    # -- messages and schemas --------------------------------------------------------------

    def _message(self, binding: BindingPlan, payload_type: Any) -> str:
        content_type = binding.content_type
        mt = media_type(content_type)
        if payload_type is _NO_TYPE or payload_type is Any or payload_type is object:
            payload: dict[str, Any] = {}
            name = "Any"
        elif payload_type is bytes:
            payload = {"type": "string", "format": "binary"}
            name = "Bytes"
            if is_json(mt):
                content_type = OCTET
        elif payload_type is str:
            payload = {"type": "string"}
            name = "Text"
            if is_json(mt):
                content_type = TEXT
        else:
            payload = self._schema(payload_type)
            name = _type_name(payload_type)
        message_key = key(f"{name}.{media_type(content_type) or 'default'}")
        if message_key in self.messages:
            return message_key
        message: dict[str, Any] = {
            "name": name,
            "title": name,
            "contentType": content_type,
            "payload": payload,
        }
        examples = _examples(payload, self.schemas)
        if examples:
            message["examples"] = [{"payload": e} for e in examples]
        self.messages[message_key] = message
        return message_key

    def _schema(self, tp: Any) -> dict[str, Any]:
        try:
            raw = TypeAdapter(tp).json_schema(ref_template="#/components/schemas/{model}")
        except Exception:
            return {"description": f"{_type_name(tp)} (no JSON Schema could be made for it)"}
        defs = raw.pop("$defs", {})
        for def_name, definition in defs.items():
            self.schemas.setdefault(key(def_name), _draft7(definition))
        schema = dict(_draft7(raw))
        if _is_model(tp):
            name = key(_type_name(tp))
            self.schemas.setdefault(name, schema)
            return {"$ref": f"#/components/schemas/{name}"}
        return schema


def _summary(binding: BindingPlan, action: str, pollable: bool, bridge: bool) -> str:
    if pollable:
        return f"polled by the app from {binding.destination} (stream.pollable-source)"
    if bridge:
        return f"sent by the app through StreamBridge to {binding.destination}"
    verb = "consumes" if action == "receive" else "sends"
    who = binding.definition or binding.name
    group = f" as group {binding.group}" if action == "receive" and binding.group else ""
    return f"{who} {verb} {binding.destination}{group}"


def _is_model(tp: Any) -> bool:
    return (isinstance(tp, type) and issubclass(tp, BaseModel)) or dataclasses.is_dataclass(tp)


def _type_name(tp: Any) -> str:
    name = getattr(tp, "__name__", None)
    if name and not typing.get_args(tp):
        return str(name)
    text = str(tp).replace("typing.", "")
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_") or "Payload"


def _unwrap_message(tp: Any) -> Any:
    if tp is Message:
        return Any
    if typing.get_origin(tp) is Message:
        return (typing.get_args(tp) or (Any,))[0]
    return tp


def _not_none(tp: Any) -> Any:
    """``T | None`` -> ``T`` (returning None sends nothing)."""
    args = typing.get_args(tp)
    if args and type(None) in args and typing.get_origin(tp) in (typing.Union, _union_type()):
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1:
            return rest[0]
    return tp


def _union_type() -> Any:
    import types

    return types.UnionType


def _return_type(info: FunctionInfo) -> Any:
    fn = info.fn
    target = fn if callable(fn) and hasattr(fn, "__code__") else type(fn).__call__
    try:
        hints = typing.get_type_hints(target)
    except Exception:
        return Any
    returned = hints.get("return", Any)
    origin = typing.get_origin(returned)
    if origin in _ITERATORS:
        returned = (typing.get_args(returned) or (Any,))[0]
    return returned


def _draft7(schema: Any) -> Any:
    """pydantic's JSON Schema 2020-12 in draft 07 terms (what AsyncAPI's schema object is)."""
    if isinstance(schema, list):
        return [_draft7(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for name, value in schema.items():
        if name == "prefixItems":
            out["items"] = _draft7(value)
            continue
        if name == "items" and "prefixItems" in schema:
            if value is False:
                out["additionalItems"] = False
            continue
        if name == "discriminator" and isinstance(value, Mapping):
            prop = value.get("propertyName")
            if isinstance(prop, str):
                out["discriminator"] = prop
            continue
        if name == "$ref" and isinstance(value, str) and value.startswith("#/components/schemas/"):
            out[name] = "#/components/schemas/" + key(value.rsplit("/", 1)[-1])
            continue
        if name in ("properties", "patternProperties", "definitions") and isinstance(value, dict):
            out[name] = {k: _draft7(v) for k, v in value.items()}
            continue
        out[name] = _draft7(value)
    return out


def _examples(payload: dict[str, Any], schemas: dict[str, Any]) -> list[Any]:
    """The examples a model gives (``json_schema_extra={"examples": [...]}``, field
    examples aside)."""
    target = payload
    ref = payload.get("$ref")
    if isinstance(ref, str):
        target = schemas.get(ref.rsplit("/", 1)[-1], {})
    found = target.get("examples")
    return list(found) if isinstance(found, list) else []


def _address(env: Any) -> tuple[str | None, str | None, str | None]:
    """(host[:port], pathname, protocol from a URL) of a binder environment, without any
    user name or password."""
    if env is None:
        return None, None, None
    servers = getattr(env, "servers", None)
    if callable(servers):
        try:
            found = servers()
        except Exception:
            found = []
        if found:
            return str(found[0]), None, None
    for field in ("uri", "url"):
        value = getattr(env, field, None)
        if value is None:
            continue
        secret = getattr(value, "get_secret_value", None)
        text = secret() if callable(secret) else str(value)
        parts = urlsplit(text)
        if parts.hostname:
            host = parts.hostname if parts.port is None else f"{parts.hostname}:{parts.port}"
            path = parts.path if parts.path not in ("", "/") else None
            return host, path, parts.scheme or None
    addresses = getattr(env, "addresses", None)
    if isinstance(addresses, list) and addresses:
        first = str(addresses[0])
        return first.rsplit("@", 1)[-1], _vhost(env), None
    found_host = getattr(env, "host", None)
    port = getattr(env, "port", None)
    if isinstance(found_host, str):
        return (f"{found_host}:{port}" if port else found_host), _vhost(env), None
    return None, None, None


def _vhost(env: Any) -> str | None:
    vhost = getattr(env, "virtual_host", None)
    if isinstance(vhost, str) and vhost not in ("", "/"):
        return "/" + vhost.lstrip("/")
    return None


def _tls(env: Any) -> bool:
    ssl = getattr(env, "ssl", None) or getattr(env, "tls", None)
    return bool(getattr(ssl, "enabled", False))


def to_yaml(doc: dict[str, Any]) -> str:
    """The document as YAML, keys in the order AsyncAPI readers expect."""
    import yaml

    return str(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, width=100))
