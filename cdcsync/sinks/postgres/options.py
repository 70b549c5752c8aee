"""The PostgreSQL destination's configuration: schema (with the docs of every key), parsing
and the frozen options the sink runs with."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import strictyaml as sy

from cdcsync.plugin import (
    CheckedStr,
    EnvBool,
    EnvEnum,
    EnvStr,
    described,
    redact_url,
    url_secrets,
    userinfo_problem,
)
from cdcsync.plugin.sql import RESERVED_PREFIX, Mode

__all__ = ["SCHEMA", "PostgresOptions", "parse_options"]


@dataclass(frozen=True)
class PostgresOptions:
    url: str
    schema: str = "public"
    conflict_resolution: Mode = Mode.UPSERT
    tables: dict[str, str] = field(default_factory=dict)
    truncate: bool = False
    connect_timeout_s: float = 10.0
    state_schema: str = "cdcsync"
    unmapped_tables: str = "apply"

    def redacted(self) -> dict[str, Any]:
        return {
            "url": redact_url(self.url),
            "schema": self.schema,
            "conflict_resolution": self.conflict_resolution.value,
            "tables": dict(self.tables),
            "truncate": self.truncate,
            "state_schema": self.state_schema,
            "unmapped_tables": self.unmapped_tables,
        }

    def secrets(self) -> list[str]:
        return url_secrets(self.url)


_SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")


def _url_problem(url: str) -> str | None:
    """What asyncpg or libpq would refuse in ``url`` (each message hides its secrets)."""
    if not url.startswith(("postgres://", "postgresql://")):
        scheme = url.split("://", 1)[0] if "://" in url else "no scheme"
        return f"a URL starting with postgresql:// (found {scheme[:20]!r})"
    ambiguous = userinfo_problem(url)
    if ambiguous is not None:
        return ambiguous
    shown = redact_url(url)
    rest = url.split("://", 1)[1]
    hosts = rest.rsplit("@", 1)[-1].split("/", 1)[0].split("?", 1)[0]
    for hostport in hosts.split(","):
        _, colon, port = hostport.rpartition(":")
        if colon and "]" not in port and port:
            if not port.isascii() or not port.isdigit():
                return f"{shown!r}: the port must be a number"
            if not 0 < int(port) <= 65535:
                return f"{shown!r}: port {port} (a port is 1 to 65535)"
    for param in url.partition("?")[2].split("&"):
        key, _, value = param.partition("=")
        if key == "sslmode" and value not in _SSLMODES:
            return f"{shown!r}: sslmode {value!r} (one of: {', '.join(_SSLMODES)})"
    return None


def _key_problem(name: str) -> str | None:
    if not name or "\x00" in name:
        return "an empty name" if not name else f"{name!r}: a NUL character"
    return None


def _name_problem(name: str) -> str | None:
    """A schema or table name PostgreSQL can hold: longer ones it would silently truncate."""
    if len(name.encode()) > 63:
        return f"{name!r}: PostgreSQL names are at most 63 bytes"
    return _key_problem(name)


def parse_options(data: dict[str, Any]) -> PostgresOptions:
    url = data["url"]
    schema, state_schema = data["schema"], data["state_schema"]
    for key, name in (("schema", schema), ("state_schema", state_schema)):
        if not name or "\x00" in name:
            raise ValueError(f"{key} must be a non-empty schema name")
    if schema == state_schema:
        raise ValueError(
            f"schema and state_schema are both {schema!r}: cdcsync's own tables must not share "
            f"a schema with the tables events write (set state_schema to another name)"
        )
    tables = dict(data.get("tables") or {})
    for source, target in tables.items():
        if target.lower().startswith(RESERVED_PREFIX):
            raise ValueError(
                f"tables: {source!r} maps to {target!r}; names starting with "
                f"{RESERVED_PREFIX!r} are reserved for cdcsync's own tables"
            )
    return PostgresOptions(
        url=url,
        schema=schema,
        conflict_resolution=Mode(data["conflict_resolution"]),
        tables=tables,
        truncate=data["truncate"],
        state_schema=state_schema,
        unmapped_tables=data["unmapped_tables"],
    )


SCHEMA = {
    "url": described(
        CheckedStr("a PostgreSQL URL", _url_problem),
        "libpq-style URL `postgresql://user:password@host:port/db?sslmode=...`; "
        "percent-encode `/ # ? @` in the password. Redacted wherever cdcsync prints it.",
        example='"postgresql://cdcsync:${PGPASSWORD}@db:5432/app?sslmode=require"',
    ),
    sy.Optional("schema", default="public"): described(
        CheckedStr("a schema name", _name_problem),
        "Schema of the target tables. It must exist. Events only ever write tables of this schema.",
        example="replica",
    ),
    sy.Optional("state_schema", default="cdcsync"): described(
        EnvStr(),
        "Schema where cdcsync keeps its own tables (`checkpoints`, `dead_letters`); created "
        "when missing, must differ from `schema`. No event can write it. Deployments that "
        "share a database keep apart by flow names or by their own state schema.",
        example="cdcsync_staging",
    ),
    sy.Optional("conflict_resolution", default="upsert"): described(
        EnvEnum("upsert", "replace", "ignore"),
        "`upsert`: write only the columns present in the event; `replace`: the row becomes "
        "exactly the event's data; `ignore`: leave an existing row untouched. See "
        "docs/semantics.md.",
        example="replace",
    ),
    sy.Optional("tables"): described(
        sy.MapPattern(
            CheckedStr("an event table name", _key_problem),
            CheckedStr("a table name", _name_problem),
        ),
        "Event table name to target table name. Mapped tables are checked at start-up "
        "(they must exist and have a key); other names are used as they are, unless "
        "`unmapped_tables: dead_letter`.",
        example="{users: app_users}",
    ),
    sy.Optional("unmapped_tables", default="apply"): described(
        EnvEnum("apply", "dead_letter"),
        "`apply`: an event for a table not in `tables` goes to the table of that name in "
        "`schema` (if it exists); `dead_letter`: only mapped tables are written, other events "
        "are dead letters. Names starting with `cdcsync_` are never written.",
        example="dead_letter",
    ),
    sy.Optional("truncate", default=False): described(
        EnvBool(),
        "Apply Debezium truncate events (`op: t`) as `TRUNCATE`; `false`: skip them.",
        example="true",
    ),
}
