"""Configuration loading: the documented shapes load into dataclasses; errors name path:line."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from cdcsync.cli import example_config
from cdcsync.config import (
    ApiConfig,
    BatchPolicy,
    Config,
    DestinationConfig,
    FlowConfig,
    SourceConfig,
    load,
    loads,
    redact_url,
)
from cdcsync.errors import ConfigError
from cdcsync.sinks.compaction import Mode
from cdcsync.sinks.postgres import PostgresOptions
from cdcsync.sources.nats import JetStreamOptions, NatsOptions

# The multi-flow shape: api.bind, a JetStream source, a flow-style batch map, and
# destinations with a table mapping.
FULL = """\
api:
  bind: 0.0.0.0:9090
  token: s3cret
flows:
  - name: users
    source:
      type: nats
      servers: ["nats://nats-1:4222", "nats://nats-2:4222"]
      subject: "cdc.users.>"
      jetstream:
        stream: CDC
        durable: cdcsync-users
        max_ack_pending: 5000
        ack_wait_s: 30
        deliver: new
      format: debezium
    batch: {max_size: 500, max_delay_ms: 20}
    destinations:
      - name: warehouse
        type: postgres
        url: postgresql://postgres:postgres@db:5432/cdc
        schema: replica
        conflict_resolution: replace
        tables:
          users: app_users
          customers: crm_customers
        truncate: true
      - name: audit
        type: postgres
        url: postgresql://audit@db:5432/audit
  - name: orders
    source:
      type: nats
      servers: ["nats://nats-1:4222"]
      subject: cdc.orders
    destinations:
      - name: primary
        type: postgres
        url: postgresql://postgres@db:5432/cdc
        conflict_resolution: ignore
"""

SHORTHAND = """\
nats:
  servers: ["nats://localhost:4222"]
  subject: "cdc.events"
postgres:
  url: "postgresql://postgres:postgres@localhost:5432/cdc"
  conflict_resolution: "upsert"
pipeline:
  batch_size: 100
