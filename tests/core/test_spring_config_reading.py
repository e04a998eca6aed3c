"""Reading configuration as Spring Boot does: relaxed spellings of every key, dotted keys,
Spring's prefixes and environment variables, placeholders, and which source wins when two
spellings of one key meet."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from binder_core.config import AppConfig, load_config
from binder_core.errors import ConfigError
from binder_core.plugins import load_plugins

TYPES = load_plugins().binder_types


def load(
    tmp_path: Path,
    text: str | None = None,
    env: dict[str, str] | None = None,
    overrides: tuple[str, ...] = (),
    profiles: tuple[str, ...] = (),
    files: dict[str, str] | None = None,
) -> AppConfig:
    if text is not None:
        (tmp_path / "application.yaml").write_text(text)
    for name, body in (files or {}).items():
        (tmp_path / name).write_text(body)
    return load_config(tmp_path, profiles, overrides, TYPES, environ=env or {})


def problems(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as exc:
        load(tmp_path, text, env)
    return [str(p) for p in exc.value.problems]


@pytest.mark.parametrize(
    "key", ["maxAttempts", "max-attempts", "max_attempts", "MAX_ATTEMPTS", "MaxAttempts"]
)
def test_every_spelling_of_a_key_is_the_key(tmp_path: Path, key: str) -> None:
    config = load(tmp_path, f"stream:\n  bindings:\n    f-in-0:\n      consumer: {{{key}: 7}}\n")
    assert config.binding("f-in-0").consumer.max_attempts == 7


def test_spring_prefixes_and_dotted_keys(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        "spring.cloud.function.definition: a;b\n"
        "spring:\n"
        "  integration.poller.fixedDelay: 250\n"
        "  cloud.stream:\n"
        "    default.contentType: text/plain\n"
        "    bindings.a-in-0.destination: ticks\n"
        "    kafka.binder.configuration:\n"
        "      '[security.protocol]': PLAINTEXT\n"
        "      max.poll.records: 10\n",
    )
    assert config.stream.function.definition == "a;b"
    assert config.stream.poller.fixed_delay == 250
    assert config.binding("a-in-0").destination == "ticks"
    assert config.binding("a-in-0").content_type == "text/plain"
    kafka: Any = config.environments["kafka"]
    assert kafka.configuration == {"security.protocol": "PLAINTEXT", "max.poll.records": 10}


def test_one_key_twice_in_one_file_is_a_problem(tmp_path: Path) -> None:
    [problem] = problems(
        tmp_path,
        "stream:\n  bindings:\n    f-in-0:\n      consumer:\n"
        "        maxAttempts: 2\n        max-attempts: 3\n",
    )
    assert "application.yaml:6" in problem and "key given twice" in problem


def test_a_key_under_spring_and_ours_in_one_file_is_a_problem(tmp_path: Path) -> None:
    [problem] = problems(
        tmp_path,
        "stream:\n  default-binder: memory\n"
        "spring:\n  cloud:\n    stream:\n      defaultBinder: kafka\n",
    )
    assert "stream.default-binder" in problem
    assert "as spring.cloud.stream.* and stream.*" in problem


def test_a_later_source_wins_whatever_the_spelling(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        "stream:\n  kafka:\n    binder:\n      brokers: file-host:9092\n"
        "  bindings:\n    f-in-0:\n      consumer: {maxAttempts: 2}\n",
        env={
            "STREAM__KAFKA__BINDER__BOOTSTRAP_SERVERS": "env-host:9092",
            "STREAM__BINDINGS__F_IN_0__CONSUMER__MAX_ATTEMPTS": "5",
        },
    )
    kafka: Any = config.environments["kafka"]
    assert kafka.bootstrap_servers == ["env-host:9092"]
    assert config.binding("f-in-0").consumer.max_attempts == 5
    origin = config.env_origins["kafka"][("bootstrap-servers",)]
    assert config.layered.exact_source(origin) == "env STREAM__KAFKA__BINDER__BOOTSTRAP_SERVERS"


def test_two_spellings_in_one_source_name_both(tmp_path: Path) -> None:
    [problem] = problems(
        tmp_path,
        "stream:\n  kafka:\n    binder:\n      brokers: a:9092\n      bootstrap-servers: b:9092\n",
    )
    assert "set twice in one source" in problem
    assert "brokers" in problem and "bootstrap-servers" in problem


def test_springs_environment_variables(tmp_path: Path) -> None:
    env = {
        "SPRING_CLOUD_FUNCTION_DEFINITION": "orders",
        "SPRING_CLOUD_STREAM_BINDINGS_ORDERS_IN_0_DESTINATION": "incoming",
        "SPRING_CLOUD_STREAM_BINDINGS_ORDERS_IN_0_GROUP": "billing",
        "SPRING_CLOUD_STREAM_BINDINGS_ORDERS_IN_0_CONSUMER_MAX_ATTEMPTS": "4",
        "SPRING_CLOUD_STREAM_KAFKA_BINDER_BROKERS": "k1:9092,k2:9092",
        "SPRING_CLOUD_STREAM_KAFKA_BINDINGS_ORDERS_IN_0_CONSUMER_START_OFFSET": "latest",
        "SPRING_RABBITMQ_HOST": "rabbit.internal",
        "SPRING_RABBITMQ_VIRTUAL_HOST": "prod",
        "SPRING_KAFKA_CONSUMER_MAX_POLL_RECORDS": "20",
    }
    config = load(tmp_path, "stream:\n  bindings:\n    orders-in-0: {destination: x}\n", env=env)
    props = config.binding("orders-in-0")
    assert (props.destination, props.group, props.consumer.max_attempts) == (
        "incoming",
        "billing",
        4,
    )
    assert config.stream.function.definition == "orders"
    kafka: Any = config.environments["kafka"]
    assert kafka.bootstrap_servers == ["k1:9092", "k2:9092"]
    assert kafka.consumer_properties == {"max.poll.records": "20"}  # typed by the client
    ext: Any = config.extension("kafka", "orders-in-0")
    assert ext.consumer.start_offset == "latest"
    rabbit: Any = config.environments["rabbit"]
    assert (rabbit.host, rabbit.virtual_host) == ("rabbit.internal", "prod")
    source = config.layered.source_of(["stream", "bindings", "orders-in-0", "group"])
    assert source == "env SPRING_CLOUD_STREAM_BINDINGS_ORDERS_IN_0_GROUP"


def test_springs_profile_variable_and_file_key(tmp_path: Path) -> None:
    files = {"application-eu.yaml": "stream:\n  instance-count: 4\n"}
    config = load(tmp_path, "stream: {}\n", env={"SPRING_PROFILES_ACTIVE": "eu"}, files=files)
    assert (config.layered.profiles, config.stream.instance_count) == (["eu"], 4)
    config = load(tmp_path, "spring.profiles.active: eu\n", files=files)
    assert config.stream.instance_count == 4


# -- placeholders -----------------------------------------------------------------------------


def test_placeholders(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        "spring.application.name: shop\n"
        "stream:\n"
        "  instance-count: ${COUNT:2}\n"
        "  bindings:\n"
        "    f-in-0:\n"
        "      group: ${spring.application.name}\n"
        "      destination: ${TOPIC:${spring.application.name}.orders}\n"
        "    f-out-0:\n"
        "      destination: ${stream.bindings.f-in-0.group}-out\n",
        env={"COUNT": "3"},
    )
    assert config.stream.instance_count == 3
    assert config.binding("f-in-0").group == "shop"
    assert config.binding("f-in-0").destination == "shop.orders"
    assert config.binding("f-out-0").destination == "shop-out"


def test_placeholder_from_springs_variable_name(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        "stream:\n  bindings:\n    f-in-0: {group: '${spring.application.name}'}\n",
        env={"SPRING_APPLICATION_NAME": "from-env"},
    )
    assert config.binding("f-in-0").group == "from-env"


def test_a_placeholder_keeps_its_value_type(tmp_path: Path) -> None:
    config = load(tmp_path, "app:\n  n: 5\nstream:\n  instance-count: ${app.n}\n")
    assert config.stream.instance_count == 5


@pytest.mark.parametrize(
    ("value", "said"),
    [
        ("${NOWHERE}", "placeholder ${NOWHERE} has no value"),
        ("${a.b}", "refers to itself (a.b -> a.b)"),
    ],
)
def test_placeholders_that_cannot_resolve(tmp_path: Path, value: str, said: str) -> None:
    [problem] = problems(
        tmp_path, f"a:\n  b: '{value}'\nstream:\n  bindings:\n    f-in-0: {{group: '{value}'}}\n"
    )[-1:]
    assert said in problem


def test_a_text_with_an_unclosed_placeholder_is_text(tmp_path: Path) -> None:
    config = load(tmp_path, "stream:\n  bindings:\n    f-in-0: {group: 'a${b'}\n")
    assert config.binding("f-in-0").group == "a${b"


# -- typos Spring would ignore ------------------------------------------------------------------


def test_a_misspelt_spring_cloud_section_is_a_problem(tmp_path: Path) -> None:
    [problem] = problems(tmp_path, "spring:\n  cloud:\n    streams:\n      bindings: {}\n")
    assert "spring.cloud.streams: unknown key (did you mean 'spring.cloud.stream'?)" in problem


def test_a_camel_case_typo_gets_the_kebab_suggestion(tmp_path: Path) -> None:
    [problem] = problems(
        tmp_path, "stream:\n  bindings:\n    f-in-0:\n      consumer: {maxAtempts: 2}\n"
    )
    assert "did you mean 'max-attempts'?" in problem


@pytest.mark.parametrize(
    ("section", "said"),
    [
        ("consumer: {retryTemplateName: myRetry}", "Spring's retry-template-name is not supported"),
        ("producer: {autoStartup: false}", "false is not supported (only true)"),
        ("producer: {partitioned: true}", "partitioned: true needs partition-key-expression"),
        ("consumer: {instanceIndexList: [0, 2]}", "one instance consuming several partition"),
        ("destination: 'a, a'", "names a more than once"),
    ],
)
def test_spring_properties_refused_with_the_reason(tmp_path: Path, section: str, said: str) -> None:
    found = problems(tmp_path, f"stream:\n  bindings:\n    f-in-0: {{{section}}}\n")
    assert any(said in p for p in found), found


def test_spring_properties_accepted_where_they_mean_what_we_do(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        "stream:\n"
        "  bindingRetryInterval: 30\n"
        "  kafka:\n    bindings:\n      f-in-0:\n"
        "        consumer: {ackMode: batch, ackEachRecord: false}\n"
        "  rabbit:\n    bindings:\n      f-in-0:\n"
        "        consumer: {acknowledgeMode: AUTO, requeueRejected: false, txSize: 1}\n"
        "      f-out-0:\n        producer: {batchingEnabled: false, batchSize: 100}\n",
    )
    assert config.binding("f-in-0").consumer.max_attempts == 3


def test_poller_durations_and_time_units(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        "stream:\n  poller: {fixedDelay: 2, initialDelay: 500ms, timeUnit: SECONDS}\n"
        "  bindings:\n    s-out-0:\n      producer:\n        poller: {fixedDelay: PT0.25S}\n",
    )
    assert (config.stream.poller.fixed_delay, config.stream.poller.initial_delay) == (2000, 500)
    own = config.poller("s-out-0")
    assert (own.fixed_delay, own.initial_delay) == (250, 500)
    [problem] = problems(tmp_path, "stream:\n  poller: {cron: '0 * * * * *'}\n")
    assert "cron triggers are not supported" in problem


def test_instance_index_list_of_one_is_the_instance_index(tmp_path: Path) -> None:
    config = load(tmp_path, "stream:\n  instanceIndexList: [2]\n  instanceCount: 3\n")
    assert config.stream.instance_index == 2


# -- Spring Boot's connection properties -------------------------------------------------------


def test_spring_boot_rabbit_properties_under_the_binder(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        "spring:\n  rabbitmq:\n    host: mq\n    port: 5673\n    username: app\n"
        "    requested-heartbeat: 1m\n    connection-timeout: 2s\n"
        "    ssl: {enabled: true, trust-store: /ca.pem, trust-store-type: PEM}\n"
        "stream:\n  rabbit:\n    binder: {port: 5674}\n",
    )
    rabbit: Any = config.environments["rabbit"]
    assert (rabbit.host, rabbit.port, rabbit.username) == ("mq", 5674, "app")  # binder wins
    assert (rabbit.heartbeat, rabbit.connection_timeout) == (60, 2.0)
    assert (rabbit.ssl.enabled, rabbit.ssl.ca_file) == (True, "/ca.pem")
    assert config.default_binder == "rabbit"


def test_spring_boot_properties_that_do_not_apply_say_why(tmp_path: Path) -> None:
    found = problems(
        tmp_path,
        "spring:\n  rabbitmq:\n    listener: {simple: {prefetch: 5}}\n"
        "    publisher-confirm-type: none\n    hots: x\n"
        "    ssl: {key-store-type: JKS}\n"
        "  kafka:\n    listener: {ack-mode: RECORD}\n    consumer: {group-id: g}\n",
    )
    text = "\n".join(found)
    assert "spring.rabbitmq.listener: Spring's listener is not supported" in text
    assert "publisher-confirm-type: 'none' is not supported" in text
    assert "spring.rabbitmq.hots: unknown key (did you mean 'host'?)" in text
    assert "reads PEM files only" in text
    assert "spring.kafka.listener" in text
    assert "spring.kafka.consumer.group-id" in text and "set the binding's group" in text


def test_two_broker_types_configured_need_a_default_binder(tmp_path: Path) -> None:
    config = load(tmp_path, "spring:\n  rabbitmq: {host: mq}\n  kafka: {bootstrap-servers: k:1}\n")
    _, why = config.default_choice()
    assert why is not None and "kafka, rabbit are all configured" in why


def test_memory_when_no_broker_is_configured(tmp_path: Path) -> None:
    assert load(tmp_path, "stream:\n  bindings: {}\n").default_binder == "memory"


def test_app_settings_read_relaxed_names_and_bracketed_keys(tmp_path: Path) -> None:
    from pydantic import BaseModel

    from binder_core import app_config

    class Ticker(BaseModel):
        slump_percent: float = 5.0
        symbols: dict[str, float] = {}

    config = load(
        tmp_path,
        "market.ticker:\n  slumpPercent: 2.5\n  symbols: {'[BRK.A]': 420.0, ACME: 1.5}\n",
    )
    app_config.use(config.layered)
    try:
        got = app_config.app_settings("market.ticker", Ticker)
    finally:
        app_config.use(None)
    assert got.slump_percent == 2.5
    assert got.symbols == {"BRK.A": 420.0, "ACME": 1.5}


def test_dotted_keys_in_a_tree_given_in_code(tmp_path: Path) -> None:
    tree = {
        "stream": {"function.definition": "f", "bindings": {"f-in-0": {"consumer.maxAttempts": 4}}}
    }
    config = load_config(None, (), (), TYPES, environ={}, properties=tree, read_files=False)
    assert config.stream.function.definition == "f"
    assert config.binding("f-in-0").consumer.max_attempts == 4


def test_kafkas_byte_and_text_serializers_are_accepted_others_refused(tmp_path: Path) -> None:
    serde = "org.apache.kafka.common.serialization."
    config = load(
        tmp_path,
        "stream:\n  kafka:\n    bindings:\n"
        f"      f-out-0:\n        producer:\n"
        f"          configuration: {{value.serializer: {serde}StringSerializer, linger.ms: 5}}\n"
        f"      f-in-0:\n        consumer:\n"
        f"          configuration: {{value.deserializer: {serde}ByteArrayDeserializer}}\n",
    )
    ext: Any = config.extension("kafka", "f-out-0")
    assert ext.producer.configuration == {"linger.ms": 5}  # nothing the client must not get
    found = problems(
        tmp_path,
        "spring.kafka.consumer.value-deserializer: "
        "org.springframework.kafka.support.serializer.JsonDeserializer\n",
    )
    assert any("JsonDeserializer is not supported: records carry bytes" in p for p in found)
