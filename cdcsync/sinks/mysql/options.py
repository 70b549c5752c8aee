"""The MySQL destination's configuration: schema (with the docs of every key), parsing, and
the frozen options the sink runs with. The target tables' database is the URL's."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

import strictyaml as sy

from cdcsync.plugin import (
    CheckedStr,
    EnvBool,
    EnvEnum,
    EnvInt,
    described,
    redact_url,
    url_secrets,
    userinfo_problem,
)
from cdcsync.plugin.sql import RESERVED_PREFIX, Mode

__all__ = ["SCHEMA", "MysqlOptions", "Server", "parse_options", "server"]

_SCHEMES = ("mysql://", "mariadb://")
# MySQL and MariaDB refuse longer database and table names (1059, 1102, 1103).
MAX_NAME = 64


@dataclass(frozen=True)
class Server:
    """Where to connect, from the URL (password percent-decoded)."""

    host: str
    port: int
    user: str
    password: str
    database: str


def server(url: str) -> Server:
    u = urlsplit(url)
    return Server(
        host=u.hostname or "127.0.0.1",
        port=u.port or 3306,
        user=unquote(u.username or "root"),
        password=unquote(u.password or ""),
        database=unquote(u.path.lstrip("/")),
    )


@dataclass(frozen=True)
class MysqlOptions:
    url: str
    conflict_resolution: Mode = Mode.UPSERT
    tables: dict[str, str] = field(default_factory=dict)
    truncate: bool = False
    state_schema: str = "cdcsync"
    unmapped_tables: str = "apply"
    connect_timeout_s: float = 10.0
    # The writer's session ends this long after it was last used (MySQL's wait_timeout), so
    # a writer whose host vanished frees its fence for a standby; the writer pings at a
    # third of it while idle.
    session_timeout_s: int = 30

    @property
    def schema(self) -> str:
        """The target tables' database (MySQL's schema), from the URL."""
        return server(self.url).database

    def redacted(self) -> dict[str, Any]:
        return {
            "url": redact_url(self.url),
            "conflict_resolution": self.conflict_resolution.value,
            "tables": dict(self.tables),
            "truncate": self.truncate,
            "state_schema": self.state_schema,
            "unmapped_tables": self.unmapped_tables,
            "session_timeout_s": self.session_timeout_s,
        }

    def secrets(self) -> list[str]:
        return url_secrets(self.url)


def _name_problem(name: str) -> str | None:
    if not name or "\x00" in name:
        return "an empty name" if not name else f"{name!r}: a NUL character"
    if len(name) > MAX_NAME:
        return f"{name!r}: MySQL names are at most {MAX_NAME} characters"
    if name != name.rstrip(" "):
        return f"{name!r}: MySQL names cannot end with a space"
    return None


def _key_problem(name: str) -> str | None:
    if not name or "\x00" in name:
        return "an empty name" if not name else f"{name!r}: a NUL character"
    return None


def _url_problem(url: str) -> str | None:
    """What the driver would refuse in ``url`` (each message hides its secrets)."""
    if not url.startswith(_SCHEMES):
        scheme = url.split("://", 1)[0] if "://" in url else "no scheme"
        return f"a URL starting with mysql:// (found {scheme[:20]!r})"
    ambiguous = userinfo_problem(url)
    if ambiguous is not None:
        return ambiguous
    shown = redact_url(url)
    try:
        u = urlsplit(url)
        port = u.port
    except ValueError as exc:  # a port that is not a number, or out of range
        return f"{shown!r}: {exc}"
    if port is not None and not 0 < port <= 65535:
        return f"{shown!r}: port {port} (a port is 1 to 65535)"
    if "," in u.netloc.rsplit("@", 1)[-1]:
        return f"{shown!r}: one host only (MySQL URLs name a single server)"
    if u.query or u.fragment:
        return f"{shown!r}: no ?parameters are supported (TLS is not supported yet)"
    database = unquote(u.path.lstrip("/"))
    if not database:
        return f"{shown!r}: the database of the target tables is missing (mysql://host/db)"
    problem = _name_problem(database)
    return f"{shown!r}: database {problem}" if problem else None


def parse_options(data: dict[str, Any]) -> MysqlOptions:
    url, state = data["url"], data["state_schema"]
    database = server(url).database
    if state.lower() == database.lower():
        raise ValueError(
            f"the URL's database and state_schema are both {state!r}: cdcsync's own tables "
            f"must not share a database with the tables events write (set state_schema to "
            f"another name)"
        )
    tables = dict(data.get("tables") or {})
    for source, target in tables.items():
        if target.lower().startswith(RESERVED_PREFIX):
            raise ValueError(
                f"tables: {source!r} maps to {target!r}; names starting with "
                f"{RESERVED_PREFIX!r} are reserved for cdcsync's own tables"
            )
    return MysqlOptions(
        url=url,
        conflict_resolution=Mode(data["conflict_resolution"]),
        tables=tables,
        truncate=data["truncate"],
        state_schema=state,
        unmapped_tables=data["unmapped_tables"],
        session_timeout_s=data.get("session_timeout_s", 30),
    )


SCHEMA = {
    "url": described(
        CheckedStr("a MySQL URL", _url_problem),
        "`mysql://user:password@host:port/database` (or `mariadb://`); the database holds "
        "the target tables. Percent-encode `/ # ? @` in the password. Redacted wherever "
        "cdcsync prints it.",
        example='"mysql://cdcsync:${MYSQL_PASSWORD}@db:3306/shop"',
    ),
    sy.Optional("state_schema", default="cdcsync"): described(
        CheckedStr("a database name", _name_problem),
        "Database where cdcsync keeps its own tables (`checkpoints`, `dead_letters`); created "
        "when missing, must differ from the URL's database. No event can write it. It is "
        "shared by every deployment on the server that uses the same name: deployments "
        "that reuse flow and destination names need their own.",
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
        "(they must exist, have a key and a transactional engine); other names are used as "
        "they are, unless `unmapped_tables: dead_letter`.",
        example="{users: app_users}",
    ),
    sy.Optional("unmapped_tables", default="apply"): described(
        EnvEnum("apply", "dead_letter"),
        "`apply`: an event for a table not in `tables` goes to the table of that name in "
        "the URL's database (if it exists); `dead_letter`: only mapped tables are written, "
        "other events are dead letters. Names starting with `cdcsync_` are never written.",
        example="dead_letter",
    ),
    sy.Optional("session_timeout_s", default=30): described(
        EnvInt(3, 86_400),
        "The writer's session ends this long after its client was last heard of (MySQL's "
        "`wait_timeout`; cdcsync pings while idle): when the writer's host vanishes without "
        "closing its connection, a standby takes over after about this long.",
        example="60",
    ),
    sy.Optional("truncate", default=False): described(
        EnvBool(),
        "Apply Debezium truncate events (`op: t`) as `DELETE FROM` the table, in the batch's "
        "transaction (`TRUNCATE` would commit it); `false`: skip them.",
        example="true",
    ),
}