"""


def errors_of(text: str, path: str = "c.yaml") -> list[str]:
    with pytest.raises(ConfigError) as info:
        loads(text, path)
    assert info.value.errors, "a ConfigError must carry at least one message"
    for message in info.value.errors:
        assert re.match(rf"{re.escape(path)}:\d+: \S", message), message
    return info.value.errors


def line_of(text: str, needle: str) -> int:
    """1-based line of the first line containing ``needle``."""
    for number, line in enumerate(text.splitlines(), 1):
        if needle in line:
            return number
    raise AssertionError(f"{needle!r} not in text")


def one_error(text: str, needle: str, path: str = "c.yaml") -> str:
    """The single error of ``text``, checked to point at the line containing ``needle``."""
    errors = errors_of(text, path)
    assert len(errors) == 1, errors
    assert errors[0].startswith(f"{path}:{line_of(text, needle)}: "), errors
    return errors[0]


# --- the documented shapes -------------------------------------------------------------------


def test_full_example_loads_into_dataclasses() -> None:
    """The multi-flow example loads with every value where the dataclasses say it belongs."""
    cfg = loads(FULL, "cdcsync.yaml")
    assert cfg.path == "cdcsync.yaml"
    assert cfg.api == ApiConfig(host="0.0.0.0", port=9090, token="s3cret", enabled=True)
    assert [f.name for f in cfg.flows] == ["users", "orders"]

    users = cfg.flow("users")
    assert users.batch == BatchPolicy(max_size=500, max_delay_ms=20)
    assert users.source.type == "nats"
    assert users.source.options == NatsOptions(
        servers=("nats://nats-1:4222", "nats://nats-2:4222"),
        subject="cdc.users.>",
        jetstream=JetStreamOptions(
            stream="CDC",
            durable="cdcsync-users",
            max_ack_pending=5000,
            ack_wait_s=30,
            deliver="new",
        ),
        format="debezium",
    )
    assert [(d.name, d.type) for d in users.destinations] == [
        ("warehouse", "postgres"),
        ("audit", "postgres"),
    ]
    assert users.destinations[0].options == PostgresOptions(
        url="postgresql://postgres:postgres@db:5432/cdc",
        schema="replica",
        conflict_resolution=Mode.REPLACE,
        tables={"users": "app_users", "customers": "crm_customers"},
        truncate=True,
    )
    assert users.destinations[1].options == PostgresOptions(url="postgresql://audit@db:5432/audit")

    orders = cfg.flow("orders")
    assert orders.batch == BatchPolicy()
    assert orders.source.options.jetstream is None
    assert orders.source.options.format == "auto"
    assert orders.destinations[0].options.conflict_resolution is Mode.IGNORE
    assert users.line == line_of(FULL, "- name: users")
    assert orders.line == line_of(FULL, "- name: orders")


def test_shorthand_loads_as_one_default_flow() -> None:
    """The original nats/postgres/pipeline shorthand loads unchanged as one flow 'default'."""
    cfg = loads(SHORTHAND)
    assert cfg.api == ApiConfig()
    (flow,) = cfg.flows
    assert isinstance(flow, FlowConfig)
    assert flow.name == "default"
    assert flow.batch.max_size == 100
    assert flow.source == SourceConfig(
        "nats", NatsOptions(servers=("nats://localhost:4222",), subject="cdc.events"), 1
    )
    (dest,) = flow.destinations
    assert isinstance(dest, DestinationConfig)
    assert dest.type == "postgres"
    assert dest.options == PostgresOptions(
        url="postgresql://postgres:postgres@localhost:5432/cdc", conflict_resolution=Mode.UPSERT
    )


def test_shorthand_and_flows_together_is_an_error() -> None:
    """A document may use either the shorthand or 'flows', not both."""
    (message,) = errors_of(SHORTHAND + FULL[FULL.index("flows:") :])
    assert "either" in message


def test_api_bind_defaults_to_localhost_8080() -> None:
    """Without an api block, or with one that has no bind, the API binds 127.0.0.1:8080."""
    assert (loads(SHORTHAND).api.host, loads(SHORTHAND).api.port) == ("127.0.0.1", 8080)
    cfg = loads("api:\n  enabled: false\n" + SHORTHAND)
    assert cfg.api == ApiConfig(host="127.0.0.1", port=8080, token=None, enabled=False)


def test_api_bind_accepts_bracketed_ipv6() -> None:
    """An IPv6 bind address is written in brackets and loaded without them."""
    cfg = loads("api:\n  bind: '[::1]:9000'\n" + SHORTHAND)
    assert (cfg.api.host, cfg.api.port) == ("::1", 9000)


def test_example_config_passes_loads() -> None:
    """The output of ``cdcsync generate-config`` is a valid configuration."""
    cfg = loads(example_config(), "example.yaml")
    assert len(cfg.flows) == 1
    assert cfg.flows[0].destinations


def test_load_reads_a_file(tmp_path: Path) -> None:
    """load() reads a file and reports errors with that file's path."""
    good = tmp_path / "good.yaml"
    good.write_text(FULL, encoding="utf-8")
    assert isinstance(load(good), Config)
    assert load(good).path == str(good)
    bad = tmp_path / "bad.yaml"
    bad.write_text(FULL.replace("ack_wait_s: 30", "ack_wait_s: soon"), encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load(bad)
    assert info.value.errors[0].startswith(f"{bad}:{line_of(FULL, 'ack_wait_s')}: ")


def test_load_missing_file_names_the_path(tmp_path: Path) -> None:
    """A file that cannot be read is a ConfigError naming the path."""
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as info:
        load(missing)
    assert info.value.errors[0].startswith(f"{missing}:")


# --- environment interpolation ---------------------------------------------------------------


def test_env_vars_in_strings_and_ints(monkeypatch: pytest.MonkeyPatch) -> None:
    """${VAR} and ${VAR:-default} resolve in string and integer values."""
    monkeypatch.setenv("PG_URL", "postgresql://u:pw@pg:5432/db")
    monkeypatch.setenv("ACK_PENDING", "777")
    for unset in ("NATS_URL", "ACK_WAIT", "TOPIC"):
        monkeypatch.delenv(unset, raising=False)
    text = FULL.replace(
        '["nats://nats-1:4222", "nats://nats-2:4222"]', '["${NATS_URL:-nats://x:1}"]'
    )
    text = text.replace("max_ack_pending: 5000", "max_ack_pending: ${ACK_PENDING}")
    text = text.replace("ack_wait_s: 30", "ack_wait_s: ${ACK_WAIT:-45}")
    text = text.replace("url: postgresql://postgres:postgres@db:5432/cdc", "url: ${PG_URL}")
    text = text.replace("subject: cdc.orders", "subject: cdc.${TOPIC:-orders}.v$$1")
    cfg = loads(text)
    users = cfg.flow("users")
    assert users.source.options.servers == ("nats://x:1",)
    assert users.source.options.jetstream.max_ack_pending == 777
    assert users.source.options.jetstream.ack_wait_s == 45
    assert users.destinations[0].options.url == "postgresql://u:pw@pg:5432/db"
    assert cfg.flow("orders").source.options.subject == "cdc.orders.v$1"


def test_env_var_in_flow_style_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    """A quoted ${VAR:-default} works inside a flow-style map, as an integer."""
    monkeypatch.setenv("MAX_SIZE", "64")
    monkeypatch.delenv("DELAY_MS", raising=False)
    text = FULL.replace(
        "batch: {max_size: 500, max_delay_ms: 20}",
        'batch: {max_size: "${MAX_SIZE}", max_delay_ms: "${DELAY_MS:-5}"}',
    )
    assert loads(text).flow("users").batch == BatchPolicy(max_size=64, max_delay_ms=5)


def test_empty_env_var_takes_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """A variable set to the empty string counts as unset when a default is given."""
    monkeypatch.setenv("ACK_WAIT", "")
    text = FULL.replace("ack_wait_s: 30", "ack_wait_s: ${ACK_WAIT:-90}")
    assert loads(text).flow("users").source.options.jetstream.ack_wait_s == 90


def test_env_var_value_does_not_change_structure(monkeypatch: pytest.MonkeyPatch) -> None:
    """A variable's value is data: YAML syntax in it stays a plain string."""
    monkeypatch.setenv("TOKEN", "a: [b, c]\nextra: 1")
    text = FULL.replace("token: s3cret", "token: ${TOKEN}")
    assert loads(text).api.token == "a: [b, c]\nextra: 1"


@pytest.mark.parametrize(
    ("old", "new", "needle"),
    [
        ("url: postgresql://audit@db:5432/audit", "url: ${AUDIT_DB_URL}", "AUDIT_DB_URL"),
        ("max_ack_pending: 5000", "max_ack_pending: ${ACK_PENDING}", "ACK_PENDING"),
        ("stream: CDC", "stream: cdc-${STREAM_SUFFIX}", "STREAM_SUFFIX"),
    ],
)
def test_missing_env_var_names_variable_and_line(
    monkeypatch: pytest.MonkeyPatch, old: str, new: str, needle: str
) -> None:
    """An unset variable without default is an error naming the variable at its line."""
    monkeypatch.delenv(needle, raising=False)
    text = FULL.replace(old, new)
    message = one_error(text, needle)
    assert f"${{{needle}}}" in message


def test_env_var_with_non_integer_value_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """A variable used as an integer must hold an integer; the error names the line."""
    monkeypatch.setenv("ACK_PENDING", "lots")
    text = FULL.replace("max_ack_pending: 5000", "max_ack_pending: ${ACK_PENDING}")
    assert "integer" in one_error(text, "max_ack_pending")


# --- errors with line numbers ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("old", "new", "needle", "words"),
    [
        ("      format: debezium", "      format: debezium\n      colour: red", "colour", "colour"),
        ("  token: s3cret", "  token: s3cret\n  port: 1", "port: 1", "port"),
        ("        truncate: true", "        truncate: true\n        pool: 3", "pool", "pool"),
        ("ack_wait_s: 30", "ack_wait_s: soon", "ack_wait_s", "integer"),
        ("ack_wait_s: 30", "ack_wait_s: 1", "ack_wait_s", ">= 5"),
        ("deliver: new", "deliver: latest", "deliver", "all, new"),
        ("format: debezium", "format: avro", "format:", "cdc, debezium, auto"),
        ("truncate: true", "truncate: maybe", "truncate:", "boolean"),
        ("conflict_resolution: replace", "conflict_resolution: merge", "merge", "upsert"),
        ("stream: CDC", "stream: [a, b]", "stream: [a", "sequence"),
        ("subject: cdc.orders", "subject: {a: 1}", "subject: {a", "mapping"),
        ("max_size: 500", "max_size: 0", "max_size", ">= 1"),
    ],
)
def test_schema_errors_name_the_line(old: str, new: str, needle: str, words: str) -> None:
    """Unknown keys and wrong types are reported as path:line: message at the offending line."""
    text = FULL.replace(old, new, 1)
    assert text != FULL
    assert words in one_error(text, needle)


