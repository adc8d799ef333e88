"""Turn a Kafka record of a family topic into the event the routes work on."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from gateway.envelope import EnvelopeReader, parse_event


@dataclass(frozen=True, slots=True)
class Inbound:
    """A parsed record with the envelope facts its CloudEvents headers (or body) carry."""

    event_id: str
    event_type: str
    loop_id: str | None
    occurred_at: str | None
    event: dict[str, Any]
    value: bytes
    key: bytes | None
    headers: tuple[tuple[str, bytes], ...]
    topic: str
    partition: int
    offset: int
    timestamp_ms: int

    @property
    def ordering_key(self) -> bytes | tuple[str, int]:
        """Events with the same ordering key are delivered one after another, in offset order.

        The key is the loop id; a record without one is ordered with its whole partition.
        """
        if self.key is not None:
            return self.key
        return (self.topic, self.partition)


def header_text(headers: Sequence[tuple[str, bytes]], name: str) -> str | None:
    for header_name, value in headers:
        if header_name == name and value:
            return value.decode("utf-8", errors="replace")
    return None


def read_record(record: Any, reader: EnvelopeReader) -> Inbound:
    """Parse a ConsumerRecord. Raises InvalidEvent when its value is not a JSON object with a type.

    The ingress writes ``ce_id``, ``ce_type`` and ``ce_time`` headers; records produced
    by other tools without them are read through the EnvelopeReader instead.
    """
    value: bytes = record.value or b""
    headers = tuple((name, bytes(header_value or b"")) for name, header_value in (record.headers or ()))
    key: bytes | None = record.key

    event_type = header_text(headers, "ce_type")
    event_id = header_text(headers, "ce_id")
    if event_type and event_id:
        event = parse_event(value)
        occurred_at = header_text(headers, "ce_time")
        loop_id = key.decode("utf-8", errors="replace") if key else None
    else:
        envelope, event = reader.read(value, {})
        event_type, event_id, occurred_at = envelope.event_type, envelope.event_id, envelope.occurred_at
        loop_id = key.decode("utf-8", errors="replace") if key else envelope.loop_id

    return Inbound(
        event_id=event_id,
        event_type=event_type,
        loop_id=loop_id,
        occurred_at=occurred_at,
        event=event,
        value=value,
        key=key,
        headers=headers,
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        timestamp_ms=record.timestamp,
    )
