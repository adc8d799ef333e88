"""The facts the gateway needs from an event, read from its body and headers.

HITL.sh uses two body shapes: global webhooks wrap the event as ``{"event", "timestamp",
"data": {...}}``, per-request callbacks are flat with ``loop_id`` at the top level. Neither
carries an event id, so the id falls back to the SHA-256 of the raw body, which makes a
redelivery of the same bytes a duplicate.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from gateway.errors import InvalidEvent


@dataclass(frozen=True, slots=True)
class Envelope:
    event_id: str
    event_type: str
    loop_id: str | None
    occurred_at: str | None

    @property
    def family(self) -> str:
        """The first segment of the event type: ``request`` for ``request.completed``."""
        return self.event_type.split(".", 1)[0]


class EnvelopeReader:
    def __init__(
        self,
        *,
        event_type_paths: Sequence[str] = ("event", "type"),
        loop_id_paths: Sequence[str] = ("loop_id", "data.loop_id", "data.request.loop_id", "data.loop.id"),
        event_id_headers: Sequence[str] = ("X-HITL-Event-Id", "webhook-id"),
        event_id_paths: Sequence[str] = ("id", "event_id"),
        occurred_at_paths: Sequence[str] = ("timestamp", "created_at"),
    ) -> None:
        self._event_type_paths = [_split(path) for path in event_type_paths]
        self._loop_id_paths = [_split(path) for path in loop_id_paths]
        self._event_id_headers = list(event_id_headers)
        self._event_id_paths = [_split(path) for path in event_id_paths]
        self._occurred_at_paths = [_split(path) for path in occurred_at_paths]

    def read(self, body: bytes, headers: Mapping[str, str]) -> tuple[Envelope, dict[str, Any]]:
        """Parse the body and return its envelope with the parsed event.

        Raises InvalidEvent when the body is not a JSON object with an event type.
        """
        event = parse_event(body)

        event_type = _first_text(event, self._event_type_paths)
        if not event_type:
            names = " or ".join(repr(".".join(path)) for path in self._event_type_paths)
            raise InvalidEvent(f"the event has no type: expected a non-empty string at {names}")

        event_id = self._event_id(body, event, headers)
        loop_id = _first_text(event, self._loop_id_paths)
        occurred_at = _first_text(event, self._occurred_at_paths)
        return Envelope(event_id, event_type, loop_id, occurred_at), event

    def _event_id(self, body: bytes, event: dict[str, Any], headers: Mapping[str, str]) -> str:
        for header in self._event_id_headers:
            value = headers.get(header)
            if value and value.strip():
                return value.strip()
        from_body = _first_text(event, self._event_id_paths)
        if from_body:
            return from_body
        return "sha256:" + hashlib.sha256(body).hexdigest()


def parse_event(body: bytes) -> dict[str, Any]:
    try:
        event = orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise InvalidEvent(f"the body is not valid JSON: {error}; send the event as a JSON object") from None
    if not isinstance(event, dict):
        raise InvalidEvent(f"the body is JSON but not an object (found {type(event).__name__}); send one event as a JSON object")
    return event


def parse_iso_time(text: str | None) -> datetime | None:
    """Read an ISO 8601 time such as an event's occurred-at; no offset means UTC.

    Returns None for a missing or unreadable value, because senders' times are not
    trusted to be well formed.
    """
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def lookup(event: Mapping[str, Any], path: Sequence[str]) -> Any:
    """Return the value at a dotted path already split into keys, or None."""
    node: Any = event
    for key in path:
        if not isinstance(node, Mapping):
            return None
        node = node.get(key)
        if node is None:
            return None
    return node


def _first_text(event: Mapping[str, Any], paths: Sequence[Sequence[str]]) -> str | None:
    for path in paths:
        value = lookup(event, path)
        if isinstance(value, str) and value:
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
    return None


def _split(path: str) -> tuple[str, ...]:
    return tuple(path.split("."))
