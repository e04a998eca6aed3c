"""``binder send`` labels and trims what it sends as documented, tells how to send where
nothing consumes yet, and ``binder config`` names bindings as ``binder bindings`` does."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pika
import pytest

from binder_core.cli import _stdin_payload, payload_content_type
from tests.cli.test_cli import BINDER, ROOT, binder


@pytest.mark.parametrize(
    ("payload", "content_type"),
    [
        (b'{"id": 1}', "application/json"),
        (b"42", "application/json"),
        (b'"quoted"', "application/json"),
        (b"hello", "text/plain"),
        (b"NaN", "text/plain"),  # not JSON
        (b"", "text/plain"),
        (b"\xff\xfe", "application/octet-stream"),
    ],
)
def test_send_labels_a_payload_by_what_it_is(payload: bytes, content_type: str) -> None:
    assert payload_content_type(payload) == content_type


@pytest.mark.parametrize(
    ("raw", "content_type", "sent"),
    [
        (b"hello\n", None, b"hello"),
        (b"hello\r\n", None, b"hello"),
        (b"hello\n\n", None, b"hello\n"),  # one newline, the line's own
        (b"hello", None, b"hello"),
        (b"\x00\x01\n", "application/octet-stream", b"\x00\x01\n"),  # bytes sent exactly
        (b"hello\n", "text/plain", b"hello"),
    ],
)
def test_send_drops_one_trailing_newline_of_stdin(
    raw: bytes, content_type: str | None, sent: bytes
) -> None:
    assert _stdin_payload(raw, content_type) == sent


def _kafka_record(bootstrap: str, topic: str) -> tuple[bytes, dict[str, bytes]]:
    import asyncio

    from aiokafka import AIOKafkaConsumer

    async def first() -> tuple[bytes, dict[str, bytes]]:
        consumer = AIOKafkaConsumer(
            topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None
        )
        await consumer.start()
        try:
            record = await asyncio.wait_for(consumer.getone(), 30)
            return record.value or b"", dict(record.headers)
        finally:
            await consumer.stop()

    return asyncio.run(first())


@pytest.mark.kafka
def test_send_from_stdin_on_kafka_is_text_without_the_newline(
    kafka_bootstrap: str, unique_name: Callable[[str], str]
) -> None:
    topic = unique_name("send-text")
    where = f"stream.binders.kafka.environment.bootstrap-servers={kafka_bootstrap}"
    result = subprocess.run(
        [BINDER, "send", topic, "-", "--profile", "kafka", "--set", where],
        cwd=ROOT, input=b"hello\n", capture_output=True, timeout=90,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert f"sent 5 bytes (text/plain) to {topic}" in result.stderr.decode()
    value, headers = _kafka_record(kafka_bootstrap, topic)
    assert value == b"hello"
    assert headers["contentType"] == b'"text/plain"'  # a MimeType as Spring writes it


def _queue_depth(url: str, queue: str) -> int:
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        return int(connection.channel().queue_declare(queue, passive=True).method.message_count)
    finally:
        connection.close()


def _delete(url: str, queues: list[str], exchange: str) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        for queue in queues:
            channel.queue_delete(queue)
        channel.exchange_delete(exchange)
    finally:
        connection.close()


@pytest.mark.rabbit
def test_send_to_rabbit_says_how_when_nothing_consumes_and_required_group_keeps_it(
    rabbit_url: str, unique_name: Callable[[str], str]
) -> None:
    exchange = unique_name("orders")
    where = ("--set", f"stream.binders.rabbit.environment.uri={rabbit_url}")
    try:
        refused = binder("send", exchange, '{"id": 1}', "--profile", "rabbit", *where)
        assert refused.returncode == 1
        assert "unroutable: no queue is bound to exchange" in refused.stderr
        assert f"nothing consumes '{exchange}' yet" in refused.stderr
        assert "--required-group GROUP" in refused.stderr
        assert "Traceback" not in refused.stderr

        kept = binder(
            "send", exchange, '{"id": 1}', "--profile", "rabbit", *where,
            "--required-group", "billing",
        )  # fmt: skip
        assert kept.returncode == 0, kept.stderr
        assert f"sent 9 bytes (application/json) to {exchange}" in kept.stderr
        assert _queue_depth(rabbit_url, f"{exchange}.billing") == 1
    finally:
        _delete(rabbit_url, [f"{exchange}.billing", f"{exchange}.billing.dlq"], exchange)


def test_config_and_bindings_name_a_binding_the_same_way(tmp_path: Path) -> None:
    config = binder("config")
    assert config.returncode == 0, config.stderr
    assert "stream.bindings.price_alerts-in-0.destination" in config.stdout
    assert "price-alerts-in-0" not in config.stdout

    configured = binder("bindings")
    app = binder("bindings", "apps.market")
    for listing in (configured, app):
        assert listing.returncode == 0, listing.stderr
        names = {line.split()[0] for line in listing.stdout.splitlines()[1:]}
        assert "price_alerts-in-0" in names and "price-alerts-in-0" not in names


def test_config_shows_a_name_as_the_configuration_wrote_it(tmp_path: Path) -> None:
    (tmp_path / "application.yaml").write_text(
        "stream:\n  bindings:\n    Orders_In-0: {destination: orders}\n"
        "  kafka:\n    bindings:\n      Orders_In-0: {consumer: {max-poll-records: 5}}\n"
    )
    result = binder("config", "--config", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "stream.bindings.Orders_In-0.destination" in result.stdout
    assert "stream.kafka.bindings.Orders_In-0.consumer.max-poll-records" in result.stdout
