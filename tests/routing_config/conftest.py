"""Fixtures for routing-config tests: routing YAML files written into a temporary directory."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest


@pytest.fixture
def write_routes(tmp_path: Path) -> Callable[[str], Path]:
    """Write dedented YAML text to ``routes.yaml`` and return its path.

    The text's first line is line 1 of the file, so tests can state line numbers.
    """

    def write(text: str, name: str = "routes.yaml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
        return path

    return write
