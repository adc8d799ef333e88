"""The servers under test, run as subprocesses: the gateway and the empty handler."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import orjson
import yaml

START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 40.0


def wait_for_port(port: int, timeout_s: float = START_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout_s:.0f} s")


class GatewayServer:
    """``hitl-gateway serve`` with a generated YAML file; its JSON log goes to a file."""

    def __init__(self, directory: Path, settings: dict, workers: int, secret: str) -> None:
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = settings["http"]["port"]
        self.workers = workers
        self.secret = secret
        self.config_path = directory / "gateway.yaml"
        self.config_path.write_text(yaml.safe_dump(settings))
        self.log_path = directory / "gateway.log"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        environment = {**os.environ, "HITL_WEBHOOK_SECRETS": self.secret}
        with self.log_path.open("wb") as log_file:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "gateway.cli", "serve", "--config", str(self.config_path), "--workers", str(self.workers)],
                env=environment,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=log_file,
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the gateway exited with {self.process.returncode}; its log:\n{self.log_path.read_text()[-4000:]}")
            if sum(event.get("event") == "gateway_listening" for event in self.events()) >= self.workers:
                return
            time.sleep(0.05)
        raise RuntimeError(f"the gateway did not listen within {START_TIMEOUT_S:.0f} s; its log:\n{self.log_path.read_text()[-4000:]}")

    def events(self) -> list[dict]:
        events = []
        for line in self.log_path.read_bytes().splitlines():
            try:
                event = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            if isinstance(event, dict):
                events.append(event)
        return events

    def worker_pids(self) -> list[int]:
        """Return the pids that serve requests: the workers, or the only process."""
        if self.workers == 1:
            return [self.process.pid]
        pids = {}
        for event in self.events():
            if event.get("event") == "worker_started":
                pids[event["worker"]] = event["pid"]
        return list(pids.values())

    def stop(self) -> None:
        """Stop gracefully; safe to call twice."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


class EmptyServer:
    """bench/empty_server.py: the HTTP ceiling."""

    def __init__(self, port: int, workers: int) -> None:
        self.port = port
        self.workers = workers
        self.process: subprocess.Popen | None = None
        self.pids: list[int] = []

    def start(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.empty_server", "--port", str(self.port), "--workers", str(self.workers)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.pids = [int(pid) for pid in self.process.stdout.readline().split()]
        wait_for_port(self.port)

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        process.stdout.close()
