import hashlib
from pathlib import Path

import pytest

from gateway.envelope import EnvelopeReader
from gateway.errors import InvalidEvent

SAMPLES = Path(__file__).resolve().parent.parent / "fixtures" / "hitl-samples"

# file → (event type, loop id, occurred-at) as the default configuration reads them
EXPECTED = {
    "api_key.limit_exceeded.json": ("api_key.limit_exceeded", None, "2026-11-30T00:02:00Z"),
    "loop.archived.json": ("loop.archived", "6760a1b2c3d4e5f6000000cc", "2026-11-29T18:00:00Z"),
    "loop.created.json": ("loop.created", "6760a1b2c3d4e5f6000000cc", "2026-11-29T08:00:00Z"),
    "loop.member_joined.json": ("loop.member_joined", "6760a1b2c3d4e5f6000000cc", "2026-11-29T08:30:00Z"),
    "loop.updated.json": ("loop.updated", "6760a1b2c3d4e5f6000000cc", "2026-11-29T08:05:00Z"),
    "request.cancelled.json": ("request.cancelled", "6760a1b2c3d4e5f6000000aa", "2026-11-30T11:00:00Z"),
    "request.claimed.json": ("request.claimed", "6760a1b2c3d4e5f6000000aa", "2026-11-30T09:13:40Z"),
    "request.completed.callback.json": ("request.completed", "6760a1b2c3d4e5f6000000bb", "2026-11-30T10:00:33Z"),
    "request.completed.json": ("request.completed", "6760a1b2c3d4e5f6000000aa", "2026-11-30T09:16:05Z"),
    "request.created.json": ("request.created", "6760a1b2c3d4e5f6000000aa", "2026-11-30T09:12:04Z"),
    "request.timeout.json": ("request.timeout", "6760a1b2c3d4e5f6000000bb", "2026-11-30T12:12:04Z"),
    "system.error.json": ("system.error", None, "2026-11-30T00:01:00Z"),
    "system.performance.json": ("system.performance", None, "2026-11-30T00:00:00Z"),
    "user.invited.json": ("user.invited", "6760a1b2c3d4e5f6000000cc", "2026-11-28T14:00:00Z"),
    "user.joined.json": ("user.joined", None, "2026-11-28T15:20:00Z"),
}


def test_every_fixture_has_an_expectation():
    assert sorted(path.name for path in SAMPLES.glob("*.json")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_envelope_of_sample(name):
    body = (SAMPLES / name).read_bytes()
    event_type, loop_id, occurred_at = EXPECTED[name]

    envelope, event = EnvelopeReader().read(body, {})

    assert envelope.event_type == event_type
    assert envelope.loop_id == loop_id
    assert envelope.occurred_at == occurred_at
    assert envelope.event_id == "sha256:" + hashlib.sha256(body).hexdigest()
    assert envelope.family == event_type.split(".")[0]
    assert event["event"] == event_type


def test_event_id_from_header_first():
    body = (SAMPLES / "request.created.json").read_bytes()
    envelope, _ = EnvelopeReader().read(body, {"X-HITL-Event-Id": "evt_123"})
    assert envelope.event_id == "evt_123"


def test_event_id_from_body_path():
    envelope, _ = EnvelopeReader().read(b'{"event":"loop.created","id":"evt_9"}', {})
    assert envelope.event_id == "evt_9"


def test_configured_paths_replace_defaults():
    reader = EnvelopeReader(event_type_paths=["kind"], loop_id_paths=["meta.loop"], event_id_paths=["meta.id"])
    envelope, _ = reader.read(b'{"kind":"loop.updated","meta":{"loop":"L1","id":"E1"}}', {})
    assert (envelope.event_type, envelope.loop_id, envelope.event_id) == ("loop.updated", "L1", "E1")


def test_type_field_used_when_event_absent():
    envelope, _ = EnvelopeReader().read(b'{"type":"user.joined"}', {})
    assert envelope.event_type == "user.joined"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"not json", "not valid JSON"),
        (b"[1, 2]", "not an object"),
        (b'"text"', "not an object"),
        (b'{"data": {}}', "no type"),
        (b'{"event": ""}', "no type"),
        (b'{"event": 5.5}', "no type"),
    ],
)
def test_invalid_bodies_rejected(body, message):
    with pytest.raises(InvalidEvent, match=message):
        EnvelopeReader().read(body, {})
