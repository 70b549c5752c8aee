"""Command line: ``cdcsync serve | check | dlq | publish | tail | demo | generate-config``."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path

import trio

from cdcsync import __version__, config, registry
from cdcsync.errors import CdcSyncError, ConfigError

__all__ = ["example_config", "main"]


def example_config() -> str:
    """A commented configuration that passes ``check``: one JetStream flow into PostgreSQL."""
    source = registry.sources()["nats"].example
    dest = registry.destinations()["postgres"].example
    return f"""\
# cdcsync configuration. Every string may use ${{VAR}} or ${{VAR:-default}}.
# Reference: docs/configuration.md
api:
  bind: 127.0.0.1:8080          # REST API: /health, /api/stats
  # token: ${{CDCSYNC_API_TOKEN}} # required for POST endpoints when set

flows:
  - name: users
{source}    batch: {{max_size: 1000, max_delay_ms: 50}}
    destinations:
{dest}"""


# Where a command looks for its configuration when none is named (the original design's
# `cdc-cli start` read config/default.yaml); ./cdcsync.yaml is what `dlq` always read.
DEFAULT_CONFIGS = ("config/default.yaml", "cdcsync.yaml")
CONFIG_ENV = "CDCSYNC_CONFIG"


def _count(minimum: int) -> Callable[[str], int]:
    """An argparse type: an integer of at least ``minimum`` (a usage error otherwise)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} is less than {minimum}")
        return value

    return parse


def _rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text}: use 0 (as fast as possible) or more")
    return value


def _port(text: str) -> int:
    value = _count(0)(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"{value}: a port is 0 to 65535")
    return value


def _config_arguments(parser: argparse.ArgumentParser, positional: bool) -> None:
    """``-c/--config PATH`` (and the positional PATH) with the lookup the help text describes."""
    where = f"${CONFIG_ENV}, else {' or '.join(DEFAULT_CONFIGS)}"
    if positional:
        parser.add_argument(
            "config", nargs="?", help=f"the YAML configuration (default: -c, {where})"
        )
    same = "same as the positional PATH; " if positional else ""
    parser.add_argument(
        "-c",
        "--config",
        dest="config_option",
        metavar="PATH",
        help=f"the YAML configuration ({same}default: {where})",
    )


