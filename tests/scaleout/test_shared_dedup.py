"""Deduplication across worker processes through Redis, with ``hitl-gateway serve`` run
for real against the local Kafka broker."""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import time

import aiohttp
import pytest
import redis.asyncio as aioredis

from gateway.samples import sample_body

from .conftest import count_records, family_topics, fresh_connections, gateway_settings, post

pytestmark = [pytest.mark.kafka, pytest.mark.redis]


async def test_two_workers_give_one_record(
    kafka_bootstrap, topic_prefix, redis_server, run_gateway
):
    gateway = run_gateway(gateway_settings(kafka_bootstrap, topic_prefix, redis_server.url), workers=2)
    body = sample_body("request.completed")

    async with aiohttp.ClientSession(connector=fresh_connections()) as session:
        answers = await asyncio.gather(*(post(session, gateway.url, body) for _ in range(50)))

    statuses = {status for status, _ in answers}
    outcomes = sorted(answer["status"] for _, answer in answers)
    receipts = {(answer["topic"], answer["partition"], answer["offset"]) for _, answer in answers}
    assert statuses == {200}
    assert outcomes == ["accepted"] + ["duplicate"] * 49
    assert len(receipts) == 1
    assert await count_records(kafka_bootstrap, family_topics(topic_prefix)) == 1


async def test_metrics_sum_all_workers(kafka_bootstrap, topic_prefix, redis_server, run_gateway):
    gateway = run_gateway(gateway_settings(kafka_bootstrap, topic_prefix, redis_server.url), workers=2)

    async with aiohttp.ClientSession(connector=fresh_connections()) as session:
        await asyncio.gather(*(post(session, gateway.url, sample_body("loop.created")) for _ in range(30)))
        pages = []
        for _ in range(6):
            async with session.get(gateway.base_url + "/metrics") as response:
                pages.append(await response.text())

    for page in pages:
        assert 'hitl_gateway_requests_total{outcome="accepted"} 30.0' in page


async def test_killed_holder_reservation_expires(
    kafka_broker, kafka_bootstrap, topic_prefix, redis_server, run_gateway
):
    reservation_ttl_s = 15.0
    settings = gateway_settings(
        kafka_bootstrap,
        topic_prefix,
        redis_server.url,
        dedup={"reservation_ttl_s": reservation_ttl_s, "wait_timeout_s": 40},
        kafka={"produce_timeout_s": 5},
    )
    gateway = run_gateway(settings, workers=2)
    body = sample_body("request.created")
    key = b"hitl-gateway:dedup:sha256:" + hashlib.sha256(body).hexdigest().encode()
    client = aioredis.from_url(redis_server.url)

    kafka_broker.kill()
    try:
        async with aiohttp.ClientSession(connector=fresh_connections()) as session:
            first = asyncio.create_task(post(session, gateway.url, body))
            holder_pid, reserved_at = await _wait_for_reservation(client, key)
            # The worker dies while its produce is stalled on the stopped broker.
            os.kill(holder_pid, signal.SIGKILL)
            with pytest.raises(aiohttp.ClientError):
                await first
    finally:
        kafka_broker.start()

    async with aiohttp.ClientSession(connector=fresh_connections()) as session:
        status, answer = await post(session, gateway.url, body)
    answered_at = time.monotonic()
    await client.aclose()

    assert status == 200
    assert answer["status"] == "accepted"
    assert answered_at - reserved_at >= reservation_ttl_s - 0.5
    assert await count_records(kafka_bootstrap, family_topics(topic_prefix)) == 1


async def _wait_for_reservation(client, key: bytes) -> tuple[int, float]:
    """Return the pid in the reservation token ``p:<pid>.<random>.<n>`` once it is there."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        value = await client.get(key)
        if value is not None and value.startswith(b"p:"):
            return int(value[2:].split(b".")[0]), time.monotonic()
        await asyncio.sleep(0.01)
    raise AssertionError(f"no reservation appeared under {key!r} within 10 s")


async def test_fail_closed_answers_503(
    kafka_bootstrap, topic_prefix, redis_server, run_gateway
):
    settings = gateway_settings(kafka_bootstrap, topic_prefix, redis_server.url)
    settings["dedup"]["redis"]["on_unavailable"] = "fail_closed"
    gateway = run_gateway(settings, workers=1)
    redis_server.stop()

    async with aiohttp.ClientSession(connector=fresh_connections()) as session:
        answers = [await post(session, gateway.url, sample_body("user.joined")) for _ in range(3)]

    assert [status for status, _ in answers] == [503, 503, 503]
    assert {answer["error"] for _, answer in answers} == {"dedup_unavailable"}
    assert await count_records(kafka_bootstrap, family_topics(topic_prefix)) == 0


async def test_fail_open_bypasses_and_logs_once(
    kafka_bootstrap, topic_prefix, redis_server, run_gateway
):
    settings = gateway_settings(kafka_bootstrap, topic_prefix, redis_server.url)
    settings["dedup"]["redis"]["on_unavailable"] = "fail_open"
    gateway = run_gateway(settings, workers=1)
    redis_server.stop()

    async with aiohttp.ClientSession(connector=fresh_connections()) as session:
        answers = [await post(session, gateway.url, sample_body("user.joined")) for _ in range(3)]
        async with session.get(gateway.base_url + "/metrics") as response:
            page = await response.text()
        redis_server.start()
        await post(session, gateway.url, sample_body("user.joined"))

    events = [event["event"] for event in gateway.events()]
    assert [answer["status"] for _, answer in answers] == ["accepted"] * 3
    assert "hitl_gateway_dedup_bypassed_total 3.0" in page
    assert events.count("dedup_store_unreachable") == 1
    assert events.count("dedup_store_reachable") == 1
    assert await count_records(kafka_bootstrap, family_topics(topic_prefix)) == 4
