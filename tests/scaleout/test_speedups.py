"""The start-up check for the C extensions of the hot path."""

from __future__ import annotations

import os
import subprocess
import sys

from .conftest import REPO, free_port

PROBE = "from gateway.app import missing_speedups; print(','.join(missing_speedups()))"


def _missing(extra_environment: dict[str, str]) -> list[str]:
    environment = {key: value for key, value in os.environ.items() if not key.endswith("_NO_EXTENSIONS")}
    result = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=REPO, env={**environment, **extra_environment}, capture_output=True, text=True, timeout=60
    )
    return [name for name in result.stdout.strip().split(",") if name]


def test_installed_extensions_are_found():
    assert _missing({}) == []


def test_aiokafka_without_extensions_is_reported():
    assert _missing({"AIOKAFKA_NO_EXTENSIONS": "1"}) == ["aiokafka.record._crecords"]


def test_serve_warns_without_aiokafka_extensions():
    # No broker listens on this port, so serve logs its start-up checks and exits.
    result = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "serve"],
        cwd=REPO,
        env={
            **os.environ,
            "AIOKAFKA_NO_EXTENSIONS": "1",
            "HITL_WEBHOOK_SECRETS": "test-secret",
            "GATEWAY_LOG_FORMAT": "json",
            "GATEWAY_KAFKA_BOOTSTRAP": f"127.0.0.1:{free_port()}",
            "GATEWAY_HTTP_PORT": str(free_port()),
        },
        capture_output=True,
        text=True,
        timeout=90,
    )

    assert result.returncode == 1
    assert '"event":"speedups_missing"' in result.stderr
    assert "aiokafka.record._crecords" in result.stderr
