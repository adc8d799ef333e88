"""Fixtures shared by every test: the real local Kafka broker and topic names.

The broker is the one ``deploy/kafka.sh`` runs, on its own port and data directory so
that a developer's ``make run`` broker is left alone. Tests that stop or kill the broker
start it again before they finish.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
KAFKA_SCRIPT = REPO / "deploy" / "kafka.sh"
TEST_KAFKA_PORT = int(os.environ.get("TEST_KAFKA_PORT", "19092"))


@dataclass
class KafkaBroker:
    """The test broker, with the controls that failure tests need."""

    bootstrap_servers: str
    environment: dict[str, str]

    def _run(self, command: str) -> None:
        # Output goes to a file, not a pipe: the broker started in the background would
        # inherit a pipe and keep it open, and reading it would never end.
        with tempfile.TemporaryFile() as output:
            result = subprocess.run(
                ["bash", str(KAFKA_SCRIPT), command], env=self.environment, stdout=output, stderr=output, timeout=600
            )
            if result.returncode != 0:
                output.seek(0)
                text = output.read().decode(errors="replace")
                raise RuntimeError(f"deploy/kafka.sh {command} failed with exit code {result.returncode}:\n{text}")

    def start(self) -> None:
        self._run("start")

    def stop(self) -> None:
        self._run("stop")

    def kill(self) -> None:
        self._run("kill")


@pytest.fixture(scope="session")
def kafka_broker() -> KafkaBroker:
    environment = {
        **os.environ,
        "KAFKA_PORT": str(TEST_KAFKA_PORT),
        "KAFKA_CONTROLLER_PORT": str(TEST_KAFKA_PORT + 1),
        "KAFKA_DATA_DIR": str(REPO / ".run" / "kafka-test"),
    }
    broker = KafkaBroker(f"127.0.0.1:{TEST_KAFKA_PORT}", environment)
    broker.start()
    return broker


@pytest.fixture
def kafka_bootstrap(kafka_broker: KafkaBroker) -> str:
    return kafka_broker.bootstrap_servers


@pytest.fixture
def topic_prefix() -> str:
    """A fresh topic prefix, so that each test reads only its own records."""
    return f"t{uuid.uuid4().hex[:10]}."
