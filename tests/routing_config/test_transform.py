"""Transform: each step, their order, and that the input is never changed."""

from __future__ import annotations

import copy

import pytest

from gateway.routing.transform import Transform

EVENT = {
    "event": "request.completed",
    "timestamp": "2025-03-01T12:00:00Z",
    "data": {
        "request": {
            "id": "req-1",
            "loop_id": "loop-1",
            "response_config": {"options": ["a", "b"]},
            "response_data": {"decision": "approve"},
        }
    },
}

# (case id, transform settings, expected result)
CASES = [
    ("no steps copies the event", {}, EVENT),
    (
        "keep",
        {"keep": ["event", "data.request.id", "data.absent"]},
        {"event": "request.completed", "data": {"request": {"id": "req-1"}}},
    ),
    (
        "drop",
        {"drop": ["timestamp", "data.request.response_config", "data.absent.deeper"]},
        {
            "event": "request.completed",
            "data": {"request": {"id": "req-1", "loop_id": "loop-1", "response_data": {"decision": "approve"}}},
        },
    ),
    (
        "rename to a dotted target",
        {"keep": ["event", "data.request.id"], "rename": {"data.request.id": "meta.request_id"}},
        {"event": "request.completed", "meta": {"request_id": "req-1"}},
    ),
    (
        "rename of a missing path does nothing",
        {"keep": ["event"], "rename": {"data.request.id": "request_id"}},
        {"event": "request.completed"},
    ),
    (
        "drop removes the objects it empties",
        {"drop": ["data.request.id", "data.request.loop_id", "data.request.response_config", "data.request.response_data"]},
        {"event": "request.completed", "timestamp": "2025-03-01T12:00:00Z"},
    ),
    (
        "set constants",
        {"keep": ["event"], "set": {"source": "hitl", "meta.version": 2, "event": "overridden"}},
        {"event": "overridden", "source": "hitl", "meta": {"version": 2}},
    ),
    (
        "set replaces a non-object on the way",
        {"keep": ["event"], "set": {"event.kind": "x"}},
        {"event": {"kind": "x"}},
    ),
    (
        "wrap",
        {"keep": ["event"], "wrap": {"key": "payload", "with": {"kind": "hitl-event"}}},
        {"kind": "hitl-event", "payload": {"event": "request.completed"}},
    ),
    (
        "keep runs before drop",
        {"keep": ["data.request"], "drop": ["data.request.response_config", "data.request.response_data"]},
        {"data": {"request": {"id": "req-1", "loop_id": "loop-1"}}},
    ),
    (
        "drop runs before rename",
        {"keep": ["data.request.id"], "drop": ["data.request.id"], "rename": {"data.request.id": "request_id"}},
        {},
    ),
    (
        "rename runs before set",
        {"keep": ["event"], "rename": {"event": "type"}, "set": {"type": "fixed"}},
        {"type": "fixed"},
    ),
    (
        "set runs before wrap",
        {"keep": ["event"], "set": {"source": "hitl"}, "wrap": {"key": "payload"}},
        {"payload": {"event": "request.completed", "source": "hitl"}},
    ),
]


@pytest.mark.parametrize(("settings", "expected"), [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_transform(settings: dict, expected: dict) -> None:
    transform = Transform.model_validate(settings)

    assert transform.apply(EVENT) == expected


@pytest.mark.parametrize(("settings", "_expected"), [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_input_is_not_changed(settings: dict, _expected: dict) -> None:
    event = copy.deepcopy(EVENT)
    transform = Transform.model_validate(settings)

    result = transform.apply(event)
    result.setdefault("data", {}).setdefault("request", {})["id"] = "changed afterwards"

    assert event == EVENT


def test_set_constants_are_not_shared_between_results() -> None:
    transform = Transform.model_validate({"set": {"meta": {"tags": []}}})

    first = transform.apply(EVENT)
    first["meta"]["tags"].append("changed")

    assert transform.apply(EVENT)["meta"] == {"tags": []}


def test_wrap_key_may_not_be_among_its_fields() -> None:
    with pytest.raises(ValueError, match="without the key 'payload'"):
        Transform.model_validate({"wrap": {"key": "payload", "with": {"payload": 1}}})


def test_unknown_step_is_rejected() -> None:
    with pytest.raises(ValueError, match="Extra inputs are not permitted"):
        Transform.model_validate({"flatten": True})


def test_malformed_rename_target_is_rejected() -> None:
    with pytest.raises(ValueError, match="a dotted path"):
        Transform.model_validate({"rename": {"data.request.id": "request..id"}})
