"""The configuration reference cannot drift from the schema: every key is documented."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import strictyaml as sy

from cdcsync import config, registry

DOC = (Path(__file__).resolve().parents[2] / "docs" / "configuration.md").read_text()


def keys(schema: Any) -> set[str]:
    """Every key name in a strictyaml Map (and nested Maps), without the Optional wrapper."""
    found: set[str] = set()
    validators = schema.items() if isinstance(schema, dict) else schema._validator_dict.items()
    for key, validator in validators:
        name = key.key if isinstance(key, sy.Optional) else key
        found.add(str(name))
        if isinstance(validator, sy.Map):
            found |= keys(validator)
    return found


def documented(name: str) -> bool:
    """A key counts as documented when a table row or a YAML example line names it."""
    return bool(
        re.search(rf"^\| `{re.escape(name)}`", DOC, re.M)
        or re.search(rf"^\s*{re.escape(name)}:", DOC, re.M)
        or re.search(rf"`{re.escape(name)}`", DOC)
    )


def test_every_component_key_is_in_the_configuration_reference() -> None:
    """Each key a source or destination accepts appears in docs/configuration.md."""
    missing = {
        f"{spec.name}.{key}"
        for spec in [*registry.sources().values(), *registry.destinations().values()]
        for key in keys(spec.schema)
        if not documented(key)
    }
    assert not missing


def test_every_top_level_key_is_in_the_configuration_reference() -> None:
    """Each key of the api, batch and shorthand sections appears in docs/configuration.md."""
    sections = keys(config._API) | keys(config._BATCH) | keys(config._SCHEMA)
    missing = {key for key in sections if not documented(key)}
    assert not missing
