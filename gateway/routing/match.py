"""Route selection: event-type wildcards, loop ids and conditions on the body.

Paths into the event are dotted (``data.request.priority``); a segment made of digits
indexes a list (``data.items.0.id``).
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator
from pydantic_core import PydanticCustomError

MISSING = object()
OPERATORS = ("equals", "in", "exists", "prefix")


def expected_found(expected: str, found: str) -> PydanticCustomError:
    """Return a validation error for a check across several keys, shown as "expected ..., found ...".

    ``gateway.routing.config.describe`` formats it without repeating the whole mapping
    as the found value.
    """
    return PydanticCustomError(
        "expected_found", "expected {expected}, found {found}", {"expected": expected, "found": found}
    )


def split_path(path: str) -> tuple[str, ...]:
    """Split a dotted path, rejecting empty segments such as in ``data..id``."""
    parts = tuple(path.split("."))
    if not path or any(not part for part in parts):
        raise ValueError(f"a dotted path such as 'data.request.id', not {path!r}")
    return parts


def find(event: Any, parts: tuple[str, ...]) -> Any:
    """Return the value at the split path, or ``MISSING`` when a segment is absent."""
    node = event
    for part in parts:
        if isinstance(node, Mapping):
            node = node.get(part, MISSING)
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return MISSING
        if node is MISSING:
            return MISSING
    return node


class Condition(BaseModel):
    """One test on the value at ``path``; exactly one operator is given.

    ``exists: true`` holds when the path is present with a non-null value; ``exists: false``
    holds when it is absent or null.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    path: str
    equals: Any = None
    one_of: list[Any] | None = Field(None, alias="in")
    exists: bool | None = None
    prefix: str | None = None

    _parts: tuple[str, ...] = PrivateAttr()

    @field_validator("path")
    @classmethod
    def _path_is_dotted(cls, value: str) -> str:
        split_path(value)
        return value

    @model_validator(mode="after")
    def _one_operator(self) -> "Condition":
        # equals: null is a real test, so presence is read from the keys given, not from
        # the values.
        operators_given = [name for name in OPERATORS if _field_name(name) in self.model_fields_set]
        if len(operators_given) != 1:
            found = ", ".join(operators_given) if operators_given else "none"
            raise expected_found("exactly one of equals, in, exists or prefix next to path", found)
        return self

    def model_post_init(self, context: Any) -> None:
        self._parts = split_path(self.path)

    @property
    def operator(self) -> str:
        return next(name for name in OPERATORS if _field_name(name) in self.model_fields_set)

    def holds(self, event: Mapping[str, Any]) -> bool:
        value = find(event, self._parts)
        operator = self.operator
        if operator == "exists":
            present = value is not MISSING and value is not None
            return present is self.exists
        if value is MISSING:
            return False
        if operator == "equals":
            return _same(value, self.equals)
        if operator == "in":
            return any(_same(value, candidate) for candidate in self.one_of or ())
        return isinstance(value, str) and value.startswith(self.prefix or "")


class Match(BaseModel):
    """A route's selection: every part that is set must hold."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    event_types: list[str] = Field(default_factory=lambda: ["*"], min_length=1)
    loop_ids: list[str] | None = None
    conditions: list[Condition] = Field(default_factory=list)

    _event_type_pattern: re.Pattern[str] = PrivateAttr()
    _loop_ids: frozenset[str] | None = PrivateAttr()

    @field_validator("event_types")
    @classmethod
    def _patterns_not_empty(cls, value: list[str]) -> list[str]:
        if any(not pattern for pattern in value):
            raise ValueError("non-empty event type patterns such as 'request.*'")
        return value

    def model_post_init(self, context: Any) -> None:
        self._event_type_pattern = re.compile("|".join(fnmatch.translate(pattern) for pattern in self.event_types))
        self._loop_ids = frozenset(self.loop_ids) if self.loop_ids is not None else None

    def matches(self, event_type: str, loop_id: str | None, event: Mapping[str, Any]) -> bool:
        if not self._event_type_pattern.match(event_type):
            return False

        if self._loop_ids is not None and loop_id not in self._loop_ids:
            return False

        return all(condition.holds(event) for condition in self.conditions)


def _field_name(operator: str) -> str:
    return "one_of" if operator == "in" else operator


def _same(value: Any, expected: Any) -> bool:
    # JSON true must not equal 1, which Python's == would allow.
    if isinstance(value, bool) or isinstance(expected, bool):
        return type(value) is type(expected) and value == expected
    return value == expected
