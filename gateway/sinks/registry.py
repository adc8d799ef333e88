"""Find sink classes by name in the entry-point group ``hitl_gateway.sinks``.

The built-in sinks are registered in this project's pyproject.toml. Another installed
package adds a sink by declaring an entry point in the same group, for example::

    [project.entry-points."hitl_gateway.sinks"]
    crm = "acme_sinks.crm:CrmSink"
"""

from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points
from typing import TYPE_CHECKING

from gateway.errors import ConfigError
from gateway.sinks.base import Sink, SinkContext, SinkSettings

if TYPE_CHECKING:
    from gateway.routing.config import SinkSpec

ENTRY_POINT_GROUP = "hitl_gateway.sinks"


def available_sink_types() -> list[str]:
    """Return the names of every installed sink, sorted."""
    return sorted({entry_point.name for entry_point in entry_points(group=ENTRY_POINT_GROUP)})


def load_sink_class(type_name: str) -> type[Sink]:
    """Import the sink class registered as ``type_name``.

    Raises ConfigError when no installed package registers that name (the message lists
    the names that exist), when its module fails to import, or when the object does not
    look like a sink.
    """
    entry_point = _find(type_name)
    try:
        sink_class = entry_point.load()
    except Exception as error:
        raise ConfigError(
            f"sink type {type_name!r}: cannot import {entry_point.value!r} ({type(error).__name__}: {error}); "
            "check that the package providing it is installed completely"
        ) from error

    _check_is_sink(type_name, entry_point, sink_class)
    return sink_class


def create_sink(spec: SinkSpec, context: SinkContext) -> Sink:
    """Build (but do not start) the sink a route's ``sink`` section describes."""
    return spec.sink_class(spec.settings, context)


def _find(type_name: str) -> EntryPoint:
    # An editable install can list the same distribution twice; the first one wins, as
    # it does for imports.
    for entry_point in entry_points(group=ENTRY_POINT_GROUP):
        if entry_point.name == type_name:
            return entry_point
    available = ", ".join(available_sink_types()) or "none installed"
    raise ConfigError(
        f"unknown sink type {type_name!r}; available: {available}. A sink from another package appears "
        f"here once that package is installed and registers it in the entry-point group {ENTRY_POINT_GROUP!r}"
    )


def _check_is_sink(type_name: str, entry_point: EntryPoint, sink_class: object) -> None:
    settings_model = getattr(sink_class, "Settings", None)
    if not isinstance(sink_class, type) or not (
        isinstance(settings_model, type) and issubclass(settings_model, SinkSettings)
    ):
        raise ConfigError(
            f"sink type {type_name!r}: {entry_point.value!r} is not a sink class; a sink class has a "
            "Settings attribute that subclasses gateway.sinks.base.SinkSettings"
        )
    if not isinstance(getattr(sink_class, "supports_batches", None), bool):
        raise ConfigError(
            f"sink type {type_name!r}: {entry_point.value!r} has no boolean supports_batches class attribute"
        )
