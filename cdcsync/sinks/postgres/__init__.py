"""The PostgreSQL destination: the shared SQL destination with the PostgreSQL dialect."""

from __future__ import annotations

from cdcsync.plugin import ComponentSpec
from cdcsync.plugin.sql import SqlDestination
from cdcsync.sinks.postgres.dialect import PostgresDialect, is_retryable
from cdcsync.sinks.postgres.options import SCHEMA, PostgresOptions, parse_options

__all__ = ["SPEC", "PostgresOptions", "PostgresSink", "is_retryable"]


class PostgresSink(SqlDestination):
    """Applies change events to PostgreSQL tables, one transaction per batch."""

    def __init__(self, flow: str, name: str, options: PostgresOptions) -> None:
        super().__init__(flow, name, options, PostgresDialect(flow, name, options))


SPEC = ComponentSpec(
    name="postgres",
    kind="destination",
    summary="Apply change events to PostgreSQL tables, one transaction per batch.",
    schema=SCHEMA,
    parse=parse_options,
    factory=PostgresSink,
    example="""\
      - name: primary
        type: postgres
        # libpq-style URL; ${VAR:-default} works in every string
        url: ${DATABASE_URL:-postgresql://postgres@127.0.0.1:5432/test}
        schema: public                  # where the target tables are
        # state_schema: cdcsync         # where cdcsync keeps checkpoints and dead letters
        conflict_resolution: upsert     # upsert | replace | ignore
        # tables: {users: app_users}    # optional: event table -> target table
        # unmapped_tables: apply        # apply | dead_letter (only mapped tables are written)
        # truncate: false               # apply Debezium truncate events
""",
    secrets=("url",),
)
