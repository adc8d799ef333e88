"""Fixtures for sink tests: routed events, an HTTP receiver and a throw-away PostgreSQL.

The PostgreSQL server is a fresh cluster made with the binaries of Debian's
``postgresql`` package, in a temporary directory, listening on 127.0.0.1 at a free port.
It lives for the test session. Tests that need it are skipped only when the binaries are
not installed.
"""

from __future__ import annotations

import asyncio
import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import pytest
from aiohttp import web

from gateway.sinks.base import RoutedEvent

POSTGRES_START_TIMEOUT_S = 60


@pytest.fixture
def make_event() -> Callable[..., RoutedEvent]:
    """Build a RoutedEvent around a HITL global-webhook body."""

    def make(
        event_id: str = "evt-1",
        *,
        event_type: str = "request.completed",
        loop_id: str | None = "loop-1",
        occurred_at: str | None = "2025-03-01T12:00:00Z",
        body: dict | None = None,
        topic: str = "hitl.request",
        partition: int = 0,
        offset: int = 0,
    ) -> RoutedEvent:
        body = body or {
            "event": event_type,
            "timestamp": occurred_at,
            "data": {"request": {"id": "req-" + event_id, "loop_id": loop_id}},
        }
        headers = [("ce_specversion", b"1.0"), ("ce_id", event_id.encode()), ("ce_type", event_type.encode())]
        if occurred_at:
            headers.append(("ce_time", occurred_at.encode()))
        headers.append(("content-type", b"application/json"))
        return RoutedEvent(
            event_id=event_id,
            event_type=event_type,
            loop_id=loop_id,
            occurred_at=occurred_at,
            event=body,
            value=orjson.dumps(body),
            key=loop_id.encode() if loop_id else None,
            headers=tuple(headers),
            topic=topic,
            partition=partition,
            offset=offset,
            timestamp_ms=1_740_830_400_000,
            route="test-route",
        )

    return make


@dataclass
class ReceivedRequest:
    path_qs: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """An HTTP server on 127.0.0.1 that records requests and responds with the configured status."""

    url: str = ""
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    requests: list[ReceivedRequest] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append(ReceivedRequest(request.path_qs, dict(request.headers), await request.read()))
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        return web.Response(status=self.status, headers=self.headers, text="answer")


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    state = Receiver()
    app = web.Application()
    app.router.add_post("/hooks", state.handle)
    runner = web.AppRunner(app, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    state.url = f"http://127.0.0.1:{port}/hooks"
    yield state
    await runner.cleanup()


@pytest.fixture(scope="session")
def postgres_dsn() -> Iterator[str]:
    """Start a throw-away PostgreSQL cluster for the session and yield its DSN."""
    binaries = _postgres_binaries()
    if binaries is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) not found; install Debian's postgresql package")
    initdb, pg_ctl = binaries
    run_as = _run_as_postgres_prefix()

    directory = Path(tempfile.mkdtemp(prefix="hitl-gateway-pg-"))
    data_dir = directory / "data"
    if run_as:
        shutil.chown(directory, "postgres", "postgres")
    port = _free_port()
    try:
        _run([*run_as, initdb, "-D", str(data_dir), "-U", "postgres", "--auth=trust", "--encoding=UTF8", "--no-sync"])
        options = f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={directory} -c fsync=off"
        _run(
            [*run_as, pg_ctl, "-D", str(data_dir), "-o", options, "-l", str(directory / "server.log"), "-w",
             "-t", str(POSTGRES_START_TIMEOUT_S), "start"]
        )
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        if (data_dir / "postmaster.pid").exists():
            subprocess.run([*run_as, pg_ctl, "-D", str(data_dir), "-m", "fast", "-w", "stop"], capture_output=True, timeout=60)
        shutil.rmtree(directory, ignore_errors=True)


def _postgres_binaries() -> tuple[str, str] | None:
    for bin_dir in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        initdb, pg_ctl = os.path.join(bin_dir, "initdb"), os.path.join(bin_dir, "pg_ctl")
        if os.access(initdb, os.X_OK) and os.access(pg_ctl, os.X_OK):
            return initdb, pg_ctl
    initdb, pg_ctl = shutil.which("initdb"), shutil.which("pg_ctl")
    return (initdb, pg_ctl) if initdb and pg_ctl else None


def _run_as_postgres_prefix() -> list[str]:
    # initdb refuses to run as root; any other user runs the cluster as itself.
    if os.geteuid() != 0:
        return []
    runuser = shutil.which("runuser")
    if runuser is None:
        pytest.fail("running as root needs runuser to start PostgreSQL as the postgres user")
    return [runuser, "-u", "postgres", "--"]


def _run(command: list[str]) -> None:
    result = subprocess.run(command, capture_output=True, text=True, timeout=POSTGRES_START_TIMEOUT_S + 30)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
