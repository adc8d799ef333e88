"""Sink discovery through the entry-point group, built-in and from another package."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from gateway.errors import ConfigError
from gateway.routing.config import load_routing_config
from gateway.sinks.base import SinkContext
from gateway.sinks.http import HttpSink
from gateway.sinks.kafka import KafkaSink
from gateway.sinks.log import LogSink
from gateway.sinks.postgres import PostgresSink
from gateway.sinks.registry import ENTRY_POINT_GROUP, available_sink_types, create_sink, load_sink_class

PLUGIN_DIR = Path(__file__).resolve().parent.parent / "sink_plugin"


@pytest.fixture
def plugin_installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make tests/sink_plugin importable and discoverable as an installed distribution.

    importlib.metadata finds distributions through ``*.dist-info`` directories on
    sys.path. The one generated here from the package's pyproject.toml has the entry
    points ``pip install`` would write, and nothing is installed into the venv.
    """
    project = tomllib.loads((PLUGIN_DIR / "pyproject.toml").read_text())["project"]
    dist_info = tmp_path / f"{project['name'].replace('-', '_')}-{project['version']}.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n"
    )
    lines = [f"[{group}]\n" + "".join(f"{name} = {target}\n" for name, target in entries.items())
             for group, entries in project["entry-points"].items()]
    (dist_info / "entry_points.txt").write_text("\n".join(lines))

    monkeypatch.syspath_prepend(str(PLUGIN_DIR))
    monkeypatch.syspath_prepend(str(tmp_path))


@pytest.mark.parametrize(
    ("name", "sink_class"), [("http", HttpSink), ("kafka", KafkaSink), ("postgres", PostgresSink), ("log", LogSink)]
)
def test_builtin_sink_is_registered(name: str, sink_class: type) -> None:
    assert load_sink_class(name) is sink_class


def test_unknown_type_lists_the_available_names() -> None:
    with pytest.raises(ConfigError, match="available: http, kafka, log, postgres"):
        load_sink_class("carrier-pigeon")


def test_plugin_is_unknown_before_it_is_installed() -> None:
    assert "memory-test" not in available_sink_types()


def test_plugin_sink_class_is_loaded(plugin_installed) -> None:
    sink_class = load_sink_class("memory-test")

    assert sink_class.__module__ == "hitl_gateway_test_sink"
    assert sink_class.__name__ == "MemoryTestSink"


def test_plugin_is_listed(plugin_installed) -> None:
    assert "memory-test" in available_sink_types()


def test_route_with_plugin_sink_validates(plugin_installed, tmp_path: Path) -> None:
    path = tmp_path / "routes.yaml"
    path.write_text("routes:\n  - name: memory\n    sink: {type: memory-test, capacity: 5}\n    batch: {size: 2}\n")

    config = load_routing_config(path, environ={})

    assert config.routes[0].sink.settings.capacity == 5


def test_plugin_settings_are_validated_with_lines(plugin_installed, tmp_path: Path) -> None:
    path = tmp_path / "routes.yaml"
    path.write_text("routes:\n  - name: memory\n    sink:\n      type: memory-test\n      capacity: 0\n")

    with pytest.raises(ConfigError, match=rf"^{path}:5: routes\[0\]\.sink\.capacity: expected greater than 0"):
        load_routing_config(path, environ={})


async def test_create_sink_builds_the_plugin(plugin_installed, tmp_path: Path, make_event) -> None:
    path = tmp_path / "routes.yaml"
    path.write_text("routes:\n  - name: memory\n    sink: {type: memory-test}\n")
    route = load_routing_config(path, environ={}).routes[0]
    sink = create_sink(route.sink, SinkContext(route=route.name, kafka_bootstrap_servers="127.0.0.1:9"))

    await sink.deliver(make_event("evt-5"))

    assert [event.event_id for event in sink.events] == ["evt-5"]


def test_non_sink_entry_point_rejected(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dist_info = tmp_path / "broken_sink-0.1.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-sink\nVersion: 0.1\n")
    (dist_info / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\nbroken = json:dumps\n")
    monkeypatch.syspath_prepend(str(tmp_path))

    with pytest.raises(ConfigError, match="'json:dumps' is not a sink class"):
        load_sink_class("broken")


def test_unimportable_entry_point_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dist_info = tmp_path / "missing_sink-0.1.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: missing-sink\nVersion: 0.1\n")
    (dist_info / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\nmissing = no_such_module_here:Sink\n")
    monkeypatch.syspath_prepend(str(tmp_path))

    with pytest.raises(ConfigError, match="cannot import 'no_such_module_here:Sink'"):
        load_sink_class("missing")
