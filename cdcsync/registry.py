"""Component specs: the single source of truth for a source's or destination's config.

A spec names a component, declares its strictyaml schema with defaults, turns the
validated mapping into a frozen options object and builds the runtime component.
Built-in components register through the same entry points a third party uses
(groups ``cdcsync.sources`` and ``cdcsync.destinations``).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any, Literal

__all__ = ["ComponentSpec", "builtins", "destinations", "sources"]

Kind = Literal["source", "destination"]


@dataclass(frozen=True)
class ComponentSpec:
    """What the engine needs to know about a pluggable component.

    ``schema`` maps strictyaml keys (``Optional(...)`` for defaults) to validators,
    without ``type`` (and ``name`` for destinations), which the engine owns.
    ``parse`` gets the validated plain dict and returns the component's options;
    it raises ``ValueError`` for a semantic problem, reported at the block's line.
    ``factory(flow_name, name, options)`` builds the runtime object.
    """

    name: str
    kind: Kind
    summary: str
    schema: dict[Any, Any]
    parse: Callable[[dict[str, Any]], Any]
    factory: Callable[..., Any]
    example: str = ""
    secrets: tuple[str, ...] = field(default=())


_BUILTIN = {
    "source": {"kafka": "cdcsync.sources.kafka:SPEC", "nats": "cdcsync.sources.nats:SPEC"},
    "destination": {
        "postgres": "cdcsync.sinks.postgres:SPEC",
        "mysql": "cdcsync.sinks.mysql:SPEC",
    },
}
_GROUPS = {"source": "cdcsync.sources", "destination": "cdcsync.destinations"}
_cache: dict[str, dict[str, ComponentSpec]] = {}


def _load_ref(ref: str) -> ComponentSpec:
    module, _, attr = ref.partition(":")
    spec: ComponentSpec = getattr(importlib.import_module(module), attr)
    return spec


def _load(kind: Kind) -> dict[str, ComponentSpec]:
    if kind not in _cache:
        specs: dict[str, ComponentSpec] = {}
        for ep in entry_points(group=_GROUPS[kind]):
            spec = ep.load()
            if not isinstance(spec, ComponentSpec) or spec.kind != kind:
                raise TypeError(f"entry point {ep.name!r} in {_GROUPS[kind]} is not a {kind} spec")
            specs[ep.name] = spec
        # Running from a source tree that was never installed: the built-ins still work.
        for name, ref in _BUILTIN[kind].items():
            specs.setdefault(name, _load_ref(ref))
        _cache[kind] = specs
    return _cache[kind]


def sources() -> dict[str, ComponentSpec]:
    """Every registered source spec by type name."""
    return _load("source")


def destinations() -> dict[str, ComponentSpec]:
    """Every registered destination spec by type name."""
    return _load("destination")


def builtins(kind: Kind) -> dict[str, ComponentSpec]:
    """The specs shipped with cdcsync, whatever else is installed (the generated reference)."""
    return {name: _load_ref(ref) for name, ref in _BUILTIN[kind].items()}