def test_errors_of_several_flows_are_all_reported() -> None:
    """Errors in different flows are reported together, each at its own line."""
    text = FULL.replace("ack_wait_s: 30", "ack_wait_s: soon").replace(
        "conflict_resolution: ignore", "conflict_resolution: never"
    )
    errors = errors_of(text)
    lines = sorted(int(e.split(":")[1]) for e in errors)
    assert lines == [line_of(text, "ack_wait_s"), line_of(text, "never")]


def test_duplicate_flow_names() -> None:
    """Two flows with one name are an error at the second flow's line."""
    text = FULL.replace("- name: orders", "- name: users")
    assert errors_of(text) == [
        f"c.yaml:{line_of(FULL, '- name: orders')}: duplicate flow name 'users'"
    ]


def test_duplicate_destination_names() -> None:
    """Two destinations of one flow with one name are an error at the second one's line."""
    text = FULL.replace("- name: audit", "- name: warehouse")
    assert errors_of(text) == [
        f"c.yaml:{line_of(FULL, '- name: audit')}: "
        "duplicate destination name 'warehouse' in flow 'users'"
    ]


def test_unknown_source_type() -> None:
    """An unknown source type is an error at the source block listing the known types."""
    text = FULL.replace("type: nats", "type: kinesis", 1)
    message = one_error(text, "source:")
    assert "unknown source type 'kinesis'" in message and "kafka, nats" in message


