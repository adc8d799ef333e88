"""Reshape an event for one route: keep, drop, rename, set, wrap, in that order.

Paths are dotted as in ``gateway.routing.match``. ``apply`` works on a copy, so the same
event can go through several routes' transforms.
"""

from __future__ import annotations

from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from gateway.routing.match import MISSING, expected_found, find, split_path


class Wrap(BaseModel):
    """Put the event under ``key`` in a new object that also contains the ``with`` fields."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    key: str = Field(min_length=1)
    fields: dict[str, Any] = Field(default_factory=dict, alias="with")

    @model_validator(mode="after")
    def _key_not_in_fields(self) -> "Wrap":
        if self.key in self.fields:
            raise expected_found(f"a 'with' mapping without the key {self.key!r}, which contains the event", "that key")
        return self


class Transform(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    keep: list[str] | None = None
    drop: list[str] = Field(default_factory=list)
    rename: dict[str, str] = Field(default_factory=dict)
    constants: dict[str, Any] = Field(default_factory=dict, alias="set")
    wrap: Wrap | None = None

    _keep: list[tuple[str, ...]] | None = PrivateAttr()
    _drop: list[tuple[str, ...]] = PrivateAttr()
    _rename: list[tuple[tuple[str, ...], tuple[str, ...]]] = PrivateAttr()
    _constants: list[tuple[tuple[str, ...], Any]] = PrivateAttr()

    @field_validator("keep", "drop")
    @classmethod
    def _paths_are_dotted(cls, value: list[str] | None) -> list[str] | None:
        for path in value or ():
            split_path(path)
        return value

    @field_validator("rename", "constants")
    @classmethod
    def _keys_are_dotted(cls, value: dict[str, Any]) -> dict[str, Any]:
        for path in value:
            split_path(path)
        return value

    @field_validator("rename")
    @classmethod
    def _targets_are_dotted(cls, value: dict[str, str]) -> dict[str, str]:
        for target in value.values():
            split_path(target)
        return value

    def model_post_init(self, context: Any) -> None:
        self._keep = [split_path(path) for path in self.keep] if self.keep is not None else None
        self._drop = [split_path(path) for path in self.drop]
        self._rename = [(split_path(source), split_path(target)) for source, target in self.rename.items()]
        self._constants = [(split_path(path), value) for path, value in self.constants.items()]

    def apply(self, event: dict[str, Any]) -> dict[str, Any]:
        """Return the transformed event as a new object; ``event`` is left unchanged."""
        if self._keep is not None:
            result: dict[str, Any] = {}
            for parts in self._keep:
                value = find(event, parts)
                if value is not MISSING:
                    _put(result, parts, _copy(value))
        else:
            result = _copy(event)

        for parts in self._drop:
            _remove(result, parts)

        for source, target in self._rename:
            value = _remove(result, source)
            if value is not MISSING:
                _put(result, target, value)

        for parts, value in self._constants:
            _put(result, parts, _copy(value))

        if self.wrap is not None:
            result = {**_copy(self.wrap.fields), self.wrap.key: result}
        return result


def _copy(value: Any) -> Any:
    # Events are JSON, and an orjson round trip is a faster deep copy than copy.deepcopy.
    if isinstance(value, (dict, list)):
        return orjson.loads(orjson.dumps(value))
    return value


def _put(target: dict[str, Any], parts: tuple[str, ...], value: Any) -> None:
    """Set the value at the path, creating objects on the way.

    An intermediate value that is not an object is replaced by one: a ``set`` or
    ``rename`` target must exist afterwards.
    """
    node = target
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[parts[-1]] = value


def _remove(target: dict[str, Any], parts: tuple[str, ...]) -> Any:
    """Delete the path and return its value, or ``MISSING`` when it was absent.

    Objects that the deletion leaves empty are deleted too, so that renaming
    ``data.request.id`` to ``request_id`` leaves no ``{"data": {"request": {}}}`` behind.
    """
    parents = [target]
    for part in parts[:-1]:
        child = parents[-1].get(part)
        if not isinstance(child, dict):
            return MISSING
        parents.append(child)

    value = parents[-1].pop(parts[-1], MISSING)
    if value is MISSING:
        return MISSING
    for depth in range(len(parts) - 1, 0, -1):
        if parents[depth]:
            break
        del parents[depth - 1][parts[depth - 1]]
    return value
