"""The PostgreSQL destination's configuration: schema (with the docs of every key), parsing
and the frozen options the sink runs with."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import strictyaml as sy

from cdcsync.plugin import EnvBool, EnvEnum, EnvStr, described, redact_url, url_secrets
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


def parse_options(data: dict[str, Any]) -> PostgresOptions:
    url = data["url"]
    if not url.startswith(("postgres://", "postgresql://")):
        raise ValueError(f"url {redact_url(url)!r} must start with postgresql://")
    for secret in url_secrets(url):
        if any(ch in secret for ch in "/#?@"):
            raise ValueError(
                f"url {redact_url(url)!r}: the password contains '/', '#', '?' or '@'; "
                f"percent-encode it (%2F, %23, %3F, %40)"
            )
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
        EnvStr(),
        "libpq-style URL `postgresql://user:password@host:port/db?sslmode=...`; "
        "percent-encode `/ # ? @` in the password. Redacted wherever cdcsync prints it.",
        example='"postgresql://cdcsync:${PGPASSWORD}@db:5432/app?sslmode=require"',
    ),
    sy.Optional("schema", default="public"): described(
        EnvStr(),
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
        sy.MapPattern(EnvStr(), EnvStr()),
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
