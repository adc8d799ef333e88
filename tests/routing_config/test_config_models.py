"""What a valid routing YAML becomes: defaults, sink settings, secret references."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.errors import ConfigError
from gateway.routing.config import (
    DEFAULT_TOPICS,
    BatchSettings,
    Route,
    RoutingConfig,
    SecretRef,
    load_routing_config,
)
from gateway.sinks.http import HttpSettings, HttpSink
from gateway.sinks.postgres import PostgresSink

MINIMAL = """
routes:
  - name: audit
    sink: {type: log}
"""
FULL = """
kafka:
  bootstrap_servers: 127.0.0.1:29092
  group_id: router-a
  topics: [hitl.request]
  dlq_suffix: .failed
max_in_flight: 50
routes:
  - name: hook
    match:
      event_types: ["request.*"]
      loop_ids: [loop-1]
    transform:
      keep: [event]
    sink:
      type: http
      url: http://127.0.0.1:9000/hooks?token=abc
      timeout_s: 3
      secret: {env: HOOK_SECRET}
    retry: {attempts: 2, initial_backoff_s: 0.1, max_backoff_s: 1, jitter: 0}
    on_failure: block
    rate_limit: {events_per_s: 5}
    stale_events: skip
  - name: audit
    sink:
      type: postgres
      dsn: {file: /run/secrets/audit-dsn}
    batch: {size: 10}
"""


@pytest.fixture
def minimal(write_routes) -> RoutingConfig:
    return load_routing_config(write_routes(MINIMAL), environ={})


@pytest.fixture
def full(write_routes) -> RoutingConfig:
    return load_routing_config(write_routes(FULL), environ={})


def test_default_topics_are_the_seven_families(minimal: RoutingConfig) -> None:
    assert minimal.kafka.topics == DEFAULT_TOPICS


def test_default_event_types_match_everything(minimal: RoutingConfig) -> None:
    assert minimal.routes[0].match.event_types == ["*"]


def test_default_failure_policy_is_dead_letter(minimal: RoutingConfig) -> None:
    assert minimal.routes[0].on_failure == "dead_letter"


def test_default_retry(minimal: RoutingConfig) -> None:
    assert minimal.routes[0].retry.attempts == 5


def test_kafka_section_is_read(full: RoutingConfig) -> None:
    assert full.kafka.group_id == "router-a"
    assert full.kafka.dlq_suffix == ".failed"
    assert full.kafka.topics == ["hitl.request"]


def test_sink_class_is_resolved(full: RoutingConfig) -> None:
    assert full.route("hook").sink.sink_class is HttpSink


def test_sink_settings_are_the_classes_model(full: RoutingConfig) -> None:
    assert isinstance(full.route("hook").sink.settings, HttpSettings)


def test_sink_settings_values(full: RoutingConfig) -> None:
    assert full.route("hook").sink.settings.timeout_s == 3.0


def test_secret_stays_a_reference(full: RoutingConfig) -> None:
    assert full.route("hook").sink.settings.secret == SecretRef(env="HOOK_SECRET")


def test_batch_where_supported(full: RoutingConfig) -> None:
    assert full.route("audit").batch == BatchSettings(size=10, wait_ms=200)


def test_batch_sink_supports_batches(full: RoutingConfig) -> None:
    assert full.route("audit").sink.sink_class is PostgresSink


def test_route_lookup_by_unknown_name_raises(full: RoutingConfig) -> None:
    with pytest.raises(KeyError):
        full.route("absent")


def test_route_from_a_dict_builds_its_sink() -> None:
    route = Route.model_validate({"name": "audit", "sink": {"type": "log", "level": "debug"}})

    assert route.sink.settings.level == "debug"


def test_route_from_a_dict_rejects_unknown_sink_settings() -> None:
    with pytest.raises(ValueError, match="colour: unknown key"):
        Route.model_validate({"name": "audit", "sink": {"type": "log", "colour": "red"}})


def test_secret_from_environment() -> None:
    assert SecretRef(env="HOOK_SECRET").resolve({"HOOK_SECRET": "s3cret"}) == "s3cret"


def test_secret_env_variable_missing() -> None:
    with pytest.raises(ConfigError, match="HOOK_SECRET is not set"):
        SecretRef(env="HOOK_SECRET").resolve({})


def test_secret_from_file_without_trailing_newline(tmp_path: Path) -> None:
    secret_file = tmp_path / "secret"
    secret_file.write_text("s3cret\n")

    assert SecretRef(file=str(secret_file)).resolve() == "s3cret"


def test_secret_file_unreadable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the secret file"):
        SecretRef(file=str(tmp_path / "absent")).resolve()


def test_secret_file_empty(tmp_path: Path) -> None:
    secret_file = tmp_path / "secret"
    secret_file.write_text("\n")

    with pytest.raises(ConfigError, match="is empty"):
        SecretRef(file=str(secret_file)).resolve()


def test_secret_reference_shows_only_its_source() -> None:
    assert str(SecretRef(env="HOOK_SECRET")) == "env:HOOK_SECRET"
