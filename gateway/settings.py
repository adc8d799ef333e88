"""The gateway's configuration: a YAML file, then environment overrides.

Every model forbids unknown keys, so a misspelt key is an error instead of a silently
ignored setting. Webhook secrets never live in the YAML file: they come from the
environment variable named by ``signature.secrets_env`` or from ``signature.secrets_file``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from gateway.errors import ConfigError
from gateway.yamlsource import SourceMap, load_yaml, validate

DEFAULT_CONFIG_PATH = "config/gateway.yaml"
Positive = Annotated[int, Field(gt=0)]
PositiveFloat = Annotated[float, Field(gt=0)]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class HttpSettings(Section):
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    path: str = "/webhooks/hitl"
    max_body_bytes: Positive = 1024 * 1024
    access_log: bool = False
    shutdown_timeout_s: PositiveFloat = 15.0

    @field_validator("path")
    @classmethod
    def _path_starts_with_slash(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError("a path starting with '/', such as '/webhooks/hitl'")
        return value


class SignatureSettings(Section):
    scheme: Literal["hitl", "standard_webhooks"] = "hitl"
    header: str = "X-HITL-Signature"
    secrets_env: str = "HITL_WEBHOOK_SECRETS"
    secrets_file: str | None = None
    # When set, a delivery whose timestamp header is further than tolerance_s from now is
    # rejected, which bounds how long a captured request can be replayed.
    timestamp_header: str | None = None
    tolerance_s: PositiveFloat = 300.0


class EnvelopeSettings(Section):
    event_type_paths: list[str] = Field(default_factory=lambda: ["event", "type"], min_length=1)
    loop_id_paths: list[str] = Field(
        default_factory=lambda: ["loop_id", "data.loop_id", "data.request.loop_id", "data.loop.id"]
    )
    event_id_headers: list[str] = Field(default_factory=lambda: ["X-HITL-Event-Id", "webhook-id"])
    event_id_paths: list[str] = Field(default_factory=lambda: ["id", "event_id"])
    occurred_at_paths: list[str] = Field(default_factory=lambda: ["timestamp", "created_at"])


class RedisSettings(Section):
    url: str = "redis://127.0.0.1:6379/0"
    on_unavailable: Literal["fail_closed", "fail_open"] = "fail_closed"
    key_prefix: str = "hitl-gateway:dedup:"
    operation_timeout_s: PositiveFloat = 1.0
    # Connections per worker. A request that finds them all busy waits up to
    # operation_timeout_s for one, then counts as Redis being unavailable.
    max_connections: Positive = 64


class DedupSettings(Section):
    backend: Literal["memory", "redis"] = "memory"
    window_s: PositiveFloat = 24 * 3600.0
    # In-memory store only: each remembered id costs about 380 bytes of heap (measured by
    # bench/run), so 1,000,000 ids take about 360 MiB per worker. Beyond it the oldest go.
    max_entries: Positive = 1_000_000
    # How long a duplicate waits for the first delivery of its event to finish.
    wait_timeout_s: PositiveFloat = 15.0
    # A reservation whose holder died is forgotten after this long, so the sender's retry
    # gets through; it must exceed the produce timeout.
    reservation_ttl_s: PositiveFloat = 30.0
    redis: RedisSettings = RedisSettings()


class KafkaSettings(Section):
    bootstrap_servers: str = "127.0.0.1:9092"
    client_id: str = "hitl-gateway"
    topic_prefix: str = "hitl."
    families: list[str] = Field(
        default_factory=lambda: ["request", "loop", "user", "system", "api_key", "integration"], min_length=1
    )
    fallback_family: str = "other"
    create_topics: bool = True
    partitions: Positive = 6
    replication_factor: Positive = 1
    produce_timeout_s: PositiveFloat = 10.0
    linger_ms: int = Field(5, ge=0)
    max_batch_bytes: Positive = 256 * 1024
    compression: Literal["none", "gzip", "snappy", "lz4", "zstd"] = "none"
    retry_after_s: Positive = 5

    @field_validator("families")
    @classmethod
    def _families_are_names(cls, value: list[str]) -> list[str]:
        for family in value:
            if not family or "." in family:
                raise ValueError(f"family names without dots, such as 'request', not {family!r}")
        return value


class CloudEventsSettings(Section):
    source: str = "urn:hitl-gateway:ingress"


class LoggingSettings(Section):
    format: Literal["auto", "json", "console"] = "auto"
    level: Literal["debug", "info", "warning", "error"] = "info"


class ServeSettings(Section):
    # None: one worker per core with the Redis dedup store, one with the in-memory store.
    workers: int | None = Field(None, ge=1)
    # A worker that dies is restarted after this pause, doubled for each death in a row
    # up to max_restart_backoff_s. After a worker has run for a minute, the pause resets.
    restart_backoff_s: PositiveFloat = 1.0
    max_restart_backoff_s: PositiveFloat = 30.0
    # After SIGTERM, workers finish their requests (http.shutdown_timeout_s) and flush
    # the producer; the supervisor SIGKILLs those still running after this long.
    stop_timeout_s: PositiveFloat = 30.0


class GatewaySettings(Section):
    http: HttpSettings = HttpSettings()
    signature: SignatureSettings = SignatureSettings()
    envelope: EnvelopeSettings = EnvelopeSettings()
    dedup: DedupSettings = DedupSettings()
    kafka: KafkaSettings = KafkaSettings()
    cloudevents: CloudEventsSettings = CloudEventsSettings()
    logging: LoggingSettings = LoggingSettings()
    serve: ServeSettings = ServeSettings()

    @model_validator(mode="after")
    def _reservation_outlives_produce(self) -> "GatewaySettings":
        if self.dedup.reservation_ttl_s <= self.kafka.produce_timeout_s:
            raise ValueError(
                f"dedup.reservation_ttl_s ({self.dedup.reservation_ttl_s}) greater than "
                f"kafka.produce_timeout_s ({self.kafka.produce_timeout_s}), so a live reservation "
                "never expires while its produce is still running"
            )
        return self

    @model_validator(mode="after")
    def _stop_outlives_shutdown(self) -> "GatewaySettings":
        if self.serve.stop_timeout_s <= self.http.shutdown_timeout_s:
            raise ValueError(
                f"serve.stop_timeout_s ({self.serve.stop_timeout_s}) greater than "
                f"http.shutdown_timeout_s ({self.http.shutdown_timeout_s}), so that workers can finish "
                "their requests and flush the producer before the supervisor kills them"
            )
        return self


# Environment variable → key path in the YAML file. These are the values that usually
# differ per deployment; everything else belongs in the file.
ENVIRONMENT_OVERRIDES: dict[str, tuple[str, ...]] = {
    "GATEWAY_KAFKA_BOOTSTRAP": ("kafka", "bootstrap_servers"),
    "GATEWAY_HTTP_HOST": ("http", "host"),
    "GATEWAY_HTTP_PORT": ("http", "port"),
    "GATEWAY_LOG_FORMAT": ("logging", "format"),
    "GATEWAY_LOG_LEVEL": ("logging", "level"),
    "GATEWAY_DEDUP_BACKEND": ("dedup", "backend"),
    "GATEWAY_REDIS_URL": ("dedup", "redis", "url"),
    "GATEWAY_WORKERS": ("serve", "workers"),
}


def load_settings(path: str | Path | None = None, environ: dict[str, str] | None = None) -> GatewaySettings:
    """Load the YAML file (if any), apply environment overrides and validate the result."""
    environ = dict(os.environ if environ is None else environ)
    path = path or environ.get("GATEWAY_CONFIG")
    if path:
        data, source_map = load_yaml(path)
    else:
        data, source_map = {}, SourceMap("(defaults)")
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source_map.where(())}: expected a mapping of sections at the top level, found {type(data).__name__}")

    for variable, key_path in ENVIRONMENT_OVERRIDES.items():
        value = environ.get(variable)
        if value is None or value == "":
            continue
        _set_path(data, key_path, value)
        source_map.lines.pop(key_path, None)
        source_map.lines[key_path] = 0
    try:
        return validate(GatewaySettings, data, source_map)
    except ConfigError as error:
        raise ConfigError(_name_overrides(str(error), environ)) from None


def _set_path(data: dict, key_path: tuple[str, ...], value: str) -> None:
    node = data
    for key in key_path[:-1]:
        child = node.get(key)
        if not isinstance(child, dict):
            child = {}
            node[key] = child
        node = child
    node[key_path[-1]] = value


def _name_overrides(message: str, environ: dict[str, str]) -> str:
    """Say which environment variable set a value that failed validation."""
    lines = []
    for line in message.splitlines():
        for variable, key_path in ENVIRONMENT_OVERRIDES.items():
            if environ.get(variable) and f": {'.'.join(key_path)}:" in line:
                line = f"{line} (set by the environment variable {variable})"
        lines.append(line)
    return "\n".join(lines)


def load_webhook_secrets(settings: SignatureSettings, environ: dict[str, str] | None = None) -> list[str]:
    """Return the active webhook secrets: the environment variable's, then the file's.

    Several secrets at once allow rotation: add the new one, switch the sender, remove
    the old one.
    """
    environ = os.environ if environ is None else environ
    secrets = [part.strip() for part in environ.get(settings.secrets_env, "").split(",") if part.strip()]

    secrets_file = settings.secrets_file or environ.get(f"{settings.secrets_env}_FILE")
    if secrets_file:
        try:
            text = Path(secrets_file).read_text(encoding="utf-8")
        except OSError as error:
            raise ConfigError(
                f"signature.secrets_file: cannot read {secrets_file!r} ({error.strerror}); "
                "give the path of a file with one secret per line"
            ) from error
        secrets.extend(line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#"))
    return secrets