def _config_path(args: argparse.Namespace) -> str | None:
    """The configuration to read: PATH or -c, else $CDCSYNC_CONFIG, else a default file.

    None (after saying which paths were tried and how to make one) when there is none.
    """
    given: list[str] = [p for p in (getattr(args, "config", None), args.config_option) if p]
    if len(set(given)) > 1:
        print(
            f"cdcsync {args.command}: two configurations given ({given[0]} and -c {given[1]}); "
            f"give one",
            file=sys.stderr,
        )
        return None
    if given:
        return given[0]
    from_env = os.environ.get(CONFIG_ENV)
    if from_env:
        if not Path(from_env).exists():
            print(
                f"cdcsync {args.command}: ${CONFIG_ENV} names {from_env}, which does not exist "
                f"(correct or unset the variable, or name the file with -c PATH)",
                file=sys.stderr,
            )
            return None
        return from_env
    for candidate in DEFAULT_CONFIGS:
        if Path(candidate).is_file():
            return candidate
    tried = ", ".join(str(Path.cwd() / c) for c in DEFAULT_CONFIGS)
    print(
        f"cdcsync {args.command}: no configuration: no PATH or -c PATH given, ${CONFIG_ENV} "
        f"is not set, and none of these exists: {tried} (create one with "
        f"`cdcsync generate-config {DEFAULT_CONFIGS[0]}`, or name it with -c PATH)",
        file=sys.stderr,
    )
    return None


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="cdcsync", description="Sync change events from NATS / JetStream into PostgreSQL."
    )
    p.add_argument("--version", action="version", version=f"cdcsync {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", aliases=["start"], help="run every flow of a config file")
    _config_arguments(serve, positional=True)
    serve.add_argument(
        "--log-format",
        choices=["auto", "json", "console"],
        default="auto",
        help="json lines (default when not a TTY) or console",
    )
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])

    check = sub.add_parser(
        "check", aliases=["validate"], help="validate a config file (exit 0 when fine)"
    )
    _config_arguments(check, positional=True)
    check.add_argument(
        "--connect", action="store_true", help="also connect to every server and check tables"
    )

    dlq = sub.add_parser("dlq", help="inspect, replay or purge dead letters")
    dlq_sub = dlq.add_subparsers(dest="dlq_command", required=True, metavar="ACTION")
    for name, text in (
        ("list", "show the newest dead letters with their reasons"),
        ("replay", "re-apply dead letters (after fixing the table or mapping)"),
        ("purge", "delete dead letters that failed before a date"),
    ):
        action = dlq_sub.add_parser(name, help=text)
        _config_arguments(action, positional=False)
        action.add_argument("--flow", help="only this flow")
        action.add_argument("--destination", help="only this destination")
        if name == "list":
            action.add_argument(
                "--limit", type=_count(1), default=20, help="rows per destination (1 or more)"
            )
            action.add_argument("--payload", action="store_true", help="print whole payloads")
        if name == "replay":
            which = action.add_mutually_exclusive_group(required=True)
            which.add_argument(
                "--id", type=_count(1), action="append", help="a dead letter id (repeatable)"
            )
            which.add_argument("--all", action="store_true", help="every dead letter")
        if name == "purge":
            action.add_argument(
                "--before", required=True, help="ISO date or timestamp, e.g. 2026-11-01"
            )

    pub = sub.add_parser("publish", help="publish messages to a NATS subject (JetStream if stored)")
    pub.add_argument("subject")
    pub.add_argument(
        "message", nargs="?", help="the body; '-' or absent: one message per stdin line"
    )
    pub.add_argument(
        "--count", type=_count(1), default=1, help="send the message N times ({n} = 1..N)"
    )
    pub.add_argument("--rate", type=_rate, default=0.0, help="messages per second (default: fast)")
    pub.add_argument("--core", action="store_true", help="plain NATS even if a stream stores it")
    pub.add_argument(
        "--key",
        metavar="FIELD",
        help="put each message's FIELD (of data, after or before) where the subject says "
        "{key}, e.g. cdc.users.{key} --key id (partitioned streams keep a key in one partition)",
    )
    pub.add_argument("--server", default=os.environ.get("NATS_URL", "nats://127.0.0.1:4222"))

    tail = sub.add_parser("tail", help="print messages arriving on a NATS subject")
    tail.add_argument("subject")
    tail.add_argument("--count", type=_count(0), default=0, help="stop after N messages (0: never)")
    tail.add_argument("--server", default=os.environ.get("NATS_URL", "nats://127.0.0.1:4222"))

    demo = sub.add_parser(
        "demo",
        help="a working system in one command: embedded NATS and PostgreSQL, 3 flows, "
        "live demo events, the dashboard",
    )
    demo.add_argument("--rate", type=_rate, default=50.0, help="events per second (default 50)")
    demo.add_argument(
        "--events", type=_count(0), default=0, help="stop publishing after N events (0: never)"
    )
    demo.add_argument(
        "--keep-data", metavar="DIR", help="keep the servers' data in DIR (reused next time)"
    )
    demo.add_argument("--port", type=_port, help="API/dashboard port (default: 8080 or next free)")
    demo.add_argument(
        "--prefix", default="demo", help="names of schema, subjects, streams (default: demo)"
    )
    demo.add_argument("--nats-url", help="NATS to use if it answers (default: $NATS_URL)")
    demo.add_argument(
        "--database-url", help="PostgreSQL to use if it answers (default: $DATABASE_URL)"
    )
    demo.add_argument("--config", help="take the NATS and PostgreSQL servers from this config")

    gen = sub.add_parser("generate-config", help="write a commented example configuration")
    gen.add_argument("path", nargs="?", help="file to write (default: standard output)")
    gen.add_argument("--force", action="store_true", help="overwrite an existing file")
    return p


def _check(args: argparse.Namespace) -> int:
    from cdcsync import checks

    path = _config_path(args)
    if path is None:
        return 2
    cfg = _load(path)
    if cfg is None:
        return 1
    for w in checks.warnings(cfg):
        print(w, file=sys.stderr)
    if args.connect:
        # The report is the output: a library's own log lines (aiokafka logs every failed
        # connection attempt) would only repeat it, unformatted.
        logging.getLogger().addHandler(logging.NullHandler())
        problems = trio.run(checks.connect_problems, cfg)
        for line in problems:
            print(line, file=sys.stderr)
        if problems:
            return 1
    flows = ", ".join(f.name for f in cfg.flows)
    print(f"{cfg.path}: ok ({len(cfg.flows)} flow(s): {flows})")
    return 0


