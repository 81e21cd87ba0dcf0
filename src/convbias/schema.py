"""The config's schema (``config.schema.yaml``, beside this module): the one home of every default.

Code that takes a config entry (a dataset, an experiment, a figure) gets its missing keys from
:func:`with_defaults` or :func:`default`, never from a default of its own.
"""

from __future__ import annotations

import copy
import functools
from pathlib import Path

SCHEMA_PATH = Path(__file__).with_name("config.schema.yaml")


@functools.cache
def schema() -> dict:
    import yaml

    return yaml.safe_load(SCHEMA_PATH.read_text())


def fill(node: dict, value: dict) -> dict:
    """Fill ``value`` in place with the defaults of schema ``node``, at every level."""
    for key, sub in node.get("properties", {}).items():
        if key not in value and "default" in sub:
            value[key] = copy.deepcopy(sub["default"])
        if isinstance(value.get(key), dict) and "properties" in sub:
            fill(sub, value[key])
    return value


def with_defaults(kind: str, entry: dict) -> dict:
    """A copy of one config entry of ``kind`` (dataset, experiment, pretrained, figure) with the
    schema's defaults filled in, at every level."""
    return fill(schema()["$defs"][kind], copy.deepcopy(entry))


def default(kind: str, key: str):
    """The schema's default of ``key`` (dotted, e.g. ``optimizer.lr``) in an entry of ``kind``."""
    node = schema()["$defs"][kind]
    for part in key.split("."):
        node = node["properties"][part]
    return copy.deepcopy(node["default"])


def schema_errors(config: dict) -> list[str]:
    """Every violation of the config schema, one line each, naming the key by its dotted path."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(schema())
    lines = []
    for error in sorted(validator.iter_errors(config), key=lambda e: [str(p) for p in e.absolute_path]):
        where = ".".join(str(p) for p in error.absolute_path) or "the top level"
        if error.validator == "additionalProperties":
            known = sorted(error.schema.get("properties", {}))
            unknown = sorted(set(error.instance) - set(known))
            message = f"unknown key {', '.join(map(repr, unknown))}" + (f" (known: {', '.join(known)})" if known else "")
        else:
            message = error.message
        lines.append(f"{where}: {message}")
    return lines
