"""Match: event-type wildcards, loop ids and each condition kind."""

from __future__ import annotations

import pytest

from gateway.routing.match import Match

GLOBAL_EVENT = {
    "event": "request.completed",
    "timestamp": "2025-03-01T12:00:00Z",
    "data": {
        "request": {
            "id": "req-1",
            "loop_id": "loop-1",
            "priority": "high",
            "status": "completed",
            "type": "markdown",
            "response_data": {"decision": "approve"},
            "score": 1,
            "reviewed": True,
            "note": None,
            "tags": ["urgent", "legal"],
        }
    },
}

# (case id, match settings, event type, loop id, expected)
CASES = [
    ("star matches any type", {}, "loop.created", None, True),
    ("exact type", {"event_types": ["request.completed"]}, "request.completed", None, True),
    ("exact type differs", {"event_types": ["request.completed"]}, "request.created", None, False),
    ("family wildcard", {"event_types": ["request.*"]}, "request.timed_out", None, True),
    ("family wildcard other family", {"event_types": ["request.*"]}, "loop.created", None, False),
    ("suffix wildcard", {"event_types": ["*.completed"]}, "loop.completed", None, True),
    ("any of several patterns", {"event_types": ["loop.*", "*.completed"]}, "request.completed", None, True),
    ("question mark is one character", {"event_types": ["user.?"]}, "user.ab", None, False),
    ("wildcard does not ignore case", {"event_types": ["Request.*"]}, "request.completed", None, False),
    ("loop id listed", {"loop_ids": ["loop-1", "loop-2"]}, "request.completed", "loop-2", True),
    ("loop id not listed", {"loop_ids": ["loop-1"]}, "request.completed", "loop-3", False),
    ("loop ids set, event without loop id", {"loop_ids": ["loop-1"]}, "system.maintenance", None, False),
    ("equals string", {"conditions": [{"path": "data.request.priority", "equals": "high"}]}, "x", None, True),
    ("equals string differs", {"conditions": [{"path": "data.request.priority", "equals": "low"}]}, "x", None, False),
    ("equals number", {"conditions": [{"path": "data.request.score", "equals": 1}]}, "x", None, True),
    ("equals true is not 1", {"conditions": [{"path": "data.request.score", "equals": True}]}, "x", None, False),
    ("equals boolean", {"conditions": [{"path": "data.request.reviewed", "equals": True}]}, "x", None, True),
    ("equals null on null value", {"conditions": [{"path": "data.request.note", "equals": None}]}, "x", None, True),
    ("equals null on missing path", {"conditions": [{"path": "data.request.absent", "equals": None}]}, "x", None, False),
    ("equals mapping", {"conditions": [{"path": "data.request.response_data", "equals": {"decision": "approve"}}]}, "x", None, True),
    ("in list", {"conditions": [{"path": "data.request.status", "in": ["completed", "timed_out"]}]}, "x", None, True),
    ("not in list", {"conditions": [{"path": "data.request.status", "in": ["pending"]}]}, "x", None, False),
    ("exists true", {"conditions": [{"path": "data.request.response_data", "exists": True}]}, "x", None, True),
    ("exists true on null", {"conditions": [{"path": "data.request.note", "exists": True}]}, "x", None, False),
    ("exists false on missing", {"conditions": [{"path": "data.request.absent", "exists": False}]}, "x", None, True),
    ("exists false on present", {"conditions": [{"path": "data.request.id", "exists": False}]}, "x", None, False),
    ("prefix", {"conditions": [{"path": "data.request.type", "prefix": "mark"}]}, "x", None, True),
    ("prefix differs", {"conditions": [{"path": "data.request.type", "prefix": "text"}]}, "x", None, False),
    ("prefix on a number", {"conditions": [{"path": "data.request.score", "prefix": "1"}]}, "x", None, False),
    ("list index in path", {"conditions": [{"path": "data.request.tags.1", "equals": "legal"}]}, "x", None, True),
    ("list index out of range", {"conditions": [{"path": "data.request.tags.5", "exists": True}]}, "x", None, False),
    ("path through a string", {"conditions": [{"path": "data.request.id.x", "exists": True}]}, "x", None, False),
    (
        "all conditions hold",
        {"conditions": [{"path": "data.request.priority", "equals": "high"}, {"path": "data.request.type", "prefix": "mark"}]},
        "x",
        None,
        True,
    ),
    (
        "one condition fails",
        {"conditions": [{"path": "data.request.priority", "equals": "high"}, {"path": "data.request.type", "prefix": "text"}]},
        "x",
        None,
        False,
    ),
    (
        "type matches, condition fails",
        {"event_types": ["request.*"], "conditions": [{"path": "data.request.priority", "equals": "low"}]},
        "request.completed",
        "loop-1",
        False,
    ),
]


@pytest.mark.parametrize(("settings", "event_type", "loop_id", "expected"), [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_match(settings: dict, event_type: str, loop_id: str | None, expected: bool) -> None:
    match = Match.model_validate(settings)

    assert match.matches(event_type, loop_id, GLOBAL_EVENT) is expected


def test_flat_callback_body() -> None:
    match = Match.model_validate({"conditions": [{"path": "request_id", "prefix": "req-"}]})

    assert match.matches("request.completed", "loop-1", {"event": "request.completed", "request_id": "req-9", "loop_id": "loop-1"})


@pytest.mark.parametrize("path", ["", "data..id", ".data", "data."])
def test_malformed_path_is_rejected(path: str) -> None:
    with pytest.raises(ValueError, match="a dotted path"):
        Match.model_validate({"conditions": [{"path": path, "exists": True}]})


def test_condition_without_operator_is_rejected() -> None:
    with pytest.raises(ValueError, match="found none"):
        Match.model_validate({"conditions": [{"path": "data.request.id"}]})


def test_empty_event_type_pattern_is_rejected() -> None:
    with pytest.raises(ValueError, match="non-empty event type patterns"):
        Match.model_validate({"event_types": [""]})
