"""``hitl-gateway check-config FILE``: exit codes and output."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gateway.cli import main

REPO = Path(__file__).resolve().parents[2]
VALID = """
routes:
  - name: audit
    sink: {type: log}
  - name: hook
    sink:
      type: http
      url: http://127.0.0.1:9000/hooks
      secret: {env: HOOK_SECRET_THAT_IS_NOT_SET}
"""
INVALID = """
routes:
  - name: audit
    sink: {type: log, colour: red}
    on_failure: retry
"""


def test_valid_file_exits_0(write_routes) -> None:
    path = write_routes(VALID)

    assert main(["check-config", str(path)]) == 0


def test_valid_file_prints_ok_with_route_count(write_routes, capsys) -> None:
    path = write_routes(VALID)

    main(["check-config", str(path)])

    assert capsys.readouterr().out == f"{path}: OK, 2 routes\n"


def test_invalid_file_exits_2(write_routes) -> None:
    path = write_routes(INVALID)

    assert main(["check-config", str(path)]) == 2


def test_invalid_file_prints_every_problem(write_routes, capsys) -> None:
    path = write_routes(INVALID)

    main(["check-config", str(path)])

    assert capsys.readouterr().err.splitlines() == [
        f"{path}:3: routes[0].sink.colour: unknown key; remove it or check its spelling",
        f"{path}:4: routes[0].on_failure: expected 'dead_letter', 'block' or 'drop', found 'retry'",
    ]


def test_missing_file_exits_2(tmp_path: Path) -> None:
    assert main(["check-config", str(tmp_path / "absent.yaml")]) == 2


@pytest.mark.parametrize(("path", "routes"), [("config/routes.yaml", 2), ("config/routes.examples.yaml", 4)])
def test_shipped_examples_are_valid(path: str, routes: int) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "check-config", path],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == f"{path}: OK, {routes} routes\n"


def test_gateway_file_is_recognised(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text("http:\n  port: 8080\nkafka:\n  partitions: 3\n")

    assert main(["check-config", str(path)]) == 0


def test_gateway_file_errors_name_line_and_key(tmp_path: Path, capsys) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text("kafka:\n  partitions: six\nhttp:\n  prot: 8080\n")

    assert main(["check-config", str(path)]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith(f"{path}:2: kafka.partitions: expected a valid integer")
    assert lines[1] == f"{path}:4: http.prot: unknown key; remove it or check its spelling"
