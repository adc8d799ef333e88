"""The benchmark's load: pre-signed HITL.sh webhook bodies in one file.

Every request is a body from gateway.samples (all event families, spread over a fixed
set of loops) signed with the benchmark's secret. A share of the requests repeats the
body of a recent one, so that the gateway receives duplicate deliveries as it does when
HITL.sh retries. wrk (bench/corpus.lua) and the open-loop generator (bench/loadgen.py)
both read the file and send its requests in order.

File format, one entry per request: ``<hex signature> <body length>\\n<body bytes>``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from gateway.samples import EVENT_TYPES, new_object_id, sample_body
from gateway.signatures import sign_hitl

# The event families' shares of traffic: mostly review requests, then loop changes.
FAMILY_WEIGHTS = {"request": 70, "loop": 15, "user": 8, "system": 5, "api_key": 2}
RECENT_WINDOW = 1000
SHORT_TEXT = b"Please review this flagged comment"
SHORT_REQUEST_TEXT = b'"request_text":"' + SHORT_TEXT + b'"'


@dataclass(frozen=True)
class CorpusStats:
    requests: int
    duplicates: int
    loops: int
    mean_body_bytes: int
    min_body_bytes: int
    max_body_bytes: int


def write_corpus(
    path: Path, *, requests: int, secret: str, loops: int = 1000, duplicate_share: float = 0.05, seed: int = 7
) -> CorpusStats:
    """Write ``requests`` signed requests to ``path``; ``duplicate_share`` of them repeat a recent body."""
    rng = random.Random(seed)
    loop_ids = [new_object_id() for _ in range(loops)]
    event_types = [event_type for event_type in EVENT_TYPES if event_type.split(".")[0] in FAMILY_WEIGHTS]
    weights = [FAMILY_WEIGHTS[event_type.split(".")[0]] for event_type in event_types]

    recent: list[tuple[str, bytes]] = []
    sizes = []
    duplicates = 0
    with path.open("wb") as corpus:
        for _ in range(requests):
            if recent and rng.random() < duplicate_share:
                signature, body = rng.choice(recent)
                duplicates += 1
            else:
                body = _padded(sample_body(rng.choices(event_types, weights)[0], loop_id=rng.choice(loop_ids)), rng)
                signature = sign_hitl(body, secret)
                recent.append((signature, body))
                if len(recent) > RECENT_WINDOW:
                    recent.pop(0)
            corpus.write(b"%s %d\n%s" % (signature.encode(), len(body), body))
            sizes.append(len(body))

    return CorpusStats(
        requests=requests,
        duplicates=duplicates,
        loops=loops,
        mean_body_bytes=round(sum(sizes) / len(sizes)),
        min_body_bytes=min(sizes),
        max_body_bytes=max(sizes),
    )


def _padded(body: bytes, rng: random.Random) -> bytes:
    """Bring a sample body to the 1-2 KB of real events with a longer text field."""
    missing = rng.randint(1024, 2048) - len(body)
    if missing <= 0:
        return body
    filler = (b"Please review this flagged comment. " * 64)[:missing]
    if SHORT_REQUEST_TEXT in body:
        return body.replace(SHORT_REQUEST_TEXT, b'"request_text":"' + SHORT_TEXT + filler + b'"', 1)
    # Events without a request carry their detail in a free-text field instead.
    return body.replace(b'"timestamp"', b'"note":"' + filler + b'","timestamp"', 1)


def read_corpus(path: Path) -> list[tuple[str, bytes]]:
    """Return the (signature, body) pairs of a corpus file, in order."""
    data = path.read_bytes()
    entries = []
    position = 0
    while position < len(data):
        line_end = data.index(b"\n", position)
        signature, length = data[position:line_end].split(b" ")
        body_start = line_end + 1
        body_end = body_start + int(length)
        entries.append((signature.decode(), data[body_start:body_end]))
        position = body_end
    return entries
