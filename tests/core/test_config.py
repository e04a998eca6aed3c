"""Configuration: layering, sources, and errors a user can act on."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from binder_core.config import load_config
from binder_core.errors import ConfigError
from binder_core.plugins import load_plugins

TYPES = load_plugins().binder_types


def write(directory: Path, name: str, text: str) -> Path:
    file = directory / name
    file.write_text(text)
    return file


def load(tmp_path: Path, **kw: object):  # type: ignore[no-untyped-def]
    return load_config(
        tmp_path,
        kw.pop("profiles", ()),  # type: ignore[arg-type]
        kw.pop("overrides", ()),  # type: ignore[arg-type]
        TYPES,
        environ=kw.pop("environ", {}),  # type: ignore[arg-type]
    )


def problems(exc: pytest.ExceptionInfo[ConfigError]) -> list[str]:
    return [str(p) for p in exc.value.problems]


def test_precedence_file_profile_env_set(tmp_path: Path) -> None:
    write(
        tmp_path,
        "application.yaml",
        "stream:\n  bindings:\n    f-in-0: {destination: a, group: g}\n",
    )
    write(tmp_path, "application-p.yaml", "stream:\n  bindings:\n    f-in-0: {destination: b}\n")
    config = load(tmp_path, profiles=["p"])
    assert config.binding("f-in-0").destination == "b"
    assert config.binding("f-in-0").group == "g"
    env = {"STREAM__BINDINGS__F_IN_0__DESTINATION": "c"}
    config = load(tmp_path, profiles=["p"], environ=env)
    assert config.binding("f-in-0").destination == "c"
    assert config.layered.source_of(["stream", "bindings", "f-in-0", "destination"]) == (
        "env STREAM__BINDINGS__F_IN_0__DESTINATION"
    )
    config = load(
        tmp_path, profiles=["p"], environ=env, overrides=["stream.bindings.f-in-0.destination=d"]
    )
    assert config.binding("f-in-0").destination == "d"
    assert config.layered.source_of(["stream", "bindings", "f-in-0", "group"]).endswith(
        "application.yaml:3"
    )


def test_binding_names_match_ignoring_case_and_separators(tmp_path: Path) -> None:
    write(tmp_path, "application.yaml", "stream:\n  bindings:\n    price_alerts-in-0: {group: g}\n")
    env = {"STREAM__BINDINGS__PRICE_ALERTS_IN_0__DESTINATION": "ticks"}
    config = load(tmp_path, environ=env)
    props = config.binding("price_alerts-in-0")
    assert (props.destination, props.group) == ("ticks", "g")


def test_snake_case_keys_and_typed_values(tmp_path: Path) -> None:
    write(
        tmp_path,
        "application.yaml",
        "stream:\n  bindings:\n    f-in-0:\n      consumer: {max_attempts: 5, batch-mode: true}\n",
    )
    config = load(tmp_path, overrides=["stream.bindings.f-in-0.consumer.concurrency=3"])
    consumer = config.binding("f-in-0").consumer
    assert (consumer.max_attempts, consumer.batch_mode, consumer.concurrency) == (5, True, 3)


def test_defaults_follow_spring(tmp_path: Path) -> None:
    props = load(tmp_path).binding("anything-in-0")
    assert props.content_type == "application/json"
    c = props.consumer
    assert (c.max_attempts, c.back_off_initial_interval, c.back_off_multiplier) == (3, 1000, 2.0)
    assert c.back_off_max_interval == 10000
    assert props.producer.partition_count == 1
    assert load(tmp_path).default_binder == "memory"


def test_stream_default_applies_to_every_binding(tmp_path: Path) -> None:
    write(
        tmp_path,
        "application.yaml",
        "stream:\n  default: {group: shared, consumer: {max-attempts: 7}}\n"
        "  bindings:\n    f-in-0: {consumer: {concurrency: 2}}\n",
    )
    config = load(tmp_path)
    props = config.binding("f-in-0")
    assert (props.group, props.consumer.max_attempts, props.consumer.concurrency) == (
        "shared",
        7,
        2,
    )
    assert config.binding("other-in-0").consumer.max_attempts == 7


def test_unknown_key_reports_file_line_path_and_suggestion(tmp_path: Path) -> None:
    write(
        tmp_path,
        "application.yaml",
        "stream:\n  bindings:\n    f-in-0:\n      destnation: words\n      consumer:\n"
        "        max-atempts: 2\n",
    )
    with pytest.raises(ConfigError) as exc:
        load(tmp_path)
    found = problems(exc)
    assert any(
        "application.yaml:4: stream.bindings.f-in-0.destnation: unknown key (did you mean "
        "'destination'?)" in p
        for p in found
    ), found
    assert any(
        "application.yaml:6: stream.bindings.f-in-0.consumer.max-atempts: unknown key "
        "(did you mean 'max-attempts'?)" in p
        for p in found
    ), found


def test_wrong_type_and_unknown_binder_type_are_reported_together(tmp_path: Path) -> None:
    write(
        tmp_path,
        "application.yaml",
        "stream:\n  binders:\n    main: {type: kafak}\n"
        "  bindings:\n    f-in-0: {consumer: {concurrency: many}}\n",
    )
    with pytest.raises(ConfigError) as exc:
        load(tmp_path)
    found = "\n".join(problems(exc))
    assert "stream.binders.main.type: unknown binder type 'kafak'" in found
    assert "installed binder types: " in found and "memory" in found
    assert "stream.bindings.f-in-0.consumer.concurrency" in found
    assert "valid integer" in found


def test_unknown_stream_section_and_lookalike_top_level(tmp_path: Path) -> None:
    write(tmp_path, "application.yaml", "steam:\n  x: 1\nstream:\n  bindngs: {}\n")
    with pytest.raises(ConfigError) as exc:
        load(tmp_path)
    found = "\n".join(problems(exc))
    assert "steam: unknown top-level key (did you mean 'stream'?)" in found
    assert "stream.bindngs: unknown key (did you mean 'bindings'?)" in found


def test_yaml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    write(tmp_path, "application.yaml", "stream:\n  bindings: [unclosed\n")
    with pytest.raises(ConfigError) as exc:
        load(tmp_path)
    assert "application.yaml:" in problems(exc)[0]
    assert "not valid YAML" in problems(exc)[0]


def test_missing_profile_file_suggests_existing(tmp_path: Path) -> None:
    write(tmp_path, "application-kafka.yaml", "stream: {}\n")
    with pytest.raises(ConfigError) as exc:
        load(tmp_path, profiles=["kafak"])
    assert "did you mean 'kafka'?" in problems(exc)[0]


def test_profiles_from_environment(tmp_path: Path) -> None:
    write(tmp_path, "application-a.yaml", "stream: {instance-count: 3}\n")
    config = load(tmp_path, environ={"BINDER_PROFILES": "a"})
    assert config.stream.instance_count == 3
    assert config.layered.profiles == ["a"]


def test_bad_set_option(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        load(tmp_path, overrides=["no-equals-sign"])
    assert "--set: expected KEY=VALUE" in problems(exc)[0]


def test_binder_type_section_is_validated_with_the_plugins_model(tmp_path: Path) -> None:
    write(
        tmp_path,
        "application.yaml",
        "stream:\n  memory:\n    binder: {buffer-size: 5}\n    bindings:\n"
        "      f-in-0: {consumer: {dlq-name: dead, enable-dlqq: false}}\n",
    )
    with pytest.raises(ConfigError) as exc:
        load(tmp_path)
    found = "\n".join(problems(exc))
    assert "stream.memory.bindings.f-in-0.consumer.enable-dlqq: unknown key" in found
    assert "did you mean 'enable-dlq'?" in found


def test_binder_type_section_values_reach_bindings_and_environment(tmp_path: Path) -> None:
    write(
        tmp_path,
        "application.yaml",
        "stream:\n  memory:\n    binder: {buffer-size: 5}\n    bindings:\n"
        "      f-in-0: {consumer: {dlq-name: dead}}\n",
    )
    config = load(tmp_path)
    ext = config.extension("memory", "f-in-0")
    assert ext is not None and ext.consumer.dlq_name == "dead"  # type: ignore[attr-defined]
    assert config.environments["memory"].buffer_size == 5  # type: ignore[attr-defined]


def test_secrets_are_not_echoed_in_errors(tmp_path: Path) -> None:
    write(
        tmp_path,
        "application.yaml",
        "stream:\n  binders:\n    m: {type: memory, environment: {password: hunter2}}\n",
    )
    with pytest.raises(ConfigError) as exc:
        load(tmp_path)
    assert "hunter2" not in exc.value.render()
    assert "stream.binders.m.environment.password: unknown key" in exc.value.render()


def _bomb() -> str:
    """Nine levels of nine aliases each: 9**9 (387 million) values, in about 300 bytes."""
    lines = ["a: &a [x,x,x,x,x,x,x,x,x]"]
    for prev, name in zip("abcdefgh", "bcdefghi", strict=True):
        lines.append(f"{name}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]")
    return "\n".join(lines) + "\n"


def test_alias_bomb_is_refused_quickly_with_file_and_line(tmp_path: Path) -> None:
    text = _bomb()
    assert len(text) <= 320
    write(tmp_path, "application.yaml", text)
    started = time.perf_counter()
    with pytest.raises(ConfigError) as exc:
        load(tmp_path)
    assert time.perf_counter() - started < 2.0
    [problem] = problems(exc)
    assert "application.yaml:" in problem
    assert "alias bomb" in problem and "refused" in problem


def test_aliases_within_the_limit_still_work(tmp_path: Path) -> None:
    write(
        tmp_path,
        "application.yaml",
        "common: &c {group: g, content-type: text/plain}\n"
        "stream:\n  bindings:\n    f-in-0: *c\n    g-in-0: *c\n",
    )
    config = load(tmp_path)
    assert config.binding("g-in-0").group == "g"
    assert config.binding("f-in-0").content_type == "text/plain"


def test_recursive_alias_is_a_configuration_error(tmp_path: Path) -> None:
    write(tmp_path, "application.yaml", "stream: {}\nloop: &a\n  again: *a\n")
    with pytest.raises(ConfigError) as exc:
        load(tmp_path)
    [problem] = problems(exc)
    assert "application.yaml:3" in problem and "recursive alias *a" in problem


@pytest.mark.parametrize("style", ["flow", "block"])
def test_deep_nesting_is_a_configuration_error(tmp_path: Path, style: str) -> None:
    if style == "flow":
        text = "stream: {}\nx: " + "[" * 5000 + "]" * 5000 + "\n"
    else:
        text = "stream: {}\n" + "".join("  " * i + f"k{i}:\n" for i in range(5000))
    write(tmp_path, "application.yaml", text)
    with pytest.raises(ConfigError) as exc:
        load(tmp_path)
    [problem] = problems(exc)
    assert "application.yaml:" in problem and "nested deeper than 64 levels" in problem


def test_a_file_that_is_not_utf8_is_a_configuration_error(tmp_path: Path) -> None:
    (tmp_path / "application.yaml").write_bytes(
        "stream:\n  bindings: {}\nname: caf\xe9\n".encode("latin-1")
    )
    with pytest.raises(ConfigError) as exc:
        load(tmp_path)
    [problem] = problems(exc)
    assert "application.yaml:3" in problem and "not UTF-8: byte 0xe9" in problem


def test_set_values_over_the_limits_stay_text(tmp_path: Path) -> None:
    deep = "[" * 5000 + "]" * 5000
    config = load(tmp_path, overrides=[f"app.deep={deep}", "app.loop=&a [*a]"])
    app = config.layered.tree["app"]
    assert app["deep"] == deep and app["loop"] == "&a [*a]"