def test_unknown_destination_type() -> None:
    """An unknown destination type is an error at the destination's line."""
    text = FULL.replace("type: postgres", "type: oracle", 1)
    message = one_error(text, "- name: warehouse")
    assert "unknown destination type 'oracle'" in message and "mysql, postgres" in message


@pytest.mark.parametrize(
    ("old", "new", "needle", "words"),
    [
        ("- name: orders", "- name: 'bad name'", "bad name", "flow name"),
        ("- name: audit", "- name: 'a/b'", "a/b", "destination name"),
        (
            "url: postgresql://audit@db:5432/audit",
            "url: mysql://audit@db/audit",
            "url: mysql://",
            "postgresql://",
        ),
    ],
)
def test_semantic_errors_name_the_line(old: str, new: str, needle: str, words: str) -> None:
    """Bad names are reported at the line of their block, bad URLs at their own line."""
    assert words in one_error(FULL.replace(old, new, 1), needle)


def test_flow_without_destinations() -> None:
    """A flow with an empty destination list is an error at the flow's line."""
    text = """\
flows:
  - name: lonely
    source: {type: nats, servers: ["nats://a:4222"], subject: s}
    destinations: []
"""
    assert "no destinations" in one_error(text, "lonely")


def test_no_flows_is_an_error() -> None:
    """A document without any flow is rejected."""
    (message,) = errors_of("api:\n  bind: 127.0.0.1:1\n")
    assert "no flows" in message


def test_yaml_syntax_error_is_a_config_error() -> None:
    """Broken YAML syntax is one path:line: ConfigError, not a parser traceback."""
    text = FULL.replace("subject: cdc.orders", 'subject: "cdc.orders')
    assert len(errors_of(text)) == 1


def test_unquoted_variable_in_flow_style_map_is_a_config_error() -> None:
    """An unquoted ${VAR} inside {...} is a YAML syntax error reported at its line."""
    text = FULL.replace("max_size: 500", "max_size: ${BATCH_SIZE:-500}")
    one_error(text, "max_size")


# Lines must stay right in a commented file, like the one generate-config writes.
COMMENTED = """\
# cdcsync configuration
# (comments before the first key)

api:
  bind: BIND                        # REST API
  # token: ${TOKEN}

flows:
  - name: users
    source:
      type: nats
      servers: ["nats://127.0.0.1:4222"]
      subject: "cdc.users.>"
      jetstream:
        stream: CDC
        durable: DURABLE
        # max_ack_pending: 20000
        # ack_wait_s: 60
      format: FORMAT
      # cdc | debezium | auto
    destinations:
      - name: primary
        type: postgres
        url: postgresql://postgres@127.0.0.1:5432/test
        conflict_resolution: MODE       # upsert | replace | ignore
        # tables: {users: app_users}
        # truncate: false
"""


FILLED = {"BIND": "127.0.0.1:8080", "DURABLE": "d", "FORMAT": "auto", "MODE": "upsert"}


def commented(**overrides: str) -> str:
    text = COMMENTED
    for placeholder, value in {**FILLED, **overrides}.items():
        text = text.replace(placeholder, value)
    return text


