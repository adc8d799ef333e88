"""Fixtures for the scale-out tests: a throwaway redis-server and ``hitl-gateway serve``
run as a real subprocess, with helpers to sign deliveries and count Kafka records.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import orjson
import pytest
import yaml
from aiokafka import AIOKafkaConsumer, TopicPartition

from gateway.signatures import sign_hitl

REPO = Path(__file__).resolve().parents[2]
# The benchmark and these tests share one redis-server launcher, kept in bench/.
sys.path.insert(0, str(REPO))

from bench.redis_server import RedisServer, free_port  # noqa: E402

SECRET = "scaleout-test-secret"
GATEWAY_COMMAND = [sys.executable, "-m", "gateway.cli"]


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed; install Debian's package with 'apt-get install -y redis-server'")
    server = RedisServer(tmp_path / "redis")
    server.start()
    yield server
    server.stop()


def signed_headers(body: bytes) -> dict[str, str]:
    return {"Content-Type": "application/json", "X-HITL-Signature": "sha256=" + sign_hitl(body, SECRET)}


async def post(session: aiohttp.ClientSession, url: str, body: bytes) -> tuple[int, dict]:
    async with session.post(url, data=body, headers=signed_headers(body)) as response:
        return response.status, orjson.loads(await response.read())


def fresh_connections() -> aiohttp.TCPConnector:
    # One connection per request, so that SO_REUSEPORT spreads them over the workers.
    return aiohttp.TCPConnector(force_close=True, limit=0)


async def count_records(bootstrap_servers: str, topics: list[str], partitions: int = 6) -> int:
    """Return how many records the topics hold: the sum of their partitions' end offsets.

    ``partitions`` is kafka.partitions of the gateway that created the topics.
    """
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers, enable_auto_commit=False)
    await consumer.start()
    try:
        offsets = await consumer.end_offsets([TopicPartition(topic, number) for topic in topics for number in range(partitions)])
        return sum(offsets.values())
    finally:
        await consumer.stop()


class GatewayProcess:
    """``hitl-gateway serve`` in a subprocess, with its JSON log lines in a file."""

    def __init__(self, directory: Path, settings: dict, workers: int | None) -> None:
        self.directory = directory
        self.port = settings.setdefault("http", {}).setdefault("port", free_port())
        settings.setdefault("logging", {})["format"] = "json"
        self.config_path = directory / "gateway.yaml"
        self.config_path.write_text(yaml.safe_dump(settings))
        self.log_path = directory / "gateway.log"
        self.workers = workers
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/webhooks/hitl"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        command = [*GATEWAY_COMMAND, "serve", "--config", str(self.config_path)]
        if self.workers is not None:
            command += ["--workers", str(self.workers)]
        environment = {**os.environ, "HITL_WEBHOOK_SECRETS": SECRET, "PYTHONUNBUFFERED": "1"}
        with self.log_path.open("wb") as log_file:
            self.process = subprocess.Popen(
                command, cwd=REPO, env=environment, stdin=subprocess.DEVNULL, stdout=log_file, stderr=log_file
            )
        self.wait_for(lambda events: sum(e["event"] == "gateway_listening" for e in events) >= (self.workers or 1))

    def events(self) -> list[dict]:
        events = []
        for line in self.log_path.read_bytes().splitlines():
            try:
                event = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            if isinstance(event, dict) and "event" in event:
                events.append(event)
        return events

    def wait_for(self, condition, timeout_s: float = 30.0) -> list[dict]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            events = self.events()
            if condition(events):
                return events
            if self.process is not None and self.process.poll() is not None:
                raise AssertionError(f"the gateway exited with {self.process.returncode}:\n{self.log_path.read_text()}")
            time.sleep(0.05)
        raise AssertionError(f"condition not met within {timeout_s} s; gateway log:\n{self.log_path.read_text()}")

    def worker_pids(self) -> dict[int, int]:
        """The pid of each worker's latest start."""
        pids = {}
        for event in self.events():
            if event["event"] == "worker_started":
                pids[event["worker"]] = event["pid"]
        return pids

    def terminate(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    def stop(self) -> None:
        """Stop the gateway and every worker; safe to call twice."""
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=40)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


@pytest.fixture
def run_gateway(tmp_path: Path) -> Iterator:
    """Start gateways with ``run_gateway(settings, workers=N)``; all are stopped at the end."""
    started: list[GatewayProcess] = []

    def start(settings: dict, workers: int | None = None) -> GatewayProcess:
        directory = tmp_path / f"gateway{len(started)}"
        directory.mkdir()
        gateway = GatewayProcess(directory, settings, workers)
        started.append(gateway)
        gateway.start()
        return gateway

    yield start
    for gateway in started:
        gateway.stop()


def gateway_settings(kafka_bootstrap: str, topic_prefix: str, redis_url: str | None = None, **sections: dict) -> dict:
    """The settings of a test gateway, as the YAML file's mapping."""
    settings: dict = {"kafka": {"bootstrap_servers": kafka_bootstrap, "topic_prefix": topic_prefix}}
    if redis_url is not None:
        settings["dedup"] = {"backend": "redis", "redis": {"url": redis_url}}
    for name, values in sections.items():
        settings.setdefault(name, {}).update(values)
    return settings


def family_topics(topic_prefix: str) -> list[str]:
    return [topic_prefix + family for family in ("request", "loop", "user", "system", "api_key", "integration", "other")]
