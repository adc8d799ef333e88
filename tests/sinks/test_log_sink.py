"""The log sink writes one line per event naming it, never its body."""

from __future__ import annotations

import structlog

from gateway.sinks.base import SinkContext
from gateway.sinks.log import LogSettings, LogSink

CONTEXT = SinkContext(route="system-log", kafka_bootstrap_servers="127.0.0.1:9")


async def test_one_line_per_event(make_event) -> None:
    sink = LogSink(LogSettings(), CONTEXT)

    with structlog.testing.capture_logs() as lines:
        async with sink:
            await sink.deliver_batch([make_event("evt-1"), make_event("evt-2")])

    assert [line["event_id"] for line in lines] == ["evt-1", "evt-2"]


async def test_line_names_the_event_and_its_position(make_event) -> None:
    sink = LogSink(LogSettings(), CONTEXT)

    with structlog.testing.capture_logs() as lines:
        await sink.deliver(make_event("evt-1", topic="hitl.request", partition=2, offset=9))

    assert {key: lines[0][key] for key in ("event_type", "loop_id", "route", "topic", "partition", "offset")} == {
        "event_type": "request.completed",
        "loop_id": "loop-1",
        "route": "test-route",
        "topic": "hitl.request",
        "partition": 2,
        "offset": 9,
    }


async def test_body_is_not_logged(make_event) -> None:
    event = make_event(body={"event": "request.completed", "data": {"request": {"note": "private remark"}}})
    sink = LogSink(LogSettings(), CONTEXT)

    with structlog.testing.capture_logs() as lines:
        await sink.deliver(event)

    assert "private remark" not in repr(lines)


async def test_configured_level(make_event) -> None:
    sink = LogSink(LogSettings(level="warning"), CONTEXT)

    with structlog.testing.capture_logs() as lines:
        await sink.deliver(make_event())

    assert lines[0]["log_level"] == "warning"
