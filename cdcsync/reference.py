"""The configuration reference, generated from the schema: docs/reference/configuration.md.

Every key, its type, default, description and example come from the validators in
``config.py`` and the component specs (attached with :func:`cdcsync.config.described`),
so the page cannot drift from what ``cdcsync check`` accepts; a test compares the
committed file with :func:`render`. Regenerate with ``just docs``, i.e.
``python -m cdcsync.reference --write``. ``--installed`` adds the installed plugins.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import strictyaml as sy

from cdcsync import config, registry

__all__ = ["DEFAULT_PATH", "Row", "main", "render", "rows"]

DEFAULT_PATH = Path("docs/reference/configuration.md")


@dataclass(frozen=True)
class Row:
    """One documented key: its dotted path and what a reader needs to write it."""

    path: str
    kind: str
    default: str
    doc: str
    example: str


def _yaml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _kind(validator: Any) -> str:
    """The type of a value in words, from the validator (or its ``described(kind=...)``)."""
    override = getattr(validator, "kind", None)
    if override:
        return str(override)
    if isinstance(validator, config.EnvInt):
        low, high = validator._min, validator._max
        if low is not None and high is not None:
            return f"integer, {low:,} to {high:,}"
        return "integer"
    if isinstance(validator, config.EnvBool):
        return "boolean"
    choices = getattr(validator, "choices", None)
    if choices:
        return "one of " + ", ".join(f"`{c}`" for c in choices)
    if isinstance(validator, sy.Map):
        return "mapping (keys below)"
    if isinstance(validator, sy.MapPattern):
        key, value = validator._key_validator, validator._value_validator
        return f"mapping of {_kind(key)} to {_kind(value)}"
    if isinstance(validator, sy.Seq):
        return f"list of {_kind(validator._validator)}s"
    if isinstance(validator, config.EnvStr | sy.Str):
        return "string"
    if isinstance(validator, sy.Int):
        return "integer"
    if isinstance(validator, sy.Bool):
        return "boolean"
    if isinstance(validator, sy.Float):
        return "number"
    return "any"


_NO_DEFAULT = object()


def _keys(schema: Any) -> Iterable[tuple[str, bool, Any, Any]]:
    """(name, required, default or _NO_DEFAULT, validator) for a ``Map`` or a spec's dict."""
    if isinstance(schema, Mapping):
        for key, validator in schema.items():
            if isinstance(key, sy.Optional):
                default = _NO_DEFAULT if key.default is None else key.default
                yield str(key.key), False, default, validator
            else:
                yield str(key), True, _NO_DEFAULT, validator
        return
    for name, validator in schema._validator_dict.items():
        required = name in schema._required_keys
        yield str(name), required, schema._defaults.get(name, _NO_DEFAULT), validator


def rows(schema: Any, prefix: str = "", recurse: bool = True) -> list[Row]:
    """A row per key of a strictyaml ``Map`` (or a spec's key dict), nested maps included."""
    out: list[Row] = []
    for name, required, default, validator in _keys(schema):
        fallback = None if default is _NO_DEFAULT else _yaml(default)
        if required:
            shown_default = "**required**"
        else:
            shown_default = "not set" if fallback is None else f"`{fallback}`"
        path = prefix + name
        example = getattr(validator, "example", None) or fallback
        doc = getattr(validator, "doc", None) or "(no description)"
        shown = f"`{name}: {example}`" if example is not None else ""
        out.append(Row(path, _kind(validator), shown_default, doc, shown))
        if recurse and isinstance(validator, sy.Map):
            out += rows(validator, path + ".")
    return out


def _table(items: list[Row]) -> list[str]:
    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    lines = ["| key | type | default | description | example |", "|---|---|---|---|---|"]
    for r in items:
        lines.append(
            f"| `{r.path}` | {cell(r.kind)} | {cell(r.default)} | {cell(r.doc)} | "
            f"{cell(r.example)} |"
        )
    return lines


