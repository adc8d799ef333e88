"""``hitl-gateway serve --workers N``: worker count, restarts and graceful stop."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time

import aiohttp
import pytest

from gateway.errors import ConfigError
from gateway.samples import sample_body
from gateway.settings import GatewaySettings
from gateway.workers import resolve_worker_count, usable_cores

from .conftest import GATEWAY_COMMAND, REPO, SECRET, count_records, family_topics, fresh_connections, gateway_settings, post


def test_redis_default_one_worker_per_core():
    settings = GatewaySettings.model_validate({"dedup": {"backend": "redis"}})

    assert resolve_worker_count(settings) == usable_cores()


def test_memory_default_one_worker():
    assert resolve_worker_count(GatewaySettings()) == 1


def test_memory_rejects_workers_setting():
    settings = GatewaySettings.model_validate({"serve": {"workers": 2}})

    with pytest.raises(ConfigError, match="GATEWAY_DEDUP_BACKEND=redis"):
        resolve_worker_count(settings)


def test_serve_rejects_two_memory_workers():
    result = subprocess.run(
        [*GATEWAY_COMMAND, "serve", "--workers", "2"],
        cwd=REPO,
        env={**os.environ, "HITL_WEBHOOK_SECRETS": SECRET, "GATEWAY_DEDUP_BACKEND": "memory"},
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 2
    assert "dedup.backend: redis" in result.stderr
    assert "GATEWAY_DEDUP_BACKEND=redis" in result.stderr


@pytest.mark.kafka
@pytest.mark.redis
async def test_restarts_killed_worker(kafka_bootstrap, topic_prefix, redis_server, run_gateway):
    settings = gateway_settings(kafka_bootstrap, topic_prefix, redis_server.url, serve={"restart_backoff_s": 0.2})
    gateway = run_gateway(settings, workers=2)
    killed_pid = gateway.worker_pids()[0]

    os.kill(killed_pid, signal.SIGKILL)
    gateway.wait_for(lambda events: _started_again(events, worker=0, after_pid=killed_pid))
    async with aiohttp.ClientSession(connector=fresh_connections()) as session:
        answers = await asyncio.gather(*(post(session, gateway.url, sample_body("loop.updated")) for _ in range(20)))

    restarted_pid = gateway.worker_pids()[0]
    died = [event for event in gateway.events() if event["event"] == "worker_died"]
    assert restarted_pid != killed_pid
    assert died[0]["exit"] == "signal SIGKILL"
    assert {status for status, _ in answers} == {200}


def _started_again(events: list[dict], *, worker: int, after_pid: int) -> bool:
    """True once the worker has a new pid and that process listens."""
    new_pids = [e["pid"] for e in events if e["event"] == "worker_started" and e["worker"] == worker and e["pid"] != after_pid]
    listening = [e for e in events if e["event"] == "gateway_listening" and e.get("worker") == worker]
    return bool(new_pids) and len(listening) >= 2


@pytest.mark.kafka
@pytest.mark.redis
async def test_sigterm_answers_in_flight_requests(
    kafka_bootstrap, topic_prefix, redis_server, run_gateway
):
    stop_timeout_s = 20.0
    # A long linger keeps every request waiting for its batch when SIGTERM arrives.
    settings = gateway_settings(
        kafka_bootstrap,
        topic_prefix,
        redis_server.url,
        kafka={"linger_ms": 1500},
        http={"shutdown_timeout_s": 10},
        serve={"stop_timeout_s": stop_timeout_s},
    )
    gateway = run_gateway(settings, workers=2)

    async with aiohttp.ClientSession(connector=fresh_connections()) as session:
        in_flight = [asyncio.create_task(post(session, gateway.url, sample_body("request.claimed"))) for _ in range(10)]
        await asyncio.sleep(0.5)
        signalled_at = time.monotonic()
        gateway.terminate()
        await asyncio.sleep(0.3)
        with pytest.raises(aiohttp.ClientConnectionError):
            await post(session, gateway.url, sample_body("request.claimed"))
        answers = await asyncio.gather(*in_flight)
    exit_status = await asyncio.to_thread(gateway.process.wait, stop_timeout_s + 5)
    stopped_after_s = time.monotonic() - signalled_at

    assert [answer["status"] for _, answer in answers] == ["accepted"] * 10
    assert exit_status == 0
    assert stopped_after_s < stop_timeout_s
    assert await count_records(kafka_bootstrap, family_topics(topic_prefix)) == 10


@pytest.mark.kafka
@pytest.mark.redis
async def test_sigterm_kills_stuck_worker(kafka_bootstrap, topic_prefix, redis_server, run_gateway):
    stop_timeout_s = 3.0
    settings = gateway_settings(
        kafka_bootstrap,
        topic_prefix,
        redis_server.url,
        http={"shutdown_timeout_s": 1},
        serve={"stop_timeout_s": stop_timeout_s},
    )
    gateway = run_gateway(settings, workers=2)
    stuck_pid = gateway.worker_pids()[1]
    # A stopped process cannot act on SIGTERM, as a worker stuck in a long call.
    os.kill(stuck_pid, signal.SIGSTOP)

    signalled_at = time.monotonic()
    gateway.terminate()
    exit_status = await asyncio.to_thread(gateway.process.wait, stop_timeout_s + 10)
    stopped_after_s = time.monotonic() - signalled_at

    killed = [event for event in gateway.events() if event["event"] == "worker_killed"]
    assert exit_status == 0
    assert stop_timeout_s <= stopped_after_s < stop_timeout_s + 2
    assert [event["pid"] for event in killed] == [stuck_pid]
    assert not _alive(stuck_pid)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