def test_commented_template_loads() -> None:
    """The commented template is valid once its placeholders are filled."""
    assert loads(commented()).flows[0].name == "users"


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        ({"BIND": "nope"}, "bind:"),
        ({"DURABLE": "[a, b]"}, "durable:"),
        ({"FORMAT": "avro"}, "format:"),
        ({"MODE": "merge"}, "conflict_resolution:"),
    ],
    ids=[
        "api-bind-after-comments",
        "sequence-before-comments",
        "scalar-before-comments",
        "last-scalar-before-comments",
    ],
)
def test_error_lines_in_commented_file(overrides: dict[str, str], needle: str) -> None:
    """Comment lines around a bad value do not shift the reported line away from it."""
    one_error(commented(**overrides), needle)


# --- redact_url ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            "postgresql://postgres:postgres@localhost:5432/cdc",
            "postgresql://postgres:***@localhost:5432/cdc",
        ),
        ("nats://user:pa@ss@nats:4222", "nats://user:***@nats:4222"),
        ("postgresql://:only-password@h/db", "postgresql://:***@h/db"),
        ("postgresql://postgres@localhost:5432/cdc", "postgresql://postgres@localhost:5432/cdc"),
        ("nats://localhost:4222", "nats://localhost:4222"),
    ],
)
def test_redact_url_hides_passwords(url: str, shown: str) -> None:
    """A URL's password is replaced by *** and everything else is kept."""
    assert redact_url(url) == shown


def test_redact_url_hides_password_query_parameter() -> None:
    """A password given as ``?password=`` (which libpq and asyncpg accept) is hidden too."""
    shown = redact_url("postgresql://app@db:5432/cdc?sslmode=require&password=hunter2")
    assert "hunter2" not in shown
    assert shown.startswith("postgresql://app@db:5432/cdc?")


def test_redacted_options_never_show_the_password() -> None:
    """The options a flow shows on the API carry no password."""
    cfg = loads(FULL)
    shown = cfg.flow("users").destinations[0].options.redacted()
    assert "postgres:postgres@" not in str(shown)
    assert shown["url"] == "postgresql://postgres:***@db:5432/cdc"


ISSUE_EXAMPLE = """\
api:
  bind: 127.0.0.1:8080
flows:
  - name: users
    source:
      type: nats
      servers: ["nats://127.0.0.1:4222"]
      subject: "cdc.users.>"
      jetstream:            # omit for core NATS (at-most-once; `check` warns)
        stream: CDC         # created if missing, with the flow's subject
        durable: cdcsync-users
      format: cdc           # cdc | debezium | auto
    batch: {max_size: 1000, max_delay_ms: 50}
    destinations:
      - name: primary
        type: postgres
        url: ${DATABASE_URL:-postgresql://postgres@127.0.0.1:5432/test}
        schema: public
        conflict_resolution: upsert   # upsert | replace | ignore
        tables: {users: app_users}    # optional: event table -> target table
"""


def test_issue_example_loads_verbatim(monkeypatch: pytest.MonkeyPatch) -> None:
    """The configuration shown in the product's issue loads exactly as written."""
    monkeypatch.delenv("DATABASE_URL", raising=False)
    config = loads(ISSUE_EXAMPLE, "issue.yaml")
    (flow,) = config.flows
    assert (config.api.host, config.api.port) == ("127.0.0.1", 8080)
    assert flow.source.options.jetstream.stream == "CDC"
    assert flow.source.options.format == "cdc"
    assert (flow.batch.max_size, flow.batch.max_delay_ms) == (1000, 50)
    (dest,) = flow.destinations
    assert dest.options.url == "postgresql://postgres@127.0.0.1:5432/test"
    assert dest.options.tables == {"users": "app_users"}


def test_secrets_are_every_password_and_token_but_not_what_is_shown_anyway() -> None:
    """Config.secrets() (scrubbed from error texts in the API and logs) holds the API token,
    URL passwords and NATS credentials; a password equal to the URL's user name, which the
    redacted URL shows anyway, is left out so errors keep their words."""
    text = FULL.replace(
        'servers: ["nats://nats-1:4222"]', 'servers: ["nats://cdc:n%40tspw@nats-1:4222"]'
    ).replace("url: postgresql://audit@db:5432/audit", "url: postgresql://audit:Au%2Fdit9@db/a")
    secrets = loads(text).secrets()
    assert {"s3cret", "n%40tspw", "n@tspw", "Au%2Fdit9", "Au/dit9"} <= set(secrets)
    assert "postgres" not in secrets  # postgresql://postgres:postgres@db: shown as postgres:***
