"""Recognise events older than one already delivered for the same HITL request.

HITL.sh may send a request's events late or twice (a retried webhook), so a
``request.claimed`` can arrive after the ``request.completed`` that followed it. A route
with ``stale_events: skip`` leaves such events out; with ``mark`` it delivers them with
the header ``x-stale-event: true``.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from datetime import datetime
from typing import Any

STALE_HEADER = ("x-stale-event", b"true")
DEFAULT_MAX_REQUESTS = 100_000


def request_id_of(event: Mapping[str, Any]) -> str | None:
    """Return the request id at ``data.request.id``, else at the top-level ``request_id``."""
    data = event.get("data")
    if isinstance(data, Mapping):
        request = data.get("request")
        if isinstance(request, Mapping):
            found = request.get("id")
            if isinstance(found, str) and found:
                return found
    found = event.get("request_id")
    return found if isinstance(found, str) and found else None


class StaleTracker:
    """The newest delivered occurred-at per request id, for the most recent ``max_requests`` requests."""

    def __init__(self, max_requests: int = DEFAULT_MAX_REQUESTS) -> None:
        self.max_requests = max_requests
        self._newest: OrderedDict[str, datetime] = OrderedDict()

    def __len__(self) -> int:
        return len(self._newest)

    def newest(self, request_id: str) -> datetime | None:
        found = self._newest.get(request_id)
        if found is not None:
            self._newest.move_to_end(request_id)
        return found

    def record(self, request_id: str, occurred_at: datetime) -> None:
        known = self._newest.get(request_id)
        if known is None or occurred_at > known:
            self._newest[request_id] = occurred_at
        self._newest.move_to_end(request_id)
        while len(self._newest) > self.max_requests:
            self._newest.popitem(last=False)
