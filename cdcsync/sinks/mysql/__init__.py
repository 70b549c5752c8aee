"""The MySQL / MariaDB destination: the shared SQL destination with the MySQL dialect."""

from __future__ import annotations

from cdcsync.plugin import ComponentSpec
from cdcsync.plugin.sql import SqlDestination
from cdcsync.sinks.mysql.dialect import MysqlDialect, is_retryable
from cdcsync.sinks.mysql.options import SCHEMA, MysqlOptions, parse_options

__all__ = ["SPEC", "MysqlOptions", "MysqlSink", "is_retryable"]


class MysqlSink(SqlDestination):
    """Applies change events to MySQL or MariaDB (InnoDB) tables, one transaction per batch."""

    def __init__(self, flow: str, name: str, options: MysqlOptions) -> None:
        super().__init__(flow, name, options, MysqlDialect(flow, name, options))


SPEC = ComponentSpec(
    name="mysql",
    kind="destination",
    summary="Apply change events to MySQL or MariaDB (InnoDB) tables, one transaction per batch.",
    schema=SCHEMA,
    parse=parse_options,
    factory=MysqlSink,
    example="""\
      - name: shop_mysql
        type: mysql
        # mysql://user:password@host:port/database (the database of the target tables)
        url: ${MYSQL_URL:-mysql://root@127.0.0.1:3306/test}
        # state_schema: cdcsync         # database where cdcsync keeps checkpoints and dead letters
        conflict_resolution: upsert     # upsert | replace | ignore
        # tables: {orders: orders}      # optional: event table -> target table
        # unmapped_tables: apply        # apply | dead_letter (only mapped tables are written)
        # truncate: false               # apply Debezium truncate events (as DELETE FROM)
""",
    secrets=("url",),
)
