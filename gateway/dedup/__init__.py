"""Deduplication of webhook deliveries by event id.

A store hands out one reservation per event id. The holder produces the event, then
either completes the reservation with the broker's receipt (later deliveries of the id
are duplicates and get the same receipt) or releases it (the sender's retry is accepted
as new). A delivery that arrives while the id is reserved waits for that outcome.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Receipt:
    """The topic, partition and offset of an event's record."""

    topic: str
    partition: int
    offset: int


class DedupStore(Protocol):
    async def claim(self, event_id: str) -> Receipt | None:
        """Reserve the id and return None, or return the receipt of its earlier delivery.

        Waits while another caller has the reservation. Raises DedupUnavailable when
        that wait times out or the store cannot be reached.
        """

    async def complete(self, event_id: str, receipt: Receipt) -> None:
        """Mark the reserved id delivered; duplicates within the window get ``receipt``."""

    async def release(self, event_id: str) -> None:
        """Drop the reservation so that the next delivery of the id is accepted."""

    async def close(self) -> None:
        """Free connections; safe to call twice."""
