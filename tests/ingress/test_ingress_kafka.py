"""The ingress against the real broker: records, duplicates, rejections and outages."""

import asyncio
from pathlib import Path

import orjson
import pytest

from tests.kafka_records import read_topic

SAMPLES = Path(__file__).resolve().parent.parent / "fixtures" / "hitl-samples"

FAMILY_SAMPLES = {
    "request": "request.created.json",
    "loop": "loop.updated.json",
    "user": "user.invited.json",
    "system": "system.error.json",
    "api_key": "api_key.limit_exceeded.json",
}


async def test_each_family_lands_in_its_topic(start_gateway, kafka_bootstrap, topic_prefix):
    gateway = await start_gateway()

    for family, name in FAMILY_SAMPLES.items():
        body = (SAMPLES / name).read_bytes()
        status, answer, _ = await gateway.post(body)
        assert status == 200, answer
        assert answer["status"] == "accepted"
        assert answer["topic"] == f"{topic_prefix}{family}"

        records = await read_topic(kafka_bootstrap, f"{topic_prefix}{family}")
        assert len(records) == 1
        record = records[0]
        event = orjson.loads(body)
        loop_id = (
            event.get("loop_id")
            or event["data"].get("loop_id")
            or event["data"].get("request", {}).get("loop_id")
            or event["data"].get("loop", {}).get("id")
        )
        assert record.value == body
        assert record.key == (loop_id.encode() if loop_id else None)
        assert (record.partition, record.offset) == (answer["partition"], answer["offset"])

        headers = dict(record.headers)
        assert headers["ce_specversion"] == b"1.0"
        assert headers["ce_id"] == answer["event_id"].encode()
        assert headers["ce_type"] == event["event"].encode()
        assert headers["ce_source"] == b"urn:hitl-gateway:ingress"
        assert headers["ce_time"] == event["timestamp"].encode()
        assert headers["content-type"] == b"application/json"


async def test_unknown_family_goes_to_fallback_topic(start_gateway, kafka_bootstrap, topic_prefix):
    gateway = await start_gateway()
    body = b'{"event":"billing.invoice_paid","timestamp":"2026-11-30T00:00:00Z","data":{"loop_id":"L9"}}'

    status, answer, _ = await gateway.post(body)

    assert status == 200
    assert answer["topic"] == f"{topic_prefix}other"
    records = await read_topic(kafka_bootstrap, f"{topic_prefix}other")
    assert [record.key for record in records] == [b"L9"]


async def test_concurrent_duplicates_give_one_record(start_gateway, kafka_bootstrap, topic_prefix):
    gateway = await start_gateway()
    body = (SAMPLES / "request.completed.json").read_bytes()

    answers = await asyncio.gather(*(gateway.post(body) for _ in range(50)))

    statuses = [status for status, _, _ in answers]
    assert statuses == [200] * 50
    kinds = sorted(answer["status"] for _, answer, _ in answers)
    assert kinds.count("accepted") == 1
    assert kinds.count("duplicate") == 49
    assert len({(answer["partition"], answer["offset"]) for _, answer, _ in answers}) == 1
    records = await read_topic(kafka_bootstrap, f"{topic_prefix}request")
    assert len(records) == 1


async def test_invalid_signature_gives_401_and_no_record(start_gateway, kafka_bootstrap, topic_prefix):
    gateway = await start_gateway()
    body = (SAMPLES / "request.created.json").read_bytes()

    status, answer, _ = await gateway.post(body, secret="not-the-secret")

    assert status == 401
    assert answer["error"] == "invalid_signature"
    assert await read_topic(kafka_bootstrap, f"{topic_prefix}request") == []
    _, metrics = await gateway.get("/metrics")
    assert "hitl_gateway_signature_failures_total 1.0" in metrics


@pytest.mark.parametrize(
    ("body", "message"),
    [(b"{not json", "not valid JSON"), (b"[]", "not an object"), (b'{"data":{}}', "no type")],
)
async def test_bad_body_gives_400(start_gateway, body, message):
    gateway = await start_gateway()
    status, answer, _ = await gateway.post(body)
    assert status == 400
    assert message in answer["message"]


async def test_large_body_gives_413(start_gateway):
    gateway = await start_gateway(http={"max_body_bytes": 1024})
    body = b'{"event":"request.created","pad":"' + b"x" * 2000 + b'"}'

    status, answer, _ = await gateway.post(body)

    assert status == 413
    assert answer["error"] == "body_too_large"


async def test_other_methods_give_405(start_gateway):
    gateway = await start_gateway()
    async with gateway.session.get(gateway.url) as response:
        assert response.status == 405
        assert "POST" in response.headers["Allow"]


async def test_health_and_readiness(start_gateway):
    gateway = await start_gateway()
    assert (await gateway.get("/healthz"))[0] == 200
    assert (await gateway.get("/readyz"))[0] == 200


async def test_broker_outage_gives_503_then_retry_accepted(start_gateway, kafka_broker, kafka_bootstrap, topic_prefix):
    gateway = await start_gateway(kafka={"produce_timeout_s": 3.0, "retry_after_s": 2}, dedup={"reservation_ttl_s": 10})
    body = (SAMPLES / "request.cancelled.json").read_bytes()
    # The producer must have fetched metadata before the outage, as in production.
    warm_up = (SAMPLES / "request.created.json").read_bytes()
    assert (await gateway.post(warm_up))[0] == 200

    kafka_broker.kill()
    try:
        status, answer, headers = await gateway.post(body)
        assert status == 503
        assert headers["Retry-After"] == "2"
        assert answer["error"] == "broker_unavailable"
        ready_status, _ = await gateway.get("/readyz")
        assert ready_status == 503
    finally:
        kafka_broker.start()

    status, answer = None, None
    for _ in range(20):
        status, answer, _ = await gateway.post(body)
        if status == 200:
            break
        await asyncio.sleep(1)
    assert status == 200, answer
    assert answer["status"] == "accepted"
    stored = {record.value for record in await read_topic(kafka_bootstrap, f"{topic_prefix}request", timeout_s=30)}
    assert body in stored
    # Acknowledged before the broker was killed, so it survived the crash.
    assert warm_up in stored


async def test_expect_continue_gets_413_before_upload(start_gateway):
    gateway = await start_gateway(http={"max_body_bytes": 1024})
    url = gateway.server.make_url(gateway.settings.http.path)
    reader, writer = await asyncio.open_connection(url.host, url.port)
    try:
        writer.write(
            f"POST {url.path} HTTP/1.1\r\nHost: {url.host}\r\nContent-Type: application/json\r\n"
            "Content-Length: 5000\r\nExpect: 100-continue\r\n\r\n".encode()
        )
        await writer.drain()
        # No body sent: the response must come from the headers alone.
        status_line = await asyncio.wait_for(reader.readline(), timeout=5)
    finally:
        writer.close()
        await writer.wait_closed()

    assert status_line.startswith(b"HTTP/1.1 413")


async def test_expect_continue_within_limit_is_accepted(start_gateway):
    gateway = await start_gateway()
    body = (SAMPLES / "loop.created.json").read_bytes()

    status, answer, _ = await gateway.post(body, headers={"Expect": "100-continue"})

    assert status == 200
    assert answer["status"] == "accepted"
