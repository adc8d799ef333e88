"""The routing YAML: which events go to which sink, and how failures are handled.

``load_routing_config`` reports every problem of a file at once, each as
``FILE:LINE: key.path: expected ..., found ...``. A route's ``sink`` section is checked
against the ``Settings`` model of the sink class its ``type`` names, so a misspelt sink
setting is reported with its own line like any other key. ``config/routes.yaml`` is the
documented example.

Secrets are never written into the file: a secret setting contains a reference,
``{env: NAME}`` or ``{file: /run/secrets/name}``, resolved when the sink starts.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializeAsAny,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from gateway.errors import ConfigError
from gateway.routing.match import Match, expected_found
from gateway.routing.transform import Transform
from gateway.sinks.base import SinkSettings
from gateway.sinks.registry import available_sink_types, load_sink_class
from gateway.yamlsource import KeyPath, SourceMap, describe_problem, format_key_path, load_yaml

DEFAULT_TOPICS = [
    "hitl.request",
    "hitl.loop",
    "hitl.user",
    "hitl.system",
    "hitl.api_key",
    "hitl.integration",
    "hitl.other",
]
# Environment variable → key path in the routing file.
ENVIRONMENT_OVERRIDES: dict[str, tuple[str, ...]] = {
    "GATEWAY_KAFKA_BOOTSTRAP": ("kafka", "bootstrap_servers"),
}
ROUTE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")

Positive = Annotated[int, Field(gt=0)]
PositiveFloat = Annotated[float, Field(gt=0)]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SecretRef(Section):
    """A secret's source: an environment variable or a file, never the YAML itself."""

    env: str | None = Field(None, min_length=1)
    file: str | None = Field(None, min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _not_a_literal(cls, data: Any) -> Any:
        if isinstance(data, (str, int, float)) and not isinstance(data, bool):
            raise PydanticCustomError(
                "secret_literal",
                "a secret reference such as {env: NAME} or {file: /run/secrets/name}",
            )
        return data

    @model_validator(mode="after")
    def _exactly_one_source(self) -> "SecretRef":
        if (self.env is None) == (self.file is None):
            found = "both" if self.env is not None else "neither"
            raise expected_found("exactly one of env or file, such as {env: CRM_WEBHOOK_SECRET}", found)
        return self

    def resolve(self, environ: dict[str, str] | None = None) -> str:
        """Return the secret; raise ConfigError when its variable or file is missing or empty."""
        if self.env is not None:
            value = (os.environ if environ is None else environ).get(self.env, "")
            if not value:
                raise ConfigError(
                    f"the environment variable {self.env} is not set or empty; it must hold the secret "
                    "that the routing configuration refers to"
                )
            return value

        try:
            value = Path(self.file).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as error:
            reason = getattr(error, "strerror", None) or str(error)
            raise ConfigError(
                f"cannot read the secret file {self.file} ({reason}); it must exist and be readable "
                "by the router's user"
            ) from error
        if not value:
            raise ConfigError(f"the secret file {self.file} is empty; write the secret into it")
        return value

    def __str__(self) -> str:
        # What logs and error messages may show: where the secret is, not the secret.
        return f"env:{self.env}" if self.env is not None else f"file:{self.file}"


class RetrySettings(Section):
    attempts: Positive = 5
    initial_backoff_s: PositiveFloat = 0.5
    max_backoff_s: PositiveFloat = 30.0
    # Each delay is varied at random by up to this fraction, so that routes failing
    # together do not retry in lockstep.
    jitter: float = Field(0.2, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _max_not_below_initial(self) -> "RetrySettings":
        if self.max_backoff_s < self.initial_backoff_s:
            raise expected_found(
                f"max_backoff_s at least initial_backoff_s ({self.initial_backoff_s})", str(self.max_backoff_s)
            )
        return self


class RateLimitSettings(Section):
    events_per_s: PositiveFloat


class BatchSettings(Section):
    size: Positive
    wait_ms: int = Field(200, ge=0)


class SinkSpec(BaseModel):
    """A route's ``sink`` section: the sink type and its validated settings.

    In the YAML the settings sit next to ``type``; here they are the sink class's
    ``Settings`` instance.
    """

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    type: str
    settings: SerializeAsAny[SinkSettings]
    sink_class: Any = Field(exclude=True, repr=False)

    @model_validator(mode="before")
    @classmethod
    def _from_yaml_form(cls, data: Any) -> Any:
        # load_routing_config builds SinkSpec instances itself to report errors line by
        # line; this path serves code that builds a configuration from a dict.
        if isinstance(data, SinkSpec) or (isinstance(data, dict) and "sink_class" in data):
            return data
        if not isinstance(data, dict):
            raise expected_found("a mapping with the sink type and its settings, such as {type: log}", repr(data))
        sink_class, settings, problems = build_sink(data, SourceMap("(sink)"), ())
        if problems:
            raise ValueError("valid sink settings: " + "; ".join(problem.split(": ", 1)[-1] for problem in problems))
        return {"type": data["type"], "settings": settings, "sink_class": sink_class}

    @property
    def supports_batches(self) -> bool:
        return bool(self.sink_class.supports_batches)


class Route(Section):
    name: str
    match: Match = Field(default_factory=Match)
    transform: Transform | None = None
    sink: SinkSpec
    retry: RetrySettings = RetrySettings()
    on_failure: Literal["dead_letter", "block", "drop"] = "dead_letter"
    rate_limit: RateLimitSettings | None = None
    batch: BatchSettings | None = None
    stale_events: Literal["deliver", "skip", "mark"] = "deliver"

    @field_validator("name")
    @classmethod
    def _name_is_simple(cls, value: str) -> str:
        # Route names appear in metric labels, log lines and DLQ headers.
        if not ROUTE_NAME.match(value):
            raise ValueError("a name of letters, digits, '.', '_' and '-', such as 'completed-to-crm'")
        return value

    @model_validator(mode="after")
    def _batch_only_where_supported(self) -> "Route":
        if self.batch is not None and not self.sink.supports_batches:
            raise PydanticCustomError(
                "batch_unsupported",
                "the {sink_type} sink delivers one event at a time; remove batch from this route",
                {"sink_type": self.sink.type},
            )
        return self


class RouterKafkaSettings(Section):
    bootstrap_servers: str = Field("127.0.0.1:9092", min_length=1)
    group_id: str = Field("hitl-gateway-router", min_length=1)
    topics: list[str] = Field(default_factory=lambda: list(DEFAULT_TOPICS), min_length=1)
    dlq_suffix: str = Field(".dlq", min_length=1)
    # The router may start before the ingress has created the family topics, and a group
    # subscribed to a missing topic gets no partitions of it until its next metadata
    # refresh. Same defaults as the ingress's kafka section.
    create_topics: bool = True
    partitions: Positive = 6
    replication_factor: Positive = 1


class RoutingConfig(Section):
    kafka: RouterKafkaSettings = RouterKafkaSettings()
    # Events read but not yet delivered (or dead-lettered), across all keys and routes.
    max_in_flight: Positive = 1000
    routes: list[Route]

    @field_validator("routes")
    @classmethod
    def _at_least_one_route(cls, value: list[Route]) -> list[Route]:
        if not value:
            raise expected_found("at least one route", "an empty list")
        return value

    @model_validator(mode="after")
    def _route_names_unique(self) -> "RoutingConfig":
        names = [route.name for route in self.routes]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise PydanticCustomError(
                "duplicate_route_name", "unique route names; repeated: {names}", {"names": ", ".join(repeated)}
            )
        return self

    def route(self, name: str) -> Route:
        """Return the route called ``name``; raise KeyError when there is none."""
        for route in self.routes:
            if route.name == name:
                return route
        raise KeyError(name)


def load_routing_config(path: str | Path, environ: dict[str, str] | None = None) -> RoutingConfig:
    """Read, override from the environment and validate a routing YAML file.

    Raises ConfigError whose message has one line per problem, ordered by line number.
    Nothing is started and nothing is contacted; secrets are not resolved.
    """
    environ = dict(os.environ if environ is None else environ)
    data, source_map = load_yaml(path)
    if not isinstance(data, dict):
        raise ConfigError(
            f"{source_map.where(())}: expected a mapping with kafka, max_in_flight and routes at the top level, "
            f"found {type(data).__name__}"
        )
    overridden = _apply_environment(data, source_map, environ)

    problems: list[tuple[int, str]] = []
    data, failed_sinks = _build_sinks(data, source_map, problems)
    _check_route_names(data, source_map, problems)

    try:
        config = RoutingConfig.model_validate(data)
    except ValidationError as error:
        for item in error.errors():
            if item["type"] == "duplicate_route_name" or _under_any(item["loc"], failed_sinks):
                continue
            problems.append(_locate(describe(item, source_map), source_map))
        config = None

    if problems:
        messages = [message for _line, message in sorted(problems, key=lambda pair: pair[0])]
        raise ConfigError("\n".join(_name_overrides(message, overridden) for message in messages))
    return config


def describe(item: dict, source_map: SourceMap, context: KeyPath = ()) -> str:
    """Describe one pydantic error item like ``describe_problem``, plus this module's own kinds."""
    kind = item["type"]
    key_path = (*context, *item["loc"])
    if kind == "secret_literal":
        # The literal is the secret itself, so the message leaves it out.
        return (
            f"{source_map.where(key_path)}: {format_key_path(key_path)}: expected a secret reference such as "
            "{env: NAME} or {file: /run/secrets/name}, found a literal value; secrets are never written "
            "into the configuration"
        )
    if kind == "expected_found":
        context_values = item["ctx"]
        return (
            f"{source_map.where(key_path)}: {format_key_path(key_path)}: "
            f"expected {context_values['expected']}, found {context_values['found']}"
        )
    if kind == "batch_unsupported":
        key_path = (*key_path, "batch")
        return f"{source_map.where(key_path)}: {format_key_path(key_path)}: {item['msg']}"
    return describe_problem(item, source_map, context)


def build_sink(
    raw: dict[str, Any], source_map: SourceMap, key_path: KeyPath
) -> tuple[type | None, SinkSettings | None, list[str]]:
    """Resolve a ``sink`` section's type and validate its other keys with that type's Settings.

    Returns the class, the settings and the problems found (empty when both are set).
    """
    type_path = (*key_path, "type")
    type_name = raw.get("type")
    if "type" not in raw:
        return None, None, [
            f"{source_map.where(key_path)}: {format_key_path(type_path)}: required key is missing; "
            f"name the sink type, one of: {', '.join(available_sink_types())}"
        ]
    if not isinstance(type_name, str):
        return None, None, [
            f"{source_map.where(type_path)}: {format_key_path(type_path)}: expected a sink type name, "
            f"one of: {', '.join(available_sink_types())}, found {type_name!r}"
        ]

    try:
        sink_class = load_sink_class(type_name)
    except ConfigError as error:
        return None, None, [f"{source_map.where(type_path)}: {format_key_path(type_path)}: {error}"]

    settings_data = {key: value for key, value in raw.items() if key != "type"}
    try:
        settings = sink_class.Settings.model_validate(settings_data)
    except ValidationError as error:
        return sink_class, None, [describe(item, source_map, key_path) for item in error.errors()]
    return sink_class, settings, []


def _build_sinks(
    data: dict[str, Any], source_map: SourceMap, problems: list[tuple[int, str]]
) -> tuple[dict[str, Any], list[KeyPath]]:
    """Replace every route's sink mapping by a SinkSpec, reporting sink problems with their lines.

    Returns a copy of ``data`` and the key paths of the sinks that failed, whose errors
    from the model validation that follows would only repeat these problems.
    """
    routes = data.get("routes")
    if not isinstance(routes, list):
        return data, []

    failed: list[KeyPath] = []
    built_routes = []
    for index, route in enumerate(routes):
        raw_sink = route.get("sink") if isinstance(route, dict) else None
        if not isinstance(raw_sink, dict):
            built_routes.append(route)
            continue
        key_path: KeyPath = ("routes", index, "sink")
        sink_class, settings, sink_problems = build_sink(raw_sink, source_map, key_path)
        if sink_problems:
            failed.append(key_path)
            problems.extend(_locate(problem, source_map) for problem in sink_problems)
            built_routes.append({key: value for key, value in route.items() if key != "sink"})
            continue
        spec = SinkSpec.model_construct(type=raw_sink["type"], settings=settings, sink_class=sink_class)
        built_routes.append({**route, "sink": spec})
    return {**data, "routes": built_routes}, failed


def _check_route_names(data: dict[str, Any], source_map: SourceMap, problems: list[tuple[int, str]]) -> None:
    routes = data.get("routes")
    first_index: dict[str, int] = {}
    for index, route in enumerate(routes if isinstance(routes, list) else ()):
        name = route.get("name") if isinstance(route, dict) else None
        if not isinstance(name, str):
            continue
        if name not in first_index:
            first_index[name] = index
            continue
        first_path = ("routes", first_index[name], "name")
        key_path = ("routes", index, "name")
        message = (
            f"{source_map.where(key_path)}: {format_key_path(key_path)}: expected a unique route name, "
            f"found {name!r}, already used by {format_key_path(first_path)} on line {source_map.line_of(first_path)}"
        )
        problems.append(_locate(message, source_map))


def _apply_environment(data: dict[str, Any], source_map: SourceMap, environ: dict[str, str]) -> dict[str, str]:
    """Set the values given by environment variables; return {key path text: variable}."""
    overridden = {}
    for variable, key_path in ENVIRONMENT_OVERRIDES.items():
        value = environ.get(variable)
        if not value:
            continue
        node = data
        for key in key_path[:-1]:
            if not isinstance(node.get(key), dict):
                node[key] = {}
            node = node[key]
        node[key_path[-1]] = value
        # Line 0 makes the message name the file without a line: the value is not in it.
        source_map.lines[key_path] = 0
        overridden[format_key_path(key_path)] = variable
    return overridden


def _name_overrides(message: str, overridden: dict[str, str]) -> str:
    for shown_path, variable in overridden.items():
        if f": {shown_path}:" in message:
            return f"{message} (set by the environment variable {variable})"
    return message


def _locate(message: str, source_map: SourceMap) -> tuple[int, str]:
    # Sort key: the line number right after "FILE:", or 0 when the message has none.
    rest = message[len(source_map.path) + 1 :] if message.startswith(source_map.path + ":") else ""
    digits = rest.split(":", 1)[0]
    return (int(digits) if digits.isdigit() else 0), message


def _under_any(loc: tuple, prefixes: list[KeyPath]) -> bool:
    return any(tuple(loc[: len(prefix)]) == prefix for prefix in prefixes)