def _owned(kind: str, name: str) -> list[Row]:
    """The keys the engine owns in every component block."""
    out = []
    if kind == "destination":
        out.append(
            Row(
                "name",
                "string",
                "**required**",
                "Unique within the flow: letters, digits, `_`, `.`, `-`. It names the "
                "destination's checkpoint, dead letters, writer lock and statistics, so "
                "renaming it starts it from the beginning of the stream.",
                "`name: primary`",
            )
        )
    out.append(
        Row("type", "string", "**required**", f"`{name}` for this {kind}.", f"`type: {name}`")
    )
    return out


def _component(spec: registry.ComponentSpec, where: str) -> list[str]:
    lines = [f"### `type: {spec.name}`", "", spec.summary, "", f"Keys of a `{where}` block:", ""]
    lines += _table(_owned(spec.kind, spec.name) + rows(spec.schema))
    if spec.example:
        lines += ["", "Example:", "", "```yaml", textwrap.dedent(spec.example).rstrip(), "```"]
    return [*lines, ""]


def render(installed: bool = False) -> str:
    """The whole reference page; built-in components only unless ``installed``."""
    if installed:
        sources, dests = registry.sources(), registry.destinations()
    else:
        sources, dests = registry.builtins("source"), registry.builtins("destination")
    top = config._SCHEMA
    lines = [
        "# Configuration reference",
        "",
        "<!-- Generated by `python -m cdcsync.reference --write` (`just docs`) from the schema",
        "     in cdcsync/config.py and the component specs. Do not edit: change the",
        "     descriptions in the code. A test fails when this file is out of date. -->",
        "",
        "Every key cdcsync accepts, generated from the schema that `cdcsync check` validates",
        "against. [Configuration](../configuration.md) explains the file's shape, environment",
        "variables and the single-flow shorthand with examples; `cdcsync generate-config`",
        "prints a commented starting point.",
        "",
        "- Every value may use `${VAR}` or `${VAR:-default}` (`$$` is a literal `$`); an",
        "  unset variable without a default is an error.",
        "- Booleans are `true`/`false` (also `yes`/`no`, `on`/`off`, `1`/`0`).",
        "- Unknown keys and wrong types are errors reported as `file:line: message`.",
        "- *not set* means the key is optional and has no default; the description says",
        "  what happens without it.",
        "",
        "## Top level",
        "",
        *_table(rows(top, recurse=False)),
        "",
        "## `api`",
        "",
        *_table(rows(top._validator_dict["api"], "api.")),
        "",
        "## `flows[]`",
        "",
        "Each item of `flows`:",
        "",
        *_table(rows(config._FLOW, "flows[].")),
        "",
        "## Sources",
        "",
        "The `source` block of a flow; `type` picks one of these.",
        "",
    ]
    for spec in sources.values():
        lines += _component(spec, "flows[].source")
    lines += [
        "## Destinations",
        "",
        "Each item of a flow's `destinations`; `type` picks one of these.",
        "",
    ]
    for spec in dests.values():
        lines += _component(spec, "flows[].destinations[]")
    lines += [
        "## The single-flow shorthand",
        "",
        "Instead of `flows`, a file may have `nats` (the `nats` source keys), `postgres` (the",
        "`postgres` destination keys) and `pipeline`: one flow named `default` with one",
        "destination named `postgres`. `flows` and the shorthand cannot be mixed.",
        "",
        *_table(rows(config._PIPELINE, "pipeline.")),
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m cdcsync.reference", description="Print the configuration reference."
    )
    parser.add_argument(
        "--write",
        nargs="?",
        const=str(DEFAULT_PATH),
        metavar="PATH",
        help=f"write it to PATH (default {DEFAULT_PATH}) instead of standard output",
    )
    parser.add_argument(
        "--check", action="store_true", help=f"exit 1 when {DEFAULT_PATH} is out of date"
    )
    parser.add_argument(
        "--installed", action="store_true", help="include installed plugins' components"
    )
    args = parser.parse_args(argv)
    text = render(installed=args.installed)
    if args.check:
        current = DEFAULT_PATH.read_text(encoding="utf-8") if DEFAULT_PATH.exists() else ""
        if current != text:
            print(f"{DEFAULT_PATH} is out of date: run `just docs`", file=sys.stderr)
            return 1
        return 0
    if args.write:
        path = Path(args.write)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        print(f"wrote {path}", file=sys.stderr)
        return 0
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
