"""Creating and checking topics before anything is bound, as Spring's KafkaTopicProvisioner
does: missing topics are created with the partitions the bindings need; a topic with too
few partitions is grown (``auto-add-partitions``) or reported at start-up, never discovered
later as idle consumers or misrouted keys."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Literal

from binder_core.errors import BinderException
from binders.kafka.clients import ClientConfig
from binders.kafka.internals import config_entries
from binders.kafka.settings import KafkaEnvironment, KafkaTopicProperties

log = logging.getLogger(__name__)

_TOPIC_EXISTS = 36


class ProvisioningError(BinderException):
    """A topic could not be created or does not fit the bindings."""


def describe(exc: BaseException) -> str:
    """An exception as one line: its type and message, without the traceback."""
    text = str(exc).strip()
    name = type(exc).__name__
    return f"{name}: {text}" if text and not text.startswith(name) else text or name


class Provisioner:
    """One admin connection per binder, for topics and partitions."""

    def __init__(self, binder: str, env: KafkaEnvironment, clients: ClientConfig) -> None:
        self.binder = binder
        self.env = env
        self._clients = clients
        self._admin: Any = None
        self._lock = asyncio.Lock()
        self._checked: set[str] = set()  # topics whose durability was looked at

    async def connect(self) -> None:
        """Reach a broker, retrying with back-off for up to ``health-timeout`` seconds, so
        an app started just before its broker waits for it rather than dying."""
        from aiokafka.admin import AIOKafkaAdminClient
        from aiokafka.errors import KafkaError

        loop = asyncio.get_running_loop()
        timeout = self.env.health_timeout
        deadline = loop.time() + timeout
        servers = ",".join(self.env.servers())
        delay = 0.2
        while True:
            kwargs = self._clients.kwargs("admin")
            kwargs.setdefault("request_timeout_ms", max(1000, int(min(timeout, 30) * 1000)))
            admin = AIOKafkaAdminClient(**kwargs)
            remaining = deadline - loop.time()
            try:
                await asyncio.wait_for(admin.start(), max(remaining, 0.1))
                await asyncio.wait_for(admin.describe_cluster(), max(deadline - loop.time(), 1))
            except (KafkaError, OSError, TimeoutError) as exc:
                await _quietly(admin.close())
                verdict = await self._clients.diagnose()
                if verdict is not None:  # retrying cannot help: say what to fix, now
                    raise ProvisioningError(verdict) from None
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise ProvisioningError(
                        f"kafka binder '{self.binder}': no broker reachable at {servers} "
                        f"within {timeout:g} s ({describe(exc)}); is Kafka running there? "
                        "(health-timeout sets how long start-up waits)"
                    ) from None
                wait = min(delay, remaining)
                log.warning(
                    "kafka binder '%s': cannot reach %s (%s); retrying in %.1f s",
                    self.binder,
                    servers,
                    describe(exc),
                    wait,
                )
                await asyncio.sleep(wait)
                delay = min(delay * 2, 5.0)
                continue
            self._admin = admin
            log.info("kafka binder '%s': connected to %s", self.binder, servers)
            return

    async def probe(self) -> None:
        """One metadata round trip; raises when no broker answers."""
        if self._admin is None:
            raise ProvisioningError(f"kafka binder '{self.binder}' is not connected")
        await self._admin.describe_cluster()

    async def close(self) -> None:
        """Drop the admin connection."""
        admin, self._admin = self._admin, None
        if admin is not None:
            await _quietly(admin.close())

    async def _call(self, what: str, coro: Any) -> Any:
        try:
            return await asyncio.wait_for(coro, self.env.health_timeout)
        except TimeoutError:
            raise ProvisioningError(
                f"kafka binder '{self.binder}': {what} timed out after "
                f"{self.env.health_timeout:g} s"
            ) from None

    async def partitions(self, topic: str) -> int | None:
        """The partition count of ``topic``, or None when it does not exist."""
        names = await self._call("listing topics", self._admin.list_topics())
        if topic not in names:
            return None
        found = await self._call(f"describing topic {topic}", self._admin.describe_topics([topic]))
        for entry in found:
            if entry.get("topic") == topic and not entry.get("error_code"):
                return len(entry.get("partitions") or [])
        return None

    async def max_message_bytes(self, topic: str) -> int | None:
        """The largest record batch ``topic`` takes (its effective ``max.message.bytes``),
        or None when the broker does not say (not allowed to describe configs, say)."""
        from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
        from aiokafka.errors import KafkaError

        if self._admin is None:
            return None
        resource = ConfigResource(ConfigResourceType.TOPIC, topic, {"max.message.bytes": None})
        try:
            responses = await self._call(
                f"reading max.message.bytes of {topic}", self._admin.describe_configs([resource])
            )
        except (KafkaError, OSError, ProvisioningError) as exc:
            log.debug("cannot read max.message.bytes of %s: %s", topic, describe(exc))
            return None
        for name, value in config_entries(responses):
            if name == "max.message.bytes" and str(value).isdigit():
                return int(value)
        return None

    async def warn_if_fragile(self, topic: str, acks: object, binding: str) -> None:
        """Say once, at start-up, when a record Kafka acknowledged on ``topic`` could still be
        lost to the failure of one broker of a cluster (a single broker is a development
        set-up: nothing to say). Silent when the broker does not tell (not allowed to
        describe configs, say)."""
        if self._admin is None or topic in self._checked:
            return
        self._checked.add(topic)
        try:
            reasons = await self._fragile(topic, acks)
        except Exception as exc:  # a check, never a reason to stop
            log.debug("cannot check the durability of %s: %s", topic, describe(exc))
            return
        if reasons:
            log.warning(
                "kafka binder '%s': records binding %s writes to topic %s can be lost when one "
                "broker fails, though Kafka acknowledged them: %s. For nothing lost on a "
                "cluster: replication-factor 3, min.insync.replicas 2 (on the brokers, or in "
                "the binding's topic.properties) and required-acks all",
                self.binder,
                binding,
                topic,
                "; ".join(reasons),
            )

    async def _fragile(self, topic: str, acks: object) -> list[str]:
        from aiokafka.errors import KafkaError

        cluster = await self._call("describing the cluster", self._admin.describe_cluster())
        if len(cluster.get("brokers") or []) < 2:
            return []
        # A topic just created may not be known yet to the broker asked: ask again briefly.
        replicas, min_isr = 0, None
        for _ in range(30):
            try:
                replicas, min_isr = await self._replication(topic)
            except (KafkaError, ProvisioningError) as exc:
                log.debug("asking how %s is replicated: %s", topic, describe(exc))
            if replicas and min_isr is not None:
                break
            await asyncio.sleep(0.1)
        reasons = []
        if str(acks) not in ("all", "-1"):
            reasons.append(f"acks is {acks}, so the partition leader alone acknowledges")
        if not replicas or min_isr is None:
            log.debug("cannot tell how %s is replicated", topic)
        elif replicas < 2:
            reasons.append(f"it has {replicas} replica{'' if replicas == 1 else 's'}")
        elif min_isr < 2:
            reasons.append(
                f"its min.insync.replicas is {min_isr}, so once the other replicas fall "
                "behind an acknowledged record may be on one broker only"
            )
        return reasons

    async def _replication(self, topic: str) -> tuple[int, int | None]:
        """(fewest replicas of any partition, min.insync.replicas) of ``topic``; 0 and None
        for what the broker asked does not know."""
        from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

        found = await self._call(f"describing topic {topic}", self._admin.describe_topics([topic]))
        parts = next((e.get("partitions") or [] for e in found if e.get("topic") == topic), [])
        replicas = min((len(p.get("replicas") or []) for p in parts), default=0)
        resource = ConfigResource(ConfigResourceType.TOPIC, topic, {"min.insync.replicas": None})
        responses = await self._call(
            f"reading min.insync.replicas of {topic}", self._admin.describe_configs([resource])
        )
        entries = config_entries(responses)
        return replicas, next((int(v) for n, v in entries if n == "min.insync.replicas"), None)

    async def ensure_topic(
        self,
        topic: str,
        partitions: int,
        *,
        fewer: Literal["error", "warn", "accept"] = "error",
        properties: KafkaTopicProperties | None = None,
        purpose: str = "",
    ) -> int:
        """Make sure ``topic`` exists with at least ``partitions`` partitions; return how
        many it has. When it has fewer and may not grow: ``error`` stops start-up; ``warn``
        (a group-managed consumer, as Spring does) only says some consumers stay idle;
        ``accept`` (a dead-letter topic: records then keep their key, not their partition)
        says nothing."""
        if self._admin is None:
            raise ProvisioningError(f"kafka binder '{self.binder}' is not started")
        async with self._lock:
            return await self._ensure(topic, partitions, fewer, properties, purpose)

    async def _ensure(
        self,
        topic: str,
        partitions: int,
        fewer: str,
        properties: KafkaTopicProperties | None,
        purpose: str,
    ) -> int:
        env = self.env
        why = f" ({purpose})" if purpose else ""
        actual = await self.partitions(topic)
        if actual is None:
            if not env.auto_create_topics:
                raise ProvisioningError(
                    f"topic '{topic}'{why} does not exist and auto-create-topics is false: "
                    "create it, or set stream.kafka.binder.auto-create-topics: true"
                )
            return await self._create(topic, max(partitions, env.min_partition_count), properties)
        wanted = max(partitions, env.min_partition_count) if env.auto_add_partitions else partitions
        if actual >= wanted:
            return actual
        if env.auto_add_partitions:
            from aiokafka.admin import NewPartitions

            await self._call(
                f"adding partitions to {topic}",
                self._admin.create_partitions({topic: NewPartitions(wanted)}),
            )
            await self._wait_ready(topic, wanted)
            log.info("grew topic %s from %d to %d partitions", topic, actual, wanted)
            return wanted
        if fewer == "accept":
            return actual
        if fewer == "warn":
            log.warning(
                "topic %s has %d partition%s but %d are wanted%s; %d consumer(s) will stay idle",
                topic,
                actual,
                "" if actual == 1 else "s",
                partitions,
                why,
                partitions - actual,
            )
            return actual
        raise ProvisioningError(
            f"topic '{topic}' has {actual} partition{'' if actual == 1 else 's'} but "
            f"{partitions} are required{why}; add partitions to the topic, or set "
            "stream.kafka.binder.auto-add-partitions: true"
        )

    async def _create(self, topic: str, count: int, properties: KafkaTopicProperties | None) -> int:
        from aiokafka.admin import NewTopic
        from aiokafka.errors import for_code

        replication = (properties.replication_factor if properties else None) or (
            self.env.replication_factor
        )
        if replication == -1:
            replication = await self._default_replication()
        configs = dict(properties.properties) if properties else {}
        response = await self._call(
            f"creating topic {topic}",
            self._admin.create_topics(
                [NewTopic(topic, count, replication, topic_configs=configs or None)]
            ),
        )
        for _name, code, message in response.topic_errors:
            if code == _TOPIC_EXISTS:  # created meanwhile by another instance
                return await self.partitions(topic) or count
            if code:
                raise ProvisioningError(
                    f"cannot create topic '{topic}' ({count} partitions, replication factor "
                    f"{replication}): {for_code(code).__name__}: {message or ''}".rstrip(": ")
                )
        await self._wait_ready(topic, count)
        log.info(
            "created topic %s with %d partition%s (replication factor %d)",
            topic,
            count,
            "" if count == 1 else "s",
            replication,
        )
        return count

    async def _default_replication(self) -> int:
        from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

        cluster = await self._call("describing the cluster", self._admin.describe_cluster())
        node = str(cluster["brokers"][0]["node_id"])
        resource = ConfigResource(
            ConfigResourceType.BROKER, node, {"default.replication.factor": None}
        )
        responses = await self._call(
            "reading default.replication.factor", self._admin.describe_configs([resource])
        )
        for response in responses:
            for res in response.resources:
                for entry in res[4]:
                    if entry[0] == "default.replication.factor":
                        return int(entry[1])
        return 1

    async def _wait_ready(self, topic: str, count: int) -> None:
        """Until every partition has a leader, so the first send does not race the broker."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.env.health_timeout
        while True:
            found = await self._call(
                f"describing topic {topic}", self._admin.describe_topics([topic])
            )
            parts = next((e.get("partitions") or [] for e in found if e.get("topic") == topic), [])
            if len(parts) >= count and all(p.get("leader", -1) >= 0 for p in parts):
                return
            if loop.time() > deadline:
                raise ProvisioningError(
                    f"topic '{topic}' has no leader for every partition after "
                    f"{self.env.health_timeout:g} s"
                )
            await asyncio.sleep(0.05)


async def _quietly(coro: Any) -> None:
    try:
        await asyncio.wait_for(coro, 5)
    except Exception as exc:
        log.debug("ignored while closing: %s", describe(exc))