def _serve(args: argparse.Namespace) -> int:
    from cdcsync import app, logs

    logs.configure(args.log_format, args.log_level)
    import structlog

    log = structlog.get_logger("cdcsync")
    path = _config_path(args)
    if path is None:
        return 2
    # With --log-format json every line is JSON, a broken configuration too.
    cfg = _load(path, lambda line: log.error("invalid configuration", error=line))
    if cfg is None:
        return 1
    try:
        app.run(cfg)
    except BaseExceptionGroup as group:
        # OSError: e.g. the API's port is taken (it arrives wrapped by hypercorn's nurseries).
        errors = [e for e in _leaves(group) if isinstance(e, CdcSyncError | OSError)]
        if not errors:
            raise
        for exc in errors:
            log.error("cannot start", error=str(exc))
        return 2
    except CdcSyncError as exc:
        log.error("cannot start", error=str(exc))
        return 2
    except OSError as exc:
        log.error("cannot start", error=str(exc))
        return 2
    return 0


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


def _generate(args: argparse.Namespace) -> int:
    text = example_config()
    if not args.path:
        sys.stdout.write(text)
        return 0
    path = Path(args.path)
    if path.exists() and not args.force:
        print(f"{path}: exists (use --force to overwrite)", file=sys.stderr)
        return 1
    path.write_text(text, encoding="utf-8")
    print(f"wrote {path}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command in ("serve", "start"):
        return _serve(args)
    if args.command in ("check", "validate"):
        return _check(args)
    if args.command in ("publish", "tail"):
        return _tools(args)
    if args.command == "dlq":
        return _dlq(args)
    if args.command == "demo":
        return _demo(args)
    return _generate(args)


def _demo(args: argparse.Namespace) -> int:
    import re

    from cdcsync import demo

    if not re.fullmatch(r"[a-z][a-z0-9_]{0,30}", args.prefix):
        print("cdcsync demo: --prefix: lowercase letters, digits and _", file=sys.stderr)
        return 1
    options = demo.DemoOptions(
        rate=args.rate,
        events=args.events,
        keep_data=args.keep_data,
        port=args.port,
        prefix=args.prefix,
        nats_url=args.nats_url,
        database_url=args.database_url,
        config=args.config,
    )
    try:
        return demo.run(options)
    except CdcSyncError as exc:  # e.g. a broken --config, or a database it may not create
        print(f"cdcsync demo: {exc}", file=sys.stderr)
        return 1


def _load(path: str, report: Callable[[str], None] | None = None) -> config.Config | None:
    """The configuration, or None after reporting its ``file:line`` errors (on stderr)."""
    try:
        return config.load(path)
    except ConfigError as exc:
        for line in exc.errors:
            if report is None:
                print(line, file=sys.stderr)
            else:
                report(line)
        return None


def _reporting(label: str, run: Callable[[], object]) -> int:
    """Run a Trio command; our own errors become one line on stderr and exit code 1."""
    try:
        run()
    except (CdcSyncError, BaseExceptionGroup) as exc:
        errors = [e for e in _leaves(exc) if isinstance(e, CdcSyncError)]
        if not errors:
            raise
        print(f"cdcsync {label}: {errors[0]}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    return 0


def _tools(args: argparse.Namespace) -> int:
    from cdcsync import tools

    if args.command == "publish":
        options = {"count": args.count, "rate": args.rate, "core": args.core, "key": args.key}
        work = partial(tools.publish, args.server, args.subject, args.message, **options)
    else:
        work = partial(tools.tail, args.server, args.subject, count=args.count)
    return _reporting(args.command, lambda: trio.run(work))


def _dlq(args: argparse.Namespace) -> int:
    from cdcsync import dlq

    path = _config_path(args)
    if path is None:
        return 2
    cfg = _load(path)
    if cfg is None:
        return 1
    return _reporting("dlq", lambda: trio.run(dlq.run, cfg, args))


def _entry() -> None:  # pragma: no cover
    sys.exit(main())
