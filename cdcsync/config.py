"""Configuration: strictyaml schema -> frozen dataclasses.

Every error names ``file:line``. ``${VAR}`` and ``${VAR:-default}`` are resolved in
string and integer values after parsing, so a variable's value can never change
the structure of the document. The single-flow shorthand of the original design
(``nats`` / ``postgres`` / ``pipeline``) loads as one flow named ``default``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import strictyaml as sy
from strictyaml.ruamel.error import MarkedYAMLError, YAMLError
from strictyaml.ruamel.reader import Reader

from cdcsync import registry
from cdcsync.errors import ConfigError
from cdcsync.redact import redact_url, scrub, url_secrets, userinfo_problem
from cdcsync.validators import CheckedStr, EnvBool, EnvEnum, EnvInt, EnvStr, described

__all__ = [
    "ApiConfig",
    "BatchPolicy",
    "CheckedStr",
    "Config",
    "DestinationConfig",
    "EnvBool",
    "EnvEnum",
    "EnvInt",
    "EnvStr",
    "FlowConfig",
    "SourceConfig",
    "described",
    "load",
    "loads",
    "redact_url",
    "scrub",
    "url_secrets",
    "userinfo_problem",
]

MAX_FILE_BYTES = 4 * 1024 * 1024

_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,62}$")


def _bind_problem(bind: str) -> str | None:
    host, sep, port = bind.rpartition(":")
    if not sep or not host or not port.isascii() or not port.isdigit():
        return f"{bind!r} (write it as HOST:PORT, e.g. 127.0.0.1:8080 or [::1]:8080)"
    if int(port) > 65535:
        return f"port {port} (a port is 0 to 65535; 0 picks a free one)"
    if any(ch.isspace() or not ch.isprintable() for ch in host):
        return f"host {host!r} (no spaces or control characters)"
    return None


@dataclass(frozen=True)
class ApiConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    token: str | None = None
    enabled: bool = True
    cors_origins: tuple[str, ...] = ()
    keep_alive_s: int = 5
    max_connections: int = 100
    line: int = field(default=1, compare=False)  # of api.bind, for check's messages


@dataclass(frozen=True)
class BatchPolicy:
    """At most ``max_size`` events per batch; a partial batch waits at most ``max_delay_ms``.

    A partial batch waits only while the previous write is still in flight: an idle
    sink gets what is there at once, so the window never adds latency at low load.
    """

    max_size: int = 1000
    max_delay_ms: int = 50


@dataclass(frozen=True)
class SourceConfig:
    type: str
    options: Any
    line: int


@dataclass(frozen=True)
class DestinationConfig:
    name: str
    type: str
    options: Any
    line: int


@dataclass(frozen=True)
class FlowConfig:
    name: str
    source: SourceConfig
    batch: BatchPolicy
    destinations: tuple[DestinationConfig, ...]
    line: int


@dataclass(frozen=True)
class Config:
    path: str
    api: ApiConfig
    flows: tuple[FlowConfig, ...]

    def flow(self, name: str) -> FlowConfig:
        for flow in self.flows:
            if flow.name == name:
                return flow
        raise KeyError(name)

    def secrets(self) -> tuple[str, ...]:
        """Every secret of the configuration (passwords, tokens, URL secrets), to scrub from
        error texts wherever they appear. Options declare theirs with a ``secrets()`` method."""
        found = [self.api.token or ""]
        shown = []  # what the API shows anyway, e.g. the user in postgres:***@
        for flow in self.flows:
            for options in (flow.source.options, *(d.options for d in flow.destinations)):
                declared = getattr(options, "secrets", None)
                if declared is not None:
                    found.extend(declared())
                redacted = getattr(options, "redacted", None)
                if redacted is not None:
                    shown.append(str(redacted()))
        # A password equal to something shown (postgres:postgres@) is no secret worth
        # turning every "postgres" of an error into ***.
        visible = "\n".join(shown)
        return tuple(sorted({s for s in found if s and s not in visible}))


# The reference text of every key sits beside its validator (``described``): the generated
# docs/reference/configuration.md, ``check`` and the loader all read this one schema.
_BATCH = described(
    sy.Map(
        {
            sy.Optional("max_size", default=1000): described(
                EnvInt(1, 1_000_000),
                "Most events per batch; each batch is one transaction per destination.",
                example="5000",
            ),
            sy.Optional("max_delay_ms", default=50): described(
                EnvInt(0, 600_000),
                "Longest a partial batch waits for more events, and only while the previous "
                "write is still in flight: an idle destination gets what has arrived at once, "
                "so this never adds latency at low load.",
                example="20",
            ),
        }
    ),
    "How this flow's events are grouped into batches.",
    example="{max_size: 1000, max_delay_ms: 50}",
)
_API = described(
    sy.Map(
        {
            sy.Optional("bind", default="127.0.0.1:8080"): described(
                CheckedStr("HOST:PORT", _bind_problem),
                "`HOST:PORT` the API listens on; port 0 picks a free port. Listening beyond "
                "loopback without a `token` is legal, and `cdcsync check` warns about it.",
                example="0.0.0.0:8080",
            ),
            sy.Optional("token"): described(
                EnvStr(),
                "When set, every POST endpoint (stats reset, pause, resume) needs "
                "`Authorization: Bearer <token>`; GET endpoints stay open.",
                example="${CDCSYNC_API_TOKEN}",
            ),
            sy.Optional("enabled", default=True): described(
                EnvBool(),
                "`false`: no HTTP server at all (no `/health`, no `/metrics`).",
                example="false",
            ),
            sy.Optional("cors_origins"): described(
                sy.Seq(EnvStr()),
                "Browser origins allowed to call the API (`*` for any). Without it no CORS "
                "headers are sent.",
                example='["https://ops.example.com"]',
            ),
            sy.Optional("keep_alive_s", default=5): described(
                EnvInt(1, 3600),
                "Seconds an idle HTTP connection stays open (keep-alive) before the server "
                "closes it; also how long a new connection may take to send its request.",
                example="15",
            ),
            sy.Optional("max_connections", default=100): described(
                EnvInt(1, 100_000),
                "Most HTTP connections open at once (each dashboard tab holds one for its "
                "live stream). Beyond it new connections wait in the listen queue until one "
                "closes.",
                example="500",
            ),
        }
    ),
    "The HTTP API: `/health`, `/api/stats`, `/metrics` (docs/api.md). Absent: every default.",
    example="{bind: 127.0.0.1:8080}",
)
_FLOW = sy.Map(
    {
        "name": described(
            EnvStr(),
            "Unique flow name: letters, digits, `_`, `.`, `-` (at most 63). It names the "
            "flow's checkpoints and writer locks, so renaming a flow re-reads its stream "
            "from the beginning.",
            example="users",
        ),
        "source": described(
            sy.Any(),
            "Where the flow's events come from: `type` and that source's keys (see Sources below).",
            example="{type: nats, servers: [...], subject: ...}",
            kind="mapping",
        ),
        sy.Optional("batch"): _BATCH,
        "destinations": described(
            sy.Seq(sy.Any()),
            "One or more destinations, each with `name`, `type` and that destination's keys "
            "(see Destinations below). Every destination gets every event of the flow; a "
            "message is acknowledged once all of them committed it.",
            example="[{name: primary, type: postgres, url: ...}]",
            kind="list of mappings",
        ),
    }
)
_PIPELINE = described(
    sy.Map(
        {
            sy.Optional("batch_size", default=1000): described(
                EnvInt(1, 1_000_000), "Same as `flows[].batch.max_size`.", example="100"
            ),
            sy.Optional("batch_timeout_ms"): described(
                EnvInt(0, 600_000),
                "Same as `flows[].batch.max_delay_ms` (the original design's name); default 50.",
                example="100",
            ),
            sy.Optional("max_delay_ms"): described(
                EnvInt(0, 600_000),
                "Same as `flows[].batch.max_delay_ms`; wins over `batch_timeout_ms`.",
                example="100",
            ),
        }
    ),
    "Shorthand only: batching of the one flow.",
    example="{batch_size: 100}",
)
_SCHEMA = sy.Map(
    {
        sy.Optional("api"): _API,
        sy.Optional("flows"): described(
            sy.Seq(_FLOW),
            "The flows to run, concurrently, in one process. Required unless the "
            "single-flow shorthand (`nats`, `postgres`, `pipeline`) is used instead.",
            example="[{name: users, source: ..., destinations: [...]}]",
            kind="list of flows",
        ),
        # The original single-flow shorthand.
        sy.Optional("nats"): described(
            sy.Any(),
            "Shorthand: the source of a single flow named `default`; the keys of the `nats` "
            "source, `type` implied.",
            example='{servers: ["nats://127.0.0.1:4222"], subject: cdc.events}',
            kind="mapping",
        ),
        sy.Optional("postgres"): described(
            sy.Any(),
            "Shorthand: that flow's one destination, named `postgres`; the keys of the "
            "`postgres` destination, `type` implied.",
            example='{url: "postgresql://postgres@127.0.0.1:5432/test"}',
            kind="mapping",
        ),
        sy.Optional("pipeline"): _PIPELINE,
    }
)


def _err(path: str, line: int, message: str) -> str:
    return f"{path}:{line}: {message}"


def _yaml_error(path: str, exc: MarkedYAMLError) -> str:
    mark = exc.problem_mark or exc.context_mark
    line = mark.line + 1 if mark is not None else 1
    chunk = getattr(exc, "_chunk", None)
    if chunk is not None and isinstance(getattr(chunk, "contents", None), str):
        # strictyaml marks a bad scalar at its chunk's end, which runs on over trailing
        # comment lines; in flow style the start is off instead. The value is at the lesser.
        line = min(line, chunk.start_line())
    parts = [p for p in (exc.context, exc.problem) if p]
    return _err(path, line, ": ".join(parts).replace("\n", " "))


def _component(
    path: str,
    node: Any,
    kind: str,
    specs: Mapping[str, registry.ComponentSpec],
    named: bool,
    implied_type: str | None = None,
) -> tuple[str, str, Any, int]:
    line = node.start_line
    if not isinstance(node.data, dict):
        raise ConfigError(_err(path, line, f"{kind} must be a mapping"))
    type_name = implied_type or node.data.get("type")
    if not isinstance(type_name, str) or type_name not in specs:
        known = ", ".join(sorted(specs))
        raise ConfigError(_err(path, line, f"unknown {kind} type {type_name!r} (known: {known})"))
    spec = specs[type_name]
    keys: dict[Any, Any] = {
        sy.Optional("type", default=type_name) if implied_type else "type": sy.Str()
    }
    if named:
        keys["name"] = EnvStr()
    keys.update(spec.schema)
    try:
        node.revalidate(sy.Map(keys))
    except sy.YAMLValidationError as exc:
        raise ConfigError(_yaml_error(path, exc)) from None
    data = dict(node.data)
    name = data.pop("name", "")
    data.pop("type", None)
    if named and not _NAME.match(name):
        raise ConfigError(_err(path, line, f"{kind} name {name!r}: use letters, digits, _ . -"))
    try:
        options = spec.parse(data)
    except ValueError as exc:
        raise ConfigError(_err(path, line, f"{kind} {name or type_name!r}: {exc}")) from None
    return name, type_name, options, line


def _parse_bind(bind: str) -> tuple[str, int]:
    host, _, port = bind.rpartition(":")
    return host.strip("[]"), int(port)


def _unprintable(path: str, text: str) -> str | None:
    """The first character YAML forbids, as an error (strictyaml's own report of it crashes)."""
    m = Reader.NON_PRINTABLE.search(text)
    if m is None:
        return None
    line = text.count("\n", 0, m.start()) + 1
    column = m.start() - text.rfind("\n", 0, m.start())
    return _err(
        path,
        line,
        f"column {column}: control character U+{ord(m.group()):04X}, which YAML does not allow "
        f"(remove it; inside double quotes write it as an escape such as \\x01)",
    )


def loads(text: str, path: str = "<config>") -> Config:
    """Parse and validate a configuration document."""
    unprintable = _unprintable(path, text)
    if unprintable is not None:
        raise ConfigError(unprintable)
    try:
        doc = sy.dirty_load(text, _SCHEMA, label=path, allow_flow_style=True)
    except (sy.YAMLValidationError, MarkedYAMLError) as exc:
        raise ConfigError(_yaml_error(path, exc)) from None
    except YAMLError as exc:  # strictyaml's unmarked errors
        raise ConfigError(_err(path, 1, str(exc).replace("\n", " "))) from None
    except RecursionError:
        raise ConfigError(
            _err(path, 1, "nested too deeply to read (a configuration needs a few levels)")
        ) from None

    errors: list[str] = []
    api = ApiConfig()
    if "api" in doc.data:
        node = doc["api"]
        host, port = _parse_bind(node.data["bind"])
        # In flow style strictyaml's start_line is one past the end line.
        bind = node["bind"] if "bind" in node.data else node
        bind_line = min(bind.start_line, bind.end_line)
        api = ApiConfig(
            host,
            port,
            node.data.get("token") or None,
            node.data["enabled"],
            tuple(node.data.get("cors_origins") or ()),
            node.data["keep_alive_s"],
            node.data["max_connections"],
            bind_line,
        )

    flows: list[FlowConfig] = []
    has_flows = "flows" in doc.data
    has_short = any(k in doc.data for k in ("nats", "postgres", "pipeline"))
    if has_flows and has_short:
        raise ConfigError(
            _err(path, 1, "use either 'flows' or the 'nats'/'postgres' shorthand, not both")
        )
    if has_short:
        flows.append(_shorthand_flow(path, doc))
    elif has_flows:
        seen: set[str] = set()
        for node in doc["flows"]:
            try:
                flow = _flow(path, node)
            except ConfigError as exc:
                errors.extend(exc.errors)
                continue
            if flow.name in seen:
                errors.append(_err(path, node.start_line, f"duplicate flow name {flow.name!r}"))
            seen.add(flow.name)
            shared = _shared_durable(flow, flows) or _shared_group(flow, flows)
            if shared is not None:
                errors.append(_err(path, flow.source.line, shared))
            flows.append(flow)
    if not flows and not errors:
        errors.append(_err(path, 1, "no flows configured (add a 'flows' list)"))
    if errors:
        raise ConfigError(errors)
    return Config(path, api, tuple(flows))


def _shared_durable(flow: FlowConfig, earlier: list[FlowConfig]) -> str | None:
    """Two flows on one durable consumer take it from each other at start (cdcsync deletes
    and recreates it): one of them silently receives nothing. Refuse that."""
    js = getattr(flow.source.options, "jetstream", None)
    if js is None:
        return None
    servers = set(flow.source.options.servers)
    for other in earlier:
        theirs = getattr(other.source.options, "jetstream", None)
        if (
            theirs is not None
            and (theirs.stream, theirs.durable) == (js.stream, js.durable)
            and servers & set(other.source.options.servers)
        ):
            return (
                f"flow {flow.name!r} uses the durable consumer {js.durable!r} of stream "
                f"{js.stream!r}, as flow {other.name!r} does (line {other.source.line}): give "
                f"each flow its own durable (cdcsync deletes and recreates it at start)"
            )
    return None


def _shared_group(flow: FlowConfig, earlier: list[FlowConfig]) -> str | None:
    """Two flows in one Kafka consumer group split the partitions between them: each flow
    silently misses the other's share. Refuse that."""
    if flow.source.type != "kafka":
        return None
    opts = flow.source.options
    for other in earlier:
        theirs = other.source.options
        if (
            other.source.type == "kafka"
            and theirs.group == opts.group
            and set(theirs.brokers) & set(opts.brokers)
        ):
            return (
                f"flow {flow.name!r} uses the Kafka consumer group {opts.group!r}, as flow "
                f"{other.name!r} does (line {other.source.line}): the group would split the "
                f"partitions between the two flows; give each flow its own group"
            )
    return None


def _flow(path: str, node: Any) -> FlowConfig:
    name = node.data["name"]
    if not _NAME.match(name):
        raise ConfigError(
            _err(path, node.start_line, f"flow name {name!r}: use letters, digits, _ . -")
        )
    _, stype, sopts, sline = _component(path, node["source"], "source", registry.sources(), False)
    batch = BatchPolicy(**node.data["batch"]) if "batch" in node.data else BatchPolicy()
    dests: list[DestinationConfig] = []
    errors: list[str] = []
    if not node.data["destinations"]:
        errors.append(_err(path, node.start_line, f"flow {name!r} has no destinations"))
    names: set[str] = set()
    for dnode in node["destinations"]:
        try:
            dname, dtype, dopts, dline = _component(
                path, dnode, "destination", registry.destinations(), True
            )
        except ConfigError as exc:
            errors.extend(exc.errors)
            continue
        if dname in names:
            errors.append(
                _err(path, dline, f"duplicate destination name {dname!r} in flow {name!r}")
            )
        names.add(dname)
        dests.append(DestinationConfig(dname, dtype, dopts, dline))
    if errors:
        raise ConfigError(errors)
    return FlowConfig(name, SourceConfig(stype, sopts, sline), batch, tuple(dests), node.start_line)


def _shorthand_flow(path: str, doc: Any) -> FlowConfig:
    for key in ("nats", "postgres"):
        if key not in doc.data:
            raise ConfigError(_err(path, 1, f"the single-flow shorthand needs a '{key}' section"))
    _, stype, sopts, sline = _component(
        path, doc["nats"], "source", registry.sources(), False, implied_type="nats"
    )
    _, dtype, dopts, dline = _component(
        path,
        doc["postgres"],
        "destination",
        registry.destinations(),
        False,
        implied_type="postgres",
    )
    pipeline = doc.data.get("pipeline") or {}
    delay = pipeline.get("max_delay_ms", pipeline.get("batch_timeout_ms", 50))
    batch = BatchPolicy(pipeline.get("batch_size", 1000), delay)
    dest = DestinationConfig("postgres", dtype, dopts, dline)
    return FlowConfig("default", SourceConfig(stype, sopts, sline), batch, (dest,), 1)


def load(path: str | os.PathLike[str]) -> Config:
    """Read and validate a configuration file."""
    p = Path(path)
    try:
        with p.open("rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"{p}:0: cannot read: {exc.strerror}") from None
    if len(data) > MAX_FILE_BYTES:
        raise ConfigError(f"{p}:0: larger than {MAX_FILE_BYTES >> 20} MiB: not a configuration")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ConfigError(
            _err(
                str(p),
                line,
                f"not UTF-8 text (byte 0x{data[exc.start]:02x}): is it the right file? "
                f"Save the configuration as UTF-8",
            )
        ) from None
    return loads(text.removeprefix("\ufeff"), str(p))
