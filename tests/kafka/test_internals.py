"""What the Kafka binder reads below aiokafka's public API (``binders/kafka/internals.py``)
is still there: when an aiokafka release changes it, this fails and says what changed."""

from __future__ import annotations

import pytest

from binders.kafka.internals import ClientShapeError, config_entries
from binders.kafka.provisioning import Provisioner
from binders.kafka.settings import KafkaEnvironment
from tests.kafka.conftest import Kit

pytestmark = pytest.mark.kafka


async def test_describe_configs_answers_in_the_shape_we_read(kit: Kit) -> None:
    """A real broker's answer, through the real admin client: the topic's own
    max.message.bytes comes out of the raw protocol structure."""
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    from binders.kafka.clients import ClientConfig

    topic = kit.name("shape")
    await kit.create(topic, 1, {"max.message.bytes": "4321"})
    env = KafkaEnvironment.model_validate({"bootstrap-servers": kit.bootstrap})
    provisioner = Provisioner("kafka", env, ClientConfig("kafka", env))
    await provisioner.connect()
    try:
        admin = provisioner._admin  # the admin client whose answers internals.py reads
        resource = ConfigResource(ConfigResourceType.TOPIC, topic, {"max.message.bytes": None})
        responses = await admin.describe_configs([resource])
        entries = dict(config_entries(responses))
        assert "max.message.bytes" in entries, (
            f"DescribeConfigs entries no longer carry the config name at position 0: {entries}"
        )
        assert str(entries["max.message.bytes"]) == "4321", (
            "DescribeConfigs entries no longer carry the value at position 1"
        )
        assert await provisioner.max_message_bytes(topic) == 4321
    finally:
        await provisioner.close()


def test_a_changed_shape_is_named_not_guessed() -> None:
    class Response:
        resources = [("error", None, 2, "t")]  # the entries are gone from position 4

    with pytest.raises(ClientShapeError, match="position 4"):
        list(config_entries([Response()]))
    with pytest.raises(ClientShapeError, match="'resources'"):
        list(config_entries([object()]))
