"""Sample HITL.sh webhook bodies in the documented shapes, with fresh ids and times.

``hitl-gateway send-test`` and the benchmark use these. Each call returns a new body, so
two test sends are two events rather than a duplicate.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from typing import Any

import orjson

EVENT_TYPES = (
    "request.created",
    "request.claimed",
    "request.completed",
    "request.cancelled",
    "request.timeout",
    "loop.created",
    "loop.updated",
    "loop.archived",
    "loop.member_joined",
    "user.invited",
    "user.joined",
    "system.error",
    "system.performance",
    "api_key.limit_exceeded",
)


def new_object_id() -> str:
    return os.urandom(12).hex()


def sample_event(event_type: str = "request.completed", *, loop_id: str | None = None) -> dict[str, Any]:
    """Return a global-webhook event of ``event_type`` as a dict."""
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    loop_id = loop_id or new_object_id()
    family, _, action = event_type.partition(".")

    if family == "request":
        request = {
            "id": new_object_id(),
            "loop_id": loop_id,
            "status": {"created": "pending", "timeout": "timed_out"}.get(action, action),
            "type": "markdown",
            "priority": "high",
            "request_text": "Please review this flagged comment",
            "response_type": "single_select",
            "response_config": {"options": ["Approve", "Reject"]},
            "created_at": now,
        }
        if action == "completed":
            request["response_data"] = {"selected_value": "Approve"}
        data: dict[str, Any] = {"request": request}
    elif family == "loop":
        data = {"loop": {"id": loop_id, "name": "Content Moderation Review", "member_count": 3, "created_at": now}}
    elif family == "user":
        data = {"user": {"email": "reviewer@example.com", "role": "reviewer"}, "loop_id": loop_id}
    elif family == "system":
        data = {"code": "notification_delivery_failed", "message": "Push provider returned 503", "severity": "warning"}
    else:
        data = {"detail": f"sample {event_type} event"}
    return {"event": event_type, "timestamp": now, "data": data}


def sample_body(event_type: str = "request.completed", *, loop_id: str | None = None) -> bytes:
    """Return the event as the bytes HITL.sh would send, ending in a newline."""
    return orjson.dumps(sample_event(event_type, loop_id=loop_id)) + b"\n"
