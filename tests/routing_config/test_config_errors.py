"""Every kind of routing YAML error names the file, the right line and the key path."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.errors import ConfigError
from gateway.routing.config import load_routing_config

# (case id, YAML text, line of the problem, text the problem's message contains)
ERROR_CASES = [
    (
        "unknown key",
        """
        routes:
          - name: audit
            sink: {type: log}
            retries: 3
        """,
        4,
        "routes[0].retries: unknown key",
    ),
    (
        "wrong type",
        """
        max_in_flight: many
        routes:
          - name: audit
            sink: {type: log}
        """,
        1,
        "max_in_flight: expected a valid integer",
    ),
    (
        "wrong literal",
        """
        routes:
          - name: audit
            sink: {type: log}
            on_failure: retry
        """,
        4,
        "routes[0].on_failure: expected 'dead_letter', 'block' or 'drop', found 'retry'",
    ),
    (
        "missing required key",
        """
        routes:
          - name: audit
            on_failure: drop
        """,
        2,
        "routes[0].sink: required key is missing",
    ),
    (
        "duplicate key",
        """
        routes:
          - name: audit
            sink: {type: log}
            name: audit-2
        """,
        4,
        "duplicate key 'name' (first defined on line 2)",
    ),
    (
        "no read as a boolean",
        """
        routes:
          - name: no
            sink: {type: log}
        """,
        2,
        "routes[0].name: expected a valid string, found False (YAML reads unquoted yes/no/on/off as booleans",
    ),
    (
        "tab indentation",
        "routes:\n  - name: audit\n\tsink: {type: log}\n",
        3,
        "tab used for indentation",
    ),
    (
        "duplicate route name",
        """
        routes:
          - name: audit
            sink: {type: log}
          - name: audit
            sink: {type: log}
        """,
        4,
        "routes[1].name: expected a unique route name, found 'audit', already used by routes[0].name on line 2",
    ),
    (
        "batch on a sink without batches",
        """
        routes:
          - name: hook
            sink:
              type: http
              url: http://127.0.0.1:9000/hooks
            batch: {size: 10}
        """,
        6,
        "routes[0].batch: the http sink delivers one event at a time",
    ),
    (
        "literal secret",
        """
        routes:
          - name: hook
            sink:
              type: http
              url: http://127.0.0.1:9000/hooks
              secret: hunter2-literal
        """,
        6,
        "routes[0].sink.secret: expected a secret reference such as {env: NAME}",
    ),
    (
        "literal DSN",
        """
        routes:
          - name: audit
            sink:
              type: postgres
              dsn: postgresql://audit:pw@127.0.0.1/audit
        """,
        5,
        "routes[0].sink.dsn: expected a secret reference",
    ),
    (
        "unknown sink type",
        """
        routes:
          - name: audit
            sink:
              type: carrier-pigeon
        """,
        4,
        "routes[0].sink.type: unknown sink type 'carrier-pigeon'; available: http, kafka, log, postgres",
    ),
    (
        "missing sink type",
        """
        routes:
          - name: audit
            sink:
              level: info
        """,
        3,
        "routes[0].sink.type: required key is missing; name the sink type",
    ),
    (
        "unknown sink setting",
        """
        routes:
          - name: hook
            sink:
              type: http
              url: http://127.0.0.1:9000/hooks
              timeout: 5
        """,
        6,
        "routes[0].sink.timeout: unknown key",
    ),
    (
        "invalid sink setting",
        """
        routes:
          - name: hook
            sink:
              type: http
              url: http://127.0.0.1:9000/hooks
              timeout_s: -1
        """,
        6,
        "routes[0].sink.timeout_s: expected greater than 0, found -1",
    ),
    (
        "missing sink setting",
        """
        routes:
          - name: copy
            sink:
              type: kafka
        """,
        3,
        "routes[0].sink.topic: required key is missing",
    ),
    (
        "condition with two operators",
        """
        routes:
          - name: audit
            sink: {type: log}
            match:
              conditions:
                - {path: data.request.priority, equals: high, prefix: h}
        """,
        6,
        "routes[0].match.conditions[0]: expected exactly one of equals, in, exists or prefix next to path, "
        "found equals, prefix",
    ),
    (
        "secret reference with two sources",
        """
        routes:
          - name: hook
            sink:
              type: http
              url: http://127.0.0.1:9000/hooks
              secret: {env: HOOK_SECRET, file: /run/secrets/hook}
        """,
        6,
        "routes[0].sink.secret: expected exactly one of env or file",
    ),
    (
        "no routes",
        """
        kafka:
          group_id: router
        routes: []
        """,
        3,
        "routes: expected at least one route, found an empty list",
    ),
]


@pytest.mark.parametrize(("text", "line", "expected"), [case[1:] for case in ERROR_CASES], ids=[case[0] for case in ERROR_CASES])
def test_error_names_file_line_and_key_path(write_routes, text: str, line: int, expected: str) -> None:
    path = write_routes(text)

    problems = _problems(path)

    matching = [problem for problem in problems if expected in problem]
    assert matching, f"no problem contains {expected!r}; problems: {problems}"
    assert matching[0].startswith(f"{path}:{line}: "), matching[0]


def test_literal_secret_is_not_repeated_in_the_message(write_routes) -> None:
    path = write_routes(
        """
        routes:
          - name: hook
            sink:
              type: http
              url: http://127.0.0.1:9000/hooks
              secret: hunter2-literal
        """
    )

    message = "\n".join(_problems(path))

    assert "hunter2-literal" not in message


def test_all_problems_in_line_order(write_routes) -> None:
    path = write_routes(
        """
        max_in_flight: 0
        routes:
          - name: hook
            sink:
              type: http
              url: http://127.0.0.1:9000/hooks
              colour: red
            stale_events: sometimes
        """
    )

    problems = _problems(path)

    assert [problem.split(": ", 1)[0] for problem in problems] == [f"{path}:1", f"{path}:7", f"{path}:8"]


def test_duplicate_route_name_is_reported_once(write_routes) -> None:
    path = write_routes(
        """
        routes:
          - name: audit
            sink: {type: log}
          - name: audit
            sink: {type: log}
        """
    )

    problems = _problems(path)

    assert len(problems) == 1


def test_failed_sink_is_not_reported_again_as_missing(write_routes) -> None:
    path = write_routes(
        """
        routes:
          - name: audit
            sink: {type: carrier-pigeon}
        """
    )

    problems = _problems(path)

    assert len(problems) == 1


def test_non_mapping_top_level_is_rejected(write_routes) -> None:
    path = write_routes("- name: audit\n")

    problems = _problems(path)

    assert problems[0].startswith(f"{path}:1: expected a mapping")


def test_missing_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "absent.yaml"

    problems = _problems(path)

    assert problems[0].startswith(f"{path}: file not found")


def test_environment_overrides_bootstrap_servers(write_routes) -> None:
    path = write_routes(
        """
        routes:
          - name: audit
            sink: {type: log}
        """
    )

    config = load_routing_config(path, environ={"GATEWAY_KAFKA_BOOTSTRAP": "10.0.0.7:9092"})

    assert config.kafka.bootstrap_servers == "10.0.0.7:9092"


def _problems(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_routing_config(path, environ={})
    return str(caught.value).splitlines()
