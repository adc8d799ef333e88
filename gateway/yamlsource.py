"""Load YAML configuration files while remembering where each value came from.

Configuration errors must name the file, the line and the key path. PyYAML's safe loader
drops positions once it builds Python objects, so this loader records the line of every
mapping key and sequence item. It also rejects two YAML pitfalls that silently change
meaning: duplicate keys (the last one would win) and tab indentation.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from gateway.errors import ConfigError

KeyPath = tuple[str | int, ...]

# YAML 1.1, which PyYAML follows, reads these unquoted words as booleans.
_YAML11_BOOLEAN_WORDS = re.compile(r"^(y|Y|yes|Yes|YES|n|N|no|No|NO|on|On|ON|off|Off|OFF)$")


@dataclass
class SourceMap:
    """Line numbers (1-based) of the values in one loaded YAML file, by key path."""

    path: str
    lines: dict[KeyPath, int] = field(default_factory=dict)
    boolean_words: set[KeyPath] = field(default_factory=set)

    def line_of(self, key_path: KeyPath) -> int | None:
        """Return the line of the key path, or of its nearest parent that has one."""
        for end in range(len(key_path), -1, -1):
            line = self.lines.get(tuple(key_path[:end]))
            if line is not None:
                return line
        return None

    def where(self, key_path: KeyPath) -> str:
        line = self.line_of(key_path)
        return f"{self.path}:{line}" if line else self.path


def format_key_path(key_path: KeyPath) -> str:
    text = ""
    for part in key_path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text or "(top level)"


class _LocatingLoader(yaml.SafeLoader):
    """A safe loader that records positions and rejects duplicate keys."""

    source_map: SourceMap


def _construct_mapping(loader: _LocatingLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    loader.flatten_mapping(node)
    mapping: dict[Any, Any] = {}
    seen_lines: dict[Any, int] = {}
    for key_node, _value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        line = key_node.start_mark.line + 1
        if key in seen_lines:
            raise ConfigError(
                f"{loader.source_map.path}:{line}: duplicate key {key!r} "
                f"(first defined on line {seen_lines[key]}); remove one of them"
            )
        seen_lines[key] = line
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        mapping[key] = loader.construct_object(value_node, deep=True)
    return mapping


_LocatingLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _record_positions(node: yaml.Node, key_path: KeyPath, source_map: SourceMap) -> None:
    source_map.lines.setdefault(key_path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else str(key_node)
            child = (*key_path, key)
            source_map.lines[child] = key_node.start_mark.line + 1
            _record_positions(value_node, child, source_map)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _record_positions(item, (*key_path, index), source_map)
    elif isinstance(node, yaml.ScalarNode):
        if node.style is None and _YAML11_BOOLEAN_WORDS.match(node.value):
            source_map.boolean_words.add(key_path)


def load_yaml(path: str | Path) -> tuple[Any, SourceMap]:
    """Read one YAML document and return it with the map of its source lines."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as error:
        raise ConfigError(f"{path}: file not found; pass the path of an existing YAML file") from error
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: cannot be read: {error}") from error
    return parse_yaml(text, str(path))


def parse_yaml(text: str, name: str) -> tuple[Any, SourceMap]:
    """Parse YAML text; ``name`` is the file name used in error messages."""
    source_map = SourceMap(name)
    _reject_tab_indentation(text, name)

    loader = _LocatingLoader(text)
    loader.source_map = source_map
    try:
        node = loader.get_single_node()
        if node is None:
            return {}, source_map
        _record_positions(node, (), source_map)
        return loader.construct_document(node), source_map
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        line = f":{mark.line + 1}" if mark else ""
        raise ConfigError(f"{name}{line}: invalid YAML: {error.problem or error}") from error
    except yaml.YAMLError as error:
        raise ConfigError(f"{name}: invalid YAML: {error}") from error
    finally:
        loader.dispose()


def _reject_tab_indentation(text: str, name: str) -> None:
    for number, line in enumerate(text.splitlines(), start=1):
        indent = line[: len(line) - len(line.lstrip(" \t"))]
        if "\t" in indent:
            raise ConfigError(f"{name}:{number}: tab used for indentation; YAML allows only spaces, replace the tab")


def validate(model: type[BaseModel], data: Any, source_map: SourceMap, *, context: KeyPath = ()) -> Any:
    """Build ``model`` from ``data`` and turn validation errors into one ConfigError.

    The message lists every problem with its file, line, key path, what was expected and
    what was found.
    """
    try:
        return model.model_validate(data if data is not None else {})
    except ValidationError as error:
        items = sorted(error.errors(), key=lambda item: source_map.line_of((*context, *item["loc"])) or 0)
        problems = [describe_problem(item, source_map, context) for item in items]
        raise ConfigError("\n".join(problems)) from None


def describe_problem(item: dict, source_map: SourceMap, context: KeyPath = ()) -> str:
    key_path = (*context, *(part for part in item["loc"] if not _is_union_tag(part)))
    where = source_map.where(key_path)
    shown_path = format_key_path(key_path)
    kind = item["type"]
    found = item.get("input")

    if kind == "extra_forbidden":
        return f"{where}: {shown_path}: unknown key; remove it or check its spelling"
    if kind == "missing":
        return f"{where}: {shown_path}: required key is missing"

    expected = _expected_from_message(item["msg"])
    hint = ""
    if isinstance(found, bool) and key_path in source_map.boolean_words:
        hint = " (YAML reads unquoted yes/no/on/off as booleans; put the value in quotes)"
    return f"{where}: {shown_path}: expected {expected}, found {_show(found)}{hint}"


def _is_union_tag(part: str | int) -> bool:
    # pydantic adds the member type's name to the location of errors inside unions,
    # such as "function-after[...]" or "int"; those are not keys of the file.
    return isinstance(part, str) and ("[" in part or part in {"int", "str", "float", "bool", "list", "dict"})


def _expected_from_message(message: str) -> str:
    for prefix in ("Input should be ", "Value error, ", "Assertion failed, "):
        if message.startswith(prefix):
            return message[len(prefix):]
    return message[0].lower() + message[1:] if message else "a valid value"


def _show(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "nothing (null)"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
