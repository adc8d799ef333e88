"""The http sink against a local aiohttp receiver: results, headers, signature."""

from __future__ import annotations

import hashlib
import hmac
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

import pytest

from gateway.routing.config import SecretRef
from gateway.sinks.base import DeliveryFailed, SinkContext
from gateway.sinks.http import HttpSettings, HttpSink, parse_retry_after, shown_url

CONTEXT = SinkContext(route="test-route", kafka_bootstrap_servers="127.0.0.1:9")
SECRET = "outgoing-signing-secret"


def sink_for(url: str, **settings) -> HttpSink:
    return HttpSink(HttpSettings(url=url, **settings), CONTEXT)


async def deliver(sink: HttpSink, event) -> DeliveryFailed | None:
    """Deliver one event; return the DeliveryFailed it raised, or None."""
    async with sink:
        try:
            await sink.deliver(event)
        except DeliveryFailed as failure:
            return failure
    return None


async def test_2xx_is_delivered(receiver, make_event) -> None:
    receiver.status = 204

    assert await deliver(sink_for(receiver.url), make_event()) is None


async def test_body_is_the_event_value(receiver, make_event) -> None:
    event = make_event()

    await deliver(sink_for(receiver.url), event)

    assert receiver.requests[0].body == event.value


async def test_event_headers(receiver, make_event) -> None:
    await deliver(sink_for(receiver.url), make_event("evt-7", event_type="request.timed_out"))

    headers = receiver.requests[0].headers
    assert headers["X-Event-Id"] == "evt-7"
    assert headers["X-Event-Type"] == "request.timed_out"


async def test_cloudevents_headers_in_http_spelling(receiver, make_event) -> None:
    await deliver(sink_for(receiver.url), make_event("evt-7"))

    headers = receiver.requests[0].headers
    assert headers["ce-specversion"] == "1.0"
    assert headers["ce-id"] == "evt-7"
    assert headers["ce-type"] == "request.completed"
    assert headers["ce-time"] == "2025-03-01T12:00:00Z"


async def test_content_type_is_json(receiver, make_event) -> None:
    await deliver(sink_for(receiver.url), make_event())

    assert receiver.requests[0].headers["Content-Type"] == "application/json"


async def test_configured_headers_are_sent(receiver, make_event) -> None:
    await deliver(sink_for(receiver.url, headers={"X-Team": "reviews"}), make_event())

    assert receiver.requests[0].headers["X-Team"] == "reviews"


async def test_query_string_is_sent(receiver, make_event) -> None:
    await deliver(sink_for(receiver.url + "?token=abc"), make_event())

    assert receiver.requests[0].path_qs == "/hooks?token=abc"


async def test_500_is_retriable(receiver, make_event) -> None:
    receiver.status = 500

    failure = await deliver(sink_for(receiver.url), make_event())

    assert failure.retriable is True


async def test_429_is_retriable(receiver, make_event) -> None:
    receiver.status = 429

    failure = await deliver(sink_for(receiver.url), make_event())

    assert failure.retriable is True


async def test_429_carries_retry_after_seconds(receiver, make_event) -> None:
    receiver.status, receiver.headers = 429, {"Retry-After": "7"}

    failure = await deliver(sink_for(receiver.url), make_event())

    assert failure.retry_after_s == 7.0


async def test_503_carries_retry_after_http_date(receiver, make_event) -> None:
    later = datetime.now(timezone.utc) + timedelta(seconds=120)
    receiver.status, receiver.headers = 503, {"Retry-After": format_datetime(later, usegmt=True)}

    failure = await deliver(sink_for(receiver.url), make_event())

    assert 100 <= failure.retry_after_s <= 120


async def test_400_is_not_retriable(receiver, make_event) -> None:
    receiver.status = 400

    failure = await deliver(sink_for(receiver.url), make_event())

    assert failure.retriable is False


async def test_redirect_is_not_followed(receiver, make_event) -> None:
    receiver.status, receiver.headers = 307, {"Location": receiver.url}

    failure = await deliver(sink_for(receiver.url), make_event())

    assert failure.retriable is False
    assert len(receiver.requests) == 1


async def test_timeout_is_retriable(receiver, make_event) -> None:
    receiver.delay_s = 2.0

    failure = await deliver(sink_for(receiver.url, timeout_s=0.2), make_event())

    assert failure.retriable is True


async def test_connection_refused_is_retriable(make_event) -> None:
    # Port 9 (discard) on the loopback interface has no listener in the test environment.
    failure = await deliver(sink_for("http://127.0.0.1:9/hooks"), make_event())

    assert failure.retriable is True


async def test_failure_message_hides_the_query_string(receiver, make_event) -> None:
    receiver.status = 500

    failure = await deliver(sink_for(receiver.url + "?token=abc"), make_event())

    assert "token=abc" not in str(failure)


async def test_signature_verifies_with_the_shared_secret(receiver, make_event, monkeypatch) -> None:
    monkeypatch.setenv("TEST_HTTP_SINK_SECRET", SECRET)
    sink = sink_for(receiver.url, secret=SecretRef(env="TEST_HTTP_SINK_SECRET"))

    await deliver(sink, make_event())

    received = receiver.requests[0]
    expected = "sha256=" + hmac.new(SECRET.encode(), received.body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(received.headers["X-Gateway-Signature"], expected)


async def test_signature_header_is_configurable(receiver, make_event, monkeypatch) -> None:
    monkeypatch.setenv("TEST_HTTP_SINK_SECRET", SECRET)
    sink = sink_for(receiver.url, secret=SecretRef(env="TEST_HTTP_SINK_SECRET"), signature_header="X-Sig")

    await deliver(sink, make_event())

    assert receiver.requests[0].headers["X-Sig"].startswith("sha256=")


async def test_unsigned_without_secret(receiver, make_event) -> None:
    await deliver(sink_for(receiver.url), make_event())

    assert "X-Gateway-Signature" not in receiver.requests[0].headers


async def test_start_is_idempotent_and_close_safe_twice(receiver, make_event) -> None:
    sink = sink_for(receiver.url)
    await sink.start()
    await sink.start()
    await sink.deliver(make_event())
    await sink.close()
    await sink.close()

    assert len(receiver.requests) == 1


async def test_secret_headers_are_resolved_and_sent(receiver, make_event, monkeypatch) -> None:
    monkeypatch.setenv("TEST_HTTP_SINK_TOKEN", "Bearer token-123")
    sink = sink_for(receiver.url, secret_headers={"Authorization": SecretRef(env="TEST_HTTP_SINK_TOKEN")})

    await deliver(sink, make_event())

    assert receiver.requests[0].headers["Authorization"] == "Bearer token-123"


def test_credential_in_plain_headers_is_rejected() -> None:
    with pytest.raises(ValueError, match="move 'Authorization' to secret_headers"):
        HttpSettings(url="http://127.0.0.1:9000/hooks", headers={"Authorization": "Bearer abc"})


def test_reserved_header_is_rejected() -> None:
    with pytest.raises(ValueError, match="'X-Event-Id' is one of those"):
        HttpSettings(url="http://127.0.0.1:9000/hooks", headers={"X-Event-Id": "x"})


def test_relative_url_is_rejected() -> None:
    with pytest.raises(ValueError, match="an absolute http:// or https:// URL"):
        HttpSettings(url="/hooks")


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, None), ("", None), ("12", 12.0), ("soon", None), ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0)],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value) == expected


def test_shown_url_drops_credentials_and_query() -> None:
    assert shown_url("https://user:pw@crm.example:8443/hooks?token=abc#part") == "https://crm.example:8443/hooks"
