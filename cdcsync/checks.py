"""``cdcsync check``: what would stop a configuration from working, in plain words."""

from __future__ import annotations

import re

import trio

from cdcsync import registry
from cdcsync.bridge import open_bridge
from cdcsync.config import Config

__all__ = ["connect_problems", "warnings"]


def warnings(config: Config) -> list[str]:
    """Legal but risky choices, as ``file:line: warning: ...``."""
    out = []
    for flow in config.flows:
        opts = flow.source.options
        if getattr(opts, "jetstream", "absent") is None:
            out.append(
                f"{config.path}:{flow.source.line}: warning: flow {flow.name!r} reads core NATS: "
                f"at-most-once, events published while cdcsync is down are lost "
                f"(add a 'jetstream' block for durable, exactly-once delivery)"
            )
    if config.api.enabled and config.api.host not in ("127.0.0.1", "localhost", "::1"):
        if not config.api.token:
            out.append(
                f"{config.path}:{config.api.line}: warning: the API listens on "
                f"{config.api.host} without a token"
            )
    return out


# What a library's error text means, in plain words, and what to do about it.
_NATS_FIXES = [
    (
        r"ConnectionRefused|Connect call failed|Connection refused",
        "nothing accepts connections there",
        "start nats-server with JetStream (nats-server -js), or correct 'servers'",
    ),
    (
        r"Name or service not known|nodename nor servname|gaierror|name resolution",
        "the host name does not resolve",
        "correct 'servers'",
    ),
    (
        r"ServiceUnavailable|no responders|JetStream not enabled",
        "this NATS server has no JetStream",
        "start it with -js, or drop the flow's 'jetstream' block to read core NATS (at-most-once)",
    ),
    (
        r"[Aa]uthorization [Vv]iolation|[Aa]uthentication",
        "NATS refused the credentials",
        "correct user/password, token, creds or nkey_seed",
    ),
    (
        r"timed out|no answer within|Timeout",
        "no answer",
        "check host, port and firewall",
    ),
]
_PG_FIXES = [
    (
        r"ConnectionRefused|Connect call failed|Connection refused",
        "nothing accepts connections there",
        "start PostgreSQL, or correct host and port in 'url'",
    ),
    (
        r"Name or service not known|nodename nor servname|gaierror|name resolution",
        "the host name does not resolve",
        "correct the host in 'url'",
    ),
    (
        r'3D000: database "(?P<db>[^"]+)" does not exist',
        "the server is up but has no such database",
        "createdb {db} (or CREATE DATABASE {db}), or correct 'url'",
    ),
    (
        r"28P01|28000",
        "the server refused the login",
        "correct the user name or password in 'url'",
    ),
    (
        r"timed out|TimeoutError",
        "no answer",
        "check host, port and firewall",
    ),
]


def _explain(text: str, fixes: list[tuple[str, str, str]]) -> str:
    """``text``, then what it means and how to fix it (from the first pattern it matches)."""
    for pattern, meaning, fix in fixes:
        m = re.search(pattern, text)
        if m:
            return f"{text}: {meaning} (fix: {fix.format(**m.groupdict())})"
    return text


async def _api_problems(config: Config) -> list[str]:
    """Whether ``api.bind``'s host resolves to an address of this machine.

    The port itself is not tried: a running cdcsync holding it is no problem of the file.
    """
    api = config.api
    if not api.enabled:
        return []
    try:
        infos = await trio.socket.getaddrinfo(api.host, 0, type=trio.socket.SOCK_STREAM)
    except OSError as exc:
        return [
            f"api.bind host {api.host!r} does not resolve ({exc.strerror or exc}) "
            f"(fix: an address of this machine, 127.0.0.1, or 0.0.0.0 for every interface)"
        ]
    family, kind, proto, _, address = infos[0]
    with trio.socket.socket(family, kind, proto) as sock:
        try:
            await sock.bind((address[0], 0, *address[2:]))
        except OSError as exc:
            return [
                f"api.bind host {api.host!r}: cannot listen there ({exc.strerror or exc}): "
                f"not an address of this machine (fix: one of its addresses, 127.0.0.1, or "
                f"0.0.0.0 for every interface)"
            ]
    return []


async def connect_problems(config: Config) -> list[str]:
    """Connect to every server and check every mapped table; returns problems with their line."""
    problems = [f"{config.path}:{config.api.line}: {p}" for p in await _api_problems(config)]
    async with open_bridge():
        for flow in config.flows:
            spec = registry.sources()[flow.source.type]
            source = spec.factory(flow.name, flow.source.options)
            # Other sources say what to do in their own words.
            fixes = _NATS_FIXES if flow.source.type == "nats" else []
            for p in await source.problems():
                problems.append(
                    f"{config.path}:{flow.source.line}: "
                    + _explain(f"flow {flow.name!r}: {p}", fixes)
                )
            for dest in flow.destinations:
                dspec = registry.destinations()[dest.type]
                sink = dspec.factory(flow.name, dest.name, dest.options)
                with trio.move_on_after(15) as scope:
                    found = await sink.problems()
                if scope.cancelled_caught:
                    found = [f"destination {dest.name!r}: no answer within 15 s"]
                problems.extend(
                    f"{config.path}:{dest.line}: flow {flow.name!r}: "
                    + (
                        _explain(p, _PG_FIXES)
                        if dest.type == "postgres" and p.startswith("cannot connect")
                        else p  # other destinations say what it means themselves
                    )
                    for p in found
                )
    return problems
