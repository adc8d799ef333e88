"""bench/run works end to end with tiny counts. It checks that every step ran and that
the figures are there, never how fast anything was."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess

import orjson
import pytest

from .conftest import REPO, free_port

pytestmark = [pytest.mark.kafka, pytest.mark.redis]


@pytest.fixture(scope="module")
def smoke_report(tmp_path_factory) -> dict:
    for tool, package in (("wrk", "wrk"), ("redis-server", "redis-server")):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed; bench/run needs Debian's {package} package (apt-get install -y {package})")
    out = tmp_path_factory.mktemp("bench-results")
    # Its own broker, two free ports, so the test broker is left alone.
    kafka_port = _free_port_pair()
    try:
        result = subprocess.run(
            ["bash", str(REPO / "bench" / "run"), "--smoke", "--out", str(out)],
            cwd=REPO,
            env={**os.environ, "BENCH_KAFKA_PORT": str(kafka_port)},
            capture_output=True,
            text=True,
            timeout=280,
        )
    finally:
        _delete_broker_data(kafka_port)
    assert result.returncode == 0, f"bench/run failed ({result.returncode}):\n{result.stdout}\n{result.stderr[-6000:]}"
    report_path = next(out.glob("*-smoke.md"))
    return {
        "markdown": report_path.read_text(),
        "results": orjson.loads(next(out.glob("*-smoke.json")).read_bytes()),
    }


def _delete_broker_data(kafka_port: int) -> None:
    environment = {
        **os.environ,
        "KAFKA_PORT": str(kafka_port),
        "KAFKA_CONTROLLER_PORT": str(kafka_port + 1),
        "KAFKA_DATA_DIR": str(REPO / ".run" / f"kafka-bench-{kafka_port}"),
    }
    subprocess.run(["bash", str(REPO / "deploy" / "kafka.sh"), "reset"], env=environment, capture_output=True, timeout=120)


def _free_port_pair() -> int:
    for _ in range(20):
        port = free_port()
        if port < 65535 and _is_free(port + 1):
            return port
    raise RuntimeError("no two adjacent free ports found on 127.0.0.1")


def _is_free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@pytest.mark.timeout(300)
def test_report_has_every_section(smoke_report):
    for heading in ("## Saturation", "## Fixed arrival rates", "## Broker ceiling", "## Memory per remembered event id", "## Router", "## Targets"):
        assert heading in smoke_report["markdown"]


@pytest.mark.timeout(300)
def test_saturation_runs_accepted_events(smoke_report):
    for run in smoke_report["results"]["saturation"]:
        assert run["accepted_per_s"] > 0, run["label"]


@pytest.mark.timeout(300)
def test_fixed_rate_run_answered_every_request(smoke_report):
    run = smoke_report["results"]["fixed_rates"][0]

    assert run["ok"] == run["scheduled"]
    assert run["error_count"] == 0


@pytest.mark.timeout(300)
def test_broker_ceiling_was_measured(smoke_report):
    assert smoke_report["results"]["broker"]["saturation"]["records_per_s"] > 0


@pytest.mark.timeout(300)
def test_router_delivered_in_order(smoke_report):
    for run in smoke_report["results"]["router"]:
        assert run["complete"], run
        assert run["out_of_order"] == 0, run
