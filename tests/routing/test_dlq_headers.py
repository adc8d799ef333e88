"""Headers of parked records, and reading them back for a redrive."""

from __future__ import annotations

from datetime import UTC, datetime

from gateway.routing.dlq import MAX_ERROR_BYTES, as_first_delivered, dead_letter_headers, parked_at_or_after

from .conftest import make_inbound

PARKED_AT = datetime(2025, 3, 1, 12, 30, tzinfo=UTC)


def test_headers_keep_originals_add_facts() -> None:
    inbound = make_inbound("loop1", 4, offset=17, partition=2)

    headers = dead_letter_headers(inbound, "crm", "HTTP 500", 5, PARKED_AT)

    assert headers[: len(inbound.headers)] == list(inbound.headers)
    assert dict(headers[len(inbound.headers) :]) == {
        "x-dlq-route": b"crm",
        "x-dlq-error": b"HTTP 500",
        "x-dlq-attempts": b"5",
        "x-dlq-topic": b"hitl.request",
        "x-dlq-partition": b"2",
        "x-dlq-offset": b"17",
        "x-dlq-time": b"2025-03-01T12:30:00.000Z",
    }


def test_error_header_truncated() -> None:
    headers = dict(dead_letter_headers(make_inbound("loop1", 0), "crm", "x" * 5000, 1, PARKED_AT))
    assert len(headers["x-dlq-error"]) == MAX_ERROR_BYTES


def test_parking_again_replaces_facts() -> None:
    inbound = make_inbound("loop1", 0)
    first = dead_letter_headers(inbound, "crm", "HTTP 500", 5, PARKED_AT)
    parked = type(inbound)(**{**_fields(inbound), "headers": tuple(first), "topic": "hitl.request.dlq", "offset": 99})

    redriven = as_first_delivered(parked)

    assert redriven is not None
    assert (redriven.topic, redriven.partition, redriven.offset) == ("hitl.request", 0, 0)
    assert redriven.headers == inbound.headers
    again = dead_letter_headers(redriven, "crm", "HTTP 503", 2, PARKED_AT)
    assert [name for name, _ in again].count("x-dlq-route") == 1
    assert dict(again)["x-dlq-error"] == b"HTTP 503"


def test_redrive_needs_origin_headers() -> None:
    assert as_first_delivered(make_inbound("loop1", 0)) is None


def test_since_compares_parking_time() -> None:
    headers = dead_letter_headers(make_inbound("loop1", 0), "crm", "HTTP 500", 5, PARKED_AT)
    assert parked_at_or_after(headers, 0, datetime(2025, 3, 1, 12, 0, tzinfo=UTC))
    assert not parked_at_or_after(headers, 0, datetime(2025, 3, 1, 13, 0, tzinfo=UTC))
    assert parked_at_or_after(headers, 0, None)


def _fields(inbound) -> dict:
    return {name: getattr(inbound, name) for name in inbound.__slots__}
