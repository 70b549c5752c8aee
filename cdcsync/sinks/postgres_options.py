"""The PostgreSQL destination's configuration: schema (with the docs of every key), parsing
and the frozen options the sink runs with."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import strictyaml as sy

from cdcsync.config import EnvBool, EnvEnum, EnvStr, described, redact_url, url_secrets
from cdcsync.sinks.compaction import Mode

__all__ = ["SCHEMA", "PostgresOptions", "parse_options"]


@dataclass(frozen=True)
class PostgresOptions:
    url: str
    schema: str = "public"
    conflict_resolution: Mode = Mode.UPSERT
    tables: dict[str, str] = field(default_factory=dict)
    truncate: bool = False
    connect_timeout_s: float = 10.0

    def redacted(self) -> dict[str, Any]:
        return {
            "url": redact_url(self.url),
            "schema": self.schema,
            "conflict_resolution": self.conflict_resolution.value,
            "tables": dict(self.tables),
            "truncate": self.truncate,
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
    return PostgresOptions(
        url=url,
        schema=data["schema"],
        conflict_resolution=Mode(data["conflict_resolution"]),
        tables=dict(data.get("tables") or {}),
        truncate=data["truncate"],
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
        "Schema of the target tables, and where cdcsync creates `cdcsync_checkpoints` and "
        "`cdcsync_dead_letters`. The schema itself must exist.",
        example="replica",
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
        "(they must exist and have a key); other names are used as they are.",
        example="{users: app_users}",
    ),
    sy.Optional("truncate", default=False): described(
        EnvBool(),
        "Apply Debezium truncate events (`op: t`) as `TRUNCATE`; `false`: skip them.",
        example="true",
    ),
}
