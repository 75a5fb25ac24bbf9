"""An Envoy config read as composed YAML nodes that know their file lines.

``envoy_documents`` finds every Envoy config in a file: a bootstrap as a whole
document or embedded in a ConfigMap's ``data`` (its lines mapped back to the
ConfigMap's file where the string style allows), or an admin ``/config_dump``
(JSON, so its nodes carry the dump file's lines too). ``At`` is a node and the line
a finding about it is reported at.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import yaml
from yaml.constructor import SafeConstructor

__all__ = [
    "TYPE_PREFIX",
    "At",
    "EnvoyCheckError",
    "compose_all",
    "enum_of",
    "envoy_documents",
    "is_config_dump",
    "json_name",
    "shown",
    "type_of",
    "value_of",
]

TYPE_PREFIX = "type.googleapis.com/"


class EnvoyCheckError(Exception):
    """The file cannot be read, is not YAML/JSON, or holds no Envoy config to check."""


@dataclass(frozen=True)
class At:
    """A composed YAML node and the file line it is reported at (1-based).

    ``line`` is the line of the key holding the node (or of the sequence item);
    ``offset`` shifts every line of a document embedded in another file;
    ``pinned`` reports every line as ``line`` (an embedded string whose own
    lines cannot be mapped to the file's).
    """

    node: yaml.Node
    line: int
    offset: int = 0
    pinned: bool = False

    def line_of(self, node: yaml.Node) -> int:
        return self.line if self.pinned else node.start_mark.line + 1 + self.offset

    def get(self, key: str) -> At | None:
        """The value of the field ``key``, however Envoy accepts it spelled: the
        proto field name (snake_case) or its proto-JSON name (lowerCamelCase),
        e.g. ``failure_mode_allow`` or ``failureModeAllow``. Of several, the
        last one wins, as YAML loaders read duplicates."""
        found = None
        if isinstance(self.node, yaml.MappingNode):
            spellings = {key, json_name(key)}
            for key_node, value_node in self.node.value:
                if isinstance(key_node, yaml.ScalarNode) and key_node.value in spellings:
                    found = At(value_node, self.line_of(key_node), self.offset, self.pinned)
        return found

    def path(self, *keys: str) -> At | None:
        node: At | None = self
        for key in keys:
            node = node.get(key) if node is not None else None
        return node

    def items(self) -> list[At]:
        if not isinstance(self.node, yaml.SequenceNode):
            return []
        return [At(item, self.line_of(item), self.offset, self.pinned) for item in self.node.value]

    def names(self) -> list[str]:
        """A mapping's keys, in order."""
        if not isinstance(self.node, yaml.MappingNode):
            return []
        return [str(key.value) for key, _ in self.node.value if isinstance(key, yaml.ScalarNode)]

    def value(self) -> Any:
        """A scalar (or a small sequence/mapping of scalars) as Python reads it;
        None for what a safe loader cannot read (a custom tag), as if absent."""
        try:
            return SafeConstructor().construct_object(self.node, deep=True)
        except (yaml.YAMLError, TypeError):
            return None

    def text(self) -> str:
        value = self.value() if isinstance(self.node, yaml.ScalarNode) else None
        return value if isinstance(value, str) else ""


def json_name(field: str) -> str:
    """A proto field's JSON name, as protoc derives it: each ``_`` dropped and the
    letter after it upper-cased (``failure_mode_allow`` -> ``failureModeAllow``)."""
    head, *rest = field.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def value_of(node: At | None) -> Any:
    return None if node is None else node.value()


def shown(node: At) -> str:
    """A scalar as it would be written in the config."""
    value = node.value()
    return json.dumps(value) if isinstance(value, bool) or value is None else str(value)


def compose_all(text: str, source: str) -> list[yaml.Node]:
    if "\t" in text:
        # JSON allows tabs between tokens, YAML does not; in valid JSON a raw tab
        # can be nothing else, so spaces change neither meaning nor line numbers.
        try:
            json.loads(text)
        except ValueError:
            pass
        else:
            text = text.replace("\t", " ")
    try:
        return [node for node in yaml.compose_all(text, Loader=yaml.SafeLoader) if node]
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        raise EnvoyCheckError(f"{where}: not valid YAML or JSON: {exc.problem}") from None
    except yaml.YAMLError as exc:
        raise EnvoyCheckError(f"{source}: not valid YAML or JSON: {exc}") from None


def envoy_documents(text: str, source: str) -> list[At]:
    """Every Envoy config in ``text``: whole documents, or in a ConfigMap's data."""
    found: list[At] = []
    for node in compose_all(text, source):
        root = At(node, node.start_mark.line + 1)
        if root.get("static_resources") is not None or is_config_dump(root):
            found.append(root)
        elif value_of(root.get("kind")) == "ConfigMap":
            found.extend(_embedded(root.get("data"), source))
    if not found:
        raise EnvoyCheckError(
            f"{source}: no Envoy configuration found (a document with static_resources, "
            "a ConfigMap holding one under data, or an Envoy admin /config_dump)"
        )
    return found


def is_config_dump(root: At) -> bool:
    """Whether ``root`` is what Envoy's admin ``/config_dump`` answers: a list of
    ``envoy.admin.v3.*`` entries under ``configs``."""
    configs = root.get("configs")
    return configs is not None and any(
        type_of(entry).startswith("envoy.admin.v3.") for entry in configs.items()
    )


def _embedded(data: At | None, source: str) -> list[At]:
    found: list[At] = []
    if data is None or not isinstance(data.node, yaml.MappingNode):
        return found
    for key in data.names():
        value = data.get(key)
        if value is None or not isinstance(value.node, yaml.ScalarNode):
            continue
        try:
            nodes = compose_all(value.text(), f"{source}:{value.line}: data.{key}")
        except EnvoyCheckError:
            continue  # not YAML: some other file in the same ConfigMap
        # A block scalar's text starts on the line after its "|"; any other style's
        # lines are not the file's, so its findings are reported at the data key.
        literal = value.node.style == "|"
        offset = value.node.start_mark.line + 1
        for node in nodes:
            embedded = At(node, value.line, offset=offset, pinned=not literal)
            if embedded.get("static_resources") is not None:
                found.append(embedded)
    return found


def type_of(typed_config: At | None) -> str:
    name = value_of(typed_config.get("@type")) if typed_config is not None else None
    return name.removeprefix(TYPE_PREFIX) if isinstance(name, str) else ""


def enum_of(node: At | None, names: dict[int, str]) -> str | None:
    value = value_of(node)
    if isinstance(value, int) and not isinstance(value, bool):
        return names.get(value, str(value))
    return value if isinstance(value, str) else None
