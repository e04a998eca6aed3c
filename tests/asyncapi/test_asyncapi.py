"""``binder asyncapi``: every document it writes validates against the official AsyncAPI
3.0 JSON Schema (vendored in schema/, from asyncapi/spec-json-schemas), for the market
demo on each binder and for an app using every conversion type; and it says what the app
really binds: servers without secrets, channels, groups, payload schemas, examples."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from binder_core import asyncapi
from binder_core.config import load_config
from binder_core.plan import make_plan
from binder_core.plugins import load_plugins
from binder_core.remote import call
from tests.asyncapi import every_type
from tests.operating.conftest import management_url
from tests.support import Apps

SCHEMA = Path(__file__).with_name("schema") / "asyncapi-3.0.0.json"
ROOT = Path(__file__).resolve().parents[2]
BINDER = str(Path(sys.executable).with_name("binder"))


@pytest.fixture(scope="module")
def validator() -> Any:
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def valid(validator: Any, doc: dict[str, Any]) -> None:
    errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(
        f"{'/'.join(map(str, e.absolute_path))}: {e.message[:300]}" for e in errors[:10]
    )
    # Every local reference points at something.
    text = json.dumps(doc)
    for ref in {r for r in _refs(doc)}:
        node: Any = doc
        for part in ref.removeprefix("#/").split("/"):
            assert isinstance(node, dict) and part in node, f"dangling $ref {ref}"
            node = node[part]
    assert text


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [r for v in node.values() for r in _refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


def plan_doc(module: Any, tree: dict[str, Any], tmp_path: Path, *profiles: str) -> dict[str, Any]:
    config_dir = tmp_path / "config"
    config_dir.mkdir(exist_ok=True)
    (config_dir / "application.yaml").write_text(yaml.safe_dump(tree), encoding="utf-8")
    registry = load_plugins()
    config = load_config(config_dir, list(profiles), [], registry.binder_types)
    plan = make_plan(config, module, registry.converters)
    return asyncapi.document(plan, config, module.__name__)


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [BINDER, "asyncapi", *args], cwd=ROOT, capture_output=True, text=True, check=False
    )


@pytest.mark.parametrize("profile", [None, "kafka", "rabbit"])
def test_the_market_demo_validates_on_every_binder(validator: Any, profile: str | None) -> None:
    args = ["apps.market", *(["--profile", profile] if profile else [])]
    done = cli(*args)
    assert done.returncode == 0, done.stderr
    doc = yaml.safe_load(done.stdout)
    valid(validator, doc)
    ops = doc["operations"]
    assert ops["price_alerts-in-0"]["action"] == "receive"
    assert ops["price_alerts-in-0"]["x-binder-group"] == "alerts"
    assert ops["ticker-out-0"]["action"] == "send"
    tick = doc["components"]["schemas"]["Tick"]
    assert set(tick["required"]) == {"symbol", "price", "time"}
    server = next(iter(doc["servers"].values()))
    if profile == "kafka":
        assert server == {
            "host": "127.0.0.1:9092",
            "protocol": "kafka",
            "description": "binder 'kafka' (type kafka)",
        }
        assert ops["price_alerts-in-0"]["bindings"]["kafka"]["groupId"]["enum"] == ["alerts"]
        assert doc["channels"]["kafka.ticks"]["bindings"]["kafka"]["topic"] == "ticks"
    if profile == "rabbit":
        assert (server["host"], server["protocol"]) == ("127.0.0.1:5672", "amqp")
        exchange = doc["channels"]["rabbit.ticks"]["bindings"]["amqp"]["exchange"]
        assert exchange["name"] == "ticks" and exchange["type"] == "topic"
        assert "guest" not in done.stdout  # neither the user name nor the password


def test_json_format_is_the_same_document(validator: Any) -> None:
    as_json = cli("apps.market", "--format", "json")
    as_yaml = cli("apps.market")
    assert as_json.returncode == 0, as_json.stderr
    doc = json.loads(as_json.stdout)
    valid(validator, doc)
    assert doc == yaml.safe_load(as_yaml.stdout)


def test_every_conversion_type(validator: Any, tmp_path: Path) -> None:
    names = [
        "text_in",
        "bytes_in",
        "dict_in",
        "model_in",
        "message_in",
        "batch_in",
        "split",
        "pets",
        "ticks",
        "streamed",
        "untyped",
    ]
    tree = {
        "stream": {
            "function": {"definition": ";".join(names), "routing": {"enabled": True}},
            "pollable-source": "polled",
            "bindings": {
                "bytes_in-in-0": {"content-type": "application/octet-stream"},
                "text_in-in-0": {"content-type": "text/plain", "group": "shouters"},
                "model_in-in-0": {"destination": "orders", "group": "fills"},
                "batch_in-in-0": {"destination": "orders", "group": "batchers"},
                "reports": {"destination": "reports"},
            },
        }
    }
    doc = plan_doc(every_type, tree, tmp_path)
    valid(validator, doc)
    ops, messages, schemas = (
        doc["operations"],
        doc["components"]["messages"],
        doc["components"]["schemas"],
    )

    def payload(op: str) -> dict[str, Any]:
        ref = ops[op]["messages"][0]["$ref"].rsplit("/", 1)[-1]
        return messages[ref]

    assert payload("text_in-in-0")["payload"] == {"type": "string"}
    assert payload("text_in-in-0")["contentType"] == "text/plain"
    assert payload("text_in-out-0")["contentType"] == "text/plain"  # a str on a JSON binding
    assert payload("bytes_in-in-0")["payload"] == {"type": "string", "format": "binary"}
    assert payload("bytes_in-in-0")["contentType"] == "application/octet-stream"
    assert payload("dict_in-in-0")["payload"]["type"] == "object"
    assert payload("dict_in-out-0")["payload"] == {"items": {"type": "integer"}, "type": "array"}
    order = payload("model_in-in-0")
    assert order["payload"] == {"$ref": "#/components/schemas/Order"}
    assert order["examples"] == [{"payload": {"id": 7, "symbol": "ACME", "side": "buy", "qty": 3}}]
    assert schemas["Order"]["properties"]["side"] == {"$ref": "#/components/schemas/Side"}
    assert schemas["Side"]["enum"] == ["buy", "sell"]
    assert payload("model_in-out-0")["payload"] == {"$ref": "#/components/schemas/Fill"}
    assert schemas["Fill"]["required"] == ["order_id", "price"]
    # Message[T] is T; a batch's list[T] is T per message, marked as a batch.
    assert payload("message_in-in-0")["payload"] == {"$ref": "#/components/schemas/Order"}
    assert payload("message_in-out-0")["payload"] == {"$ref": "#/components/schemas/Fill"}
    assert payload("batch_in-in-0")["payload"] == {"$ref": "#/components/schemas/Order"}
    assert payload("batch_in-out-0")["payload"] == {"$ref": "#/components/schemas/Fill"}
    assert ops["batch_in-in-0"]["x-binder-batch"] is True
    # Two groups on one destination: one channel, two operations.
    assert ops["model_in-in-0"]["channel"] == ops["batch_in-in-0"]["channel"]
    assert ops["model_in-in-0"]["x-binder-group"] == "fills"
    # Each position of a multi-output function's tuple on its own binding.
    assert payload("split-out-0")["payload"] == {"$ref": "#/components/schemas/Fill"}
    assert payload("split-out-1")["payload"] == {"$ref": "#/components/schemas/Order"}
    # JSON Schema 2020-12 written as draft 07: tuples, discriminators.
    pet = schemas["Pet"]["properties"]
    assert pet["pair"]["items"] == [{"type": "integer"}, {"type": "string"}]
    assert pet["pet"]["discriminator"] == "kind"
    assert "prefixItems" not in json.dumps(doc)
    assert ops["ticks-out-0"]["action"] == "send"
    assert payload("ticks-out-0")["payload"] == {"$ref": "#/components/schemas/Order"}
    assert payload("streamed-in-0")["payload"] == {"$ref": "#/components/schemas/Order"}
    assert payload("streamed-out-0")["payload"] == {"$ref": "#/components/schemas/Fill"}
    assert payload("untyped-in-0")["payload"] == {}
    assert ops["pets-in-0"]["action"] == "receive" and "pets-out-0" not in ops
    assert ops["functionRouter-in-0"]["action"] == "receive"
    assert ops["polled-in-0"]["x-binder-pollable"] is True
    assert ops["reports"]["action"] == "send"


def test_servers_carry_no_secret(validator: Any, tmp_path: Path) -> None:
    tree = {
        "stream": {
            "function": {"definition": "text_in"},
            "default-binder": "rabbit",
            "binders": {
                "rabbit": {
                    "type": "rabbit",
                    "environment": {
                        "uri": "amqps://shop:s3cr3t-pw@broker.example:5671/prod",
                    },
                },
            },
            "bindings": {"text_in-in-0": {"group": "g"}},
        }
    }
    doc = plan_doc(every_type, tree, tmp_path)
    valid(validator, doc)
    assert doc["servers"]["rabbit"]["host"] == "broker.example:5671"
    assert doc["servers"]["rabbit"]["protocol"] == "amqps"
    assert doc["servers"]["rabbit"]["pathname"] == "/prod"
    text = json.dumps(doc)
    assert "s3cr3t" not in text and "shop" not in text


def test_a_bad_app_is_a_configuration_error() -> None:
    done = cli("apps.nothing_here")
    assert done.returncode == 2
    assert "Traceback" not in done.stderr


async def test_a_running_app_serves_its_document(validator: Any, apps: Apps) -> None:
    """``GET /asyncapi`` on the management endpoint: the document ``binder asyncapi``
    writes for the same app and configuration."""
    app = apps("run", "apps.market", "--management-port", "0")
    url = await management_url(app)
    status, served = await asyncio.to_thread(call, url, "/asyncapi", "BINDER_TEST_NO_TOKEN")
    assert status == 200, served
    valid(validator, served)
    written = cli("apps.market", "--format", "json")
    assert written.returncode == 0, written.stderr
    assert served == json.loads(written.stdout)
