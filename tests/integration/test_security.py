"""Security promises of docs/operations.md ("Security"): secrets never printed, the API's
token, body limit and CORS, NATS credentials and TLS for NATS and PostgreSQL."""

from __future__ import annotations

import importlib.util
import os
import signal
import ssl
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest
import trio
from harness import Env, envelope, wait_until
from servers import PostgresServer, free_port, nats_info, nats_server_binary

from cdcsync import config as cfg
from cdcsync.bridge import aio

SECRET = "SEKRET"  # every secret below contains it; no output may
USERS = "CREATE TABLE users (id int PRIMARY KEY, name text);"


# --------------------------------------------------------------------------- helpers


def cdcsync(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cdcsync", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def spawn(*args: str, out: Path) -> subprocess.Popen[bytes]:
    """``cdcsync ARGS`` in the background, stdout to ``out``.stdout and stderr to ``out``.stderr."""
    with open(f"{out}.stdout", "wb") as so, open(f"{out}.stderr", "wb") as se:
        return subprocess.Popen(
            [sys.executable, "-m", "cdcsync", *args], stdin=subprocess.DEVNULL, stdout=so, stderr=se
        )


def outputs(out: Path) -> str:
    return Path(f"{out}.stdout").read_text() + Path(f"{out}.stderr").read_text()


def stop(proc: subprocess.Popen[bytes], timeout: float = 25) -> int:
    """SIGTERM (a second one after 3 s if it still drains), then wait; kill if it hangs."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(3)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise


def flow(
    name: str,
    servers: str,
    pg_url: str,
    *,
    auth: str = "",
    subject: str | None = None,
    jetstream: str = "",
    schema: str = "public",
) -> str:
    """One flow of a config file, indented for the ``flows:`` list."""
    source_extra = textwrap.indent(auth + jetstream, " " * 6)
    return (
        f"  - name: {name}\n"
        f"    source:\n"
        f"      type: nats\n"
        f"      servers: [{servers}]\n"
        f'      subject: "{subject or f"{name}.>"}"\n'
        f"{source_extra}"
        f"    destinations:\n"
        f"      - name: primary\n"
        f"        type: postgres\n"
        f'        url: "{pg_url}"\n'
        f"        schema: {schema}\n"
    )


@contextmanager
def throwaway_nats(tmp_path: Path, body: str) -> Iterator[str]:
    """A nats-server with JetStream and the config ``body`` (auth, tls) on a free port."""
    port = free_port()
    store = tmp_path / f"nats-{port}"
    conf = tmp_path / f"nats-{port}.conf"
    conf.write_text(
        f'listen: "127.0.0.1:{port}"\njetstream {{ store_dir: "{store}" }}\n{body}\n',
        encoding="utf-8",
    )
    log = tmp_path / f"nats-{port}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [nats_server_binary(), "-c", str(conf)],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 10
        while nats_info(port, timeout=0.5) is None:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"nats-server did not start:\n{log.read_text()}")
            time.sleep(0.05)
        yield f"nats://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def publish(url: str, subject: str, payloads: list[bytes], **connect: Any) -> None:
    """Publish to JetStream as a client with its own credentials / TLS."""

    async def go() -> None:
        nc = await nats.connect(url, allow_reconnect=False, **connect)
        try:
            js = nc.jetstream()
            for p in payloads:
                await js.publish(subject, p)
        finally:
            await nc.close()

    await aio(go)


def leaks(texts: dict[str, str]) -> dict[str, list[str]]:
    """Where a secret shows up: each text's name and the context around every occurrence."""
    found: dict[str, list[str]] = {}
    for name, text in texts.items():
        start = text.find(SECRET)
        while start != -1:
            found.setdefault(name, []).append(text[max(0, start - 60) : start + 40])
            start = text.find(SECRET, start + 1)
    return found


def load(text: str) -> cfg.Config:
    return cfg.loads(text, path="security-test.yaml")


async def wait_rows(env: Env, ids: list[int], url: str | None = None) -> None:
    async def check() -> bool:
        rows = await env.sql(f"SELECT id FROM {env.schema}.users ORDER BY id", url=url)
        return [r[0] for r in rows] == ids

    await wait_until(check, what=f"rows {ids}")


# --------------------------------------------------------------------------- secrets


@pytest.mark.slow
def test_secrets_never_appear_in_output_logs_or_api(tmp_path: Path, nats_url: str) -> None:
    """check, check --connect, serve's logs and every API response never contain a password,
    token or URL secret of the configuration, while errors about those servers are reported."""
    port = free_port()
    path = tmp_path / "cdcsync.yaml"
    path.write_text(
        f"api: {{bind: '127.0.0.1:{port}', token: {SECRET}-api}}\nflows:\n"
        + flow(
            "pgpass",
            f'"{nats_url}"',
            "postgresql://postgres:SEKRET-xyz@127.0.0.1:1/test",
            auth="token: SEKRET-tok\n",
        )
        + flow(
            "pgquery",
            f'"{nats_url}"',
            "postgresql://postgres@127.0.0.1:1/test?sslmode=disable&password=SEKRET-q",
            auth="user: cdc\npassword: SEKRET-npw\n",
        )
        + flow(
            "badseed",
            f'"{nats_url}"',
            "postgresql://postgres:SEKRET-pg3@127.0.0.1:1/test",
            # A well-formed user seed (check refuses malformed ones) that holds the marker.
            auth="nkey_seed: SUAAAAAASEKRETAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAE7HM\n",
        )
        + flow(
            "natsdown",
            '"nats://cdc:SEKRET-nurl@127.0.0.1:1"',
            "postgresql://postgres:SEKRET-pg2@127.0.0.1:1/test",
            auth="token: SEKRET-tok2\n",
        ),
        encoding="utf-8",
    )
    checked = cdcsync("check", str(path))
    assert checked.returncode == 0, checked.stderr
    texts = {"check": checked.stdout + checked.stderr}

    connect = spawn("check", "--connect", str(path), out=tmp_path / "connect")
    serve = spawn("serve", str(path), "--log-format", "json", out=tmp_path / "serve")
    bodies: dict[str, str] = {}
    try:
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=base, timeout=5) as client:
            deadline = time.monotonic() + 20
            while True:  # until the API is up and the PostgreSQL flows failed thrice
                try:
                    flows = {f["name"]: f for f in client.get("/api/stats").json()["flows"]}
                    if all(flows[n]["restarts"] >= 3 for n in ("pgpass", "pgquery")):
                        break
                except httpx.TransportError:
                    pass
                assert serve.poll() is None, outputs(tmp_path / "serve")
                assert time.monotonic() < deadline, "flows did not fail and restart"
                time.sleep(0.2)
            for endpoint in (
                "/health",
                "/api/stats",
                "/api/flows",
                "/api/flows/pgpass",
                "/api/flows/pgquery",
                "/api/flows/natsdown",
                "/api/flows/badseed",
                "/api/flows/nope",
            ):
                resp = client.get(endpoint)
                bodies[endpoint] = f"{resp.status_code} {resp.headers} {resp.text}"
            resp = client.post("/api/stats/reset", headers={"Authorization": "Bearer nope"})
            bodies["reset 401"] = f"{resp.status_code} {resp.headers} {resp.text}"
            assert resp.status_code == 401
    finally:
        serve_code = stop(serve)
        connect.wait(30)
    texts["serve"] = outputs(tmp_path / "serve")
    texts["check --connect"] = outputs(tmp_path / "connect")
    texts.update(bodies)

    leaked = leaks(texts)
    assert not leaked, f"secrets printed in: {sorted(leaked)}\n{leaked}"
    # ...while the failures were reported, with the redacted URLs
    assert serve_code == 0, texts["serve"]
    assert connect.returncode == 1, texts["check --connect"]
    connect_text = texts["check --connect"]
    assert "postgres:***@127.0.0.1:1" in connect_text and "password=***" in connect_text
    assert "flow 'natsdown'" in connect_text
    assert "flow restarting" in texts["serve"] and "Connect call failed" in texts["serve"]
    assert '"password":"***"' in bodies["/api/flows/pgquery"]


SECRET_URLS = [
    # (id, NATS server URL, PostgreSQL URL): each holds a secret in an unusual spelling
    ("pg-password-with-slash", None, "postgresql://postgres:SEKRET/1@127.0.0.1:1/test"),
    ("pg-password-with-hash", None, "postgresql://postgres:SEKRET#1@127.0.0.1:1/test"),
    ("pg-password-with-at", None, "postgresql://postgres:SEKRET@1@127.0.0.1:1/test"),
    ("pg-percent-encoded", None, "postgresql://postgres:SEKRET%2F1@127.0.0.1:1/test"),
    ("pg-query-PASSWORD", None, "postgresql://postgres@127.0.0.1:1/test?PASSWORD=SEKRET"),
    ("pg-query-sslpassword", None,
     "postgresql://postgres@127.0.0.1:1/test?sslmode=disable&sslpassword=SEKRET"),
    ("nats-user-password", "nats://cdc:SEKRET@{host}", None),
    ("nats-token-in-url", "nats://SEKRET@{host}", None),
]  # fmt: skip


@pytest.mark.parametrize(
    ("nats_server", "pg"), [c[1:] for c in SECRET_URLS], ids=[c[0] for c in SECRET_URLS]
)
async def test_url_secrets_are_redacted_in_every_spelling(
    env: Env,
    nursery: trio.Nursery,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
    nats_server: str | None,
    pg: str | None,
) -> None:
    """A secret inside a NATS or PostgreSQL URL, however it is spelt, appears neither in the
    API, nor in the logs, nor in `check --connect` output."""
    host = env.nats_url.removeprefix("nats://")
    servers = f'"{(nats_server or env.nats_url).format(host=host)}"'
    pg_url = pg or "postgresql://postgres@127.0.0.1:1/test"
    text = "api: {bind: '127.0.0.1:0'}\nflows:\n" + flow("f", servers, pg_url)
    path = tmp_path / "cdcsync.yaml"
    path.write_text(text, encoding="utf-8")
    checked = await trio.to_thread.run_sync(lambda: cdcsync("check", "--connect", str(path)))
    texts = {"check --connect": checked.stdout + checked.stderr}
    try:
        config = load(text)
    except cfg.ConfigError as exc:
        # A password with a raw '/', '#', '?' or '@' is a malformed URL: refused at load,
        # with the fix and without the secret.
        assert checked.returncode == 1 and "percent-encode" in checked.stderr
        texts["ConfigError"] = str(exc)
        leaked = leaks(texts)
        assert not leaked, f"secret printed in: {sorted(leaked)}\n{leaked}"
        return

    async with env.running(config, nursery, wait_running=False) as running:
        [f] = running.service.flows

        async def failed() -> bool:
            return f.stats.restarts >= 1

        await wait_until(failed, what="the flow failing")
        async with httpx.AsyncClient(base_url=running.api) as client:
            for endpoint in ("/health", "/api/stats", "/api/flows", "/api/flows/f"):
                texts[endpoint] = (await client.get(endpoint)).text
    captured = capfd.readouterr()
    texts["logs"] = captured.out + captured.err
    leaked = leaks(texts)
    assert not leaked, f"secret printed in: {sorted(leaked)}\n{leaked}"


# --------------------------------------------------------------------------- API


async def raw_post(api: str, path: str, size: int, token: bool) -> int:
    """POST a body of ``size`` bytes over a plain socket; the status code of the answer.

    (httpx complains when a server answers before reading the whole upload, which is
    exactly what a size limit should do.)
    """
    host, port = api.removeprefix("http://").rsplit(":", 1)
    stream = await trio.open_tcp_stream(host, int(port))
    async with stream:
        auth = "Authorization: Bearer t0ken\r\n" if token else ""
        head = f"POST {path} HTTP/1.1\r\nHost: {host}\r\n{auth}Content-Length: {size}\r\n\r\n"
        await stream.send_all(head.encode())
        with trio.move_on_after(5):
            try:
                await stream.send_all(b"x" * size)
            except trio.BrokenResourceError:
                pass  # the server answered and closed before taking the whole body
        answer = b""
        with trio.fail_after(5):
            while b"\r\n" not in answer:
                chunk = await stream.receive_some(4096)
                if not chunk:
                    break
                answer += chunk
    return int(answer.split(b" ", 2)[1])


def api_config(env: Env, api: str) -> cfg.Config:
    return load(f"api: {api}\nflows:\n" + textwrap.dedent(env.flow_yaml()))


async def test_api_body_limit_and_token(env: Env, nursery: trio.Nursery) -> None:
    """A request body over 64 KiB is refused with 413 and changes nothing; the reset endpoint
    still needs the bearer token."""
    await env.create_schema(USERS)
    config = api_config(env, "{bind: '127.0.0.1:0', token: t0ken}")
    async with env.running(config, nursery) as running:
        await env.publish(env.subject() + ".users", [envelope("users", "insert", {"id": 1})])
        await env.applied(1)
        auth = {"Authorization": "Bearer t0ken"}
        async with httpx.AsyncClient(base_url=running.api) as client:
            assert (await client.post("/api/stats/reset")).status_code == 401
            for token in (True, False):
                status = await raw_post(running.api, "/api/stats/reset", 1024 * 1024, token)
                assert status == 413, (token, status)
            flows = (await client.get("/api/stats")).json()["flows"]
            assert flows[0]["received"] == 1, "a refused request reset the counters"
            resp = await client.post("/api/stats/reset", content=b"{}", headers=auth)
            assert resp.status_code == 200
            assert resp.json()["flows"][0]["received"] == 0


async def test_no_cors_headers_by_default(env: Env, nursery: trio.Nursery) -> None:
    """Without api.cors_origins no response allows any browser origin."""
    await env.create_schema(USERS)
    async with env.running(api_config(env, "{bind: '127.0.0.1:0'}"), nursery) as running:
        async with httpx.AsyncClient(base_url=running.api) as client:
            for origin in ("http://evil.example", "null", "http://127.0.0.1"):
                headers = {"Origin": origin}
                for resp in (
                    await client.get("/api/stats", headers=headers),
                    await client.get("/health", headers=headers),
                    await client.post("/api/stats/reset", headers=headers),
                    await client.options(
                        "/api/stats/reset",
                        headers={**headers, "Access-Control-Request-Method": "POST"},
                    ),
                ):
                    cors = [h for h in resp.headers if h.lower().startswith("access-control")]
                    assert not cors, (origin, resp.request.method, resp.request.url, cors)


async def test_cors_echoes_only_listed_origins(env: Env, nursery: trio.Nursery) -> None:
    """With api.cors_origins, only a listed origin is echoed in Access-Control-Allow-Origin."""
    await env.create_schema(USERS)
    config = api_config(env, "{bind: '127.0.0.1:0', cors_origins: ['http://dash.example']}")
    async with env.running(config, nursery) as running:
        async with httpx.AsyncClient(base_url=running.api) as client:
            resp = await client.get("/api/stats", headers={"Origin": "http://dash.example"})
            assert resp.headers["Access-Control-Allow-Origin"] == "http://dash.example"
            assert "Origin" in resp.headers.get("Vary", "")
            preflight = await client.options(
                "/api/stats/reset",
                headers={"Origin": "http://dash.example", "Access-Control-Request-Method": "POST"},
            )
            assert preflight.headers["Access-Control-Allow-Origin"] == "http://dash.example"
            for origin in (
                "http://evil.example",
                "http://dash.example.evil.example",
                "http://dash.example:8080",
                "https://dash.example",
                "null",
            ):
                resp = await client.get("/api/stats", headers={"Origin": origin})
                assert "Access-Control-Allow-Origin" not in resp.headers, origin
                assert resp.status_code == 200


# --------------------------------------------------------------------------- NATS credentials


def nkey_pair() -> tuple[str, str]:
    """(seed, public key) of a new NATS user nkey."""
    nkeys = pytest.importorskip("nkeys")
    seed = nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER)
    return seed.decode(), nkeys.from_seed(bytearray(seed)).public_key.decode()


def auth_case(kind: str) -> tuple[str, str, dict[str, Any], str]:
    """(server authorization block, cdcsync source keys, nats-py connect kwargs, wrong keys)."""
    if kind == "user-password":
        return (
            'authorization { user: cdc, password: "SEKRET-pw" }',
            "user: cdc\npassword: SEKRET-pw\n",
            {"user": "cdc", "password": "SEKRET-pw"},
            "user: cdc\npassword: SEKRET-wrong\n",
        )
    if kind == "token":
        return (
            'authorization { token: "SEKRET-tok" }',
            "token: SEKRET-tok\n",
            {"token": "SEKRET-tok"},
            "token: SEKRET-wrong\n",
        )
    seed, public = nkey_pair()
    other_seed, _ = nkey_pair()
    return (
        f'authorization {{ users = [ {{ nkey: "{public}" }} ] }}',
        f"nkey_seed: {seed}\n",
        {"nkeys_seed_str": seed},
        f"nkey_seed: {other_seed}\n",
    )


@pytest.mark.parametrize("kind", ["user-password", "token", "nkey"])
async def test_nats_credentials_deliver_events(
    env: Env, nursery: trio.Nursery, tmp_path: Path, kind: str
) -> None:
    """With the right NATS credentials, events from a server that requires them land."""
    server_auth, source_auth, client_auth, _ = auth_case(kind)
    await env.create_schema(USERS)
    with throwaway_nats(tmp_path, server_auth) as url:
        js = f"jetstream: {{stream: {env.stream}, durable: {env.unique}}}\n"
        text = "api: {enabled: false}\nflows:\n" + flow(
            "f", f'"{url}"', env.pg_url, auth=source_auth, jetstream=js, schema=env.schema
        )
        async with env.running(load(text), nursery):
            events = [envelope("users", "insert", {"id": i, "name": kind}) for i in (1, 2, 3)]
            await publish(url, "f.users", events, **client_auth)
            await wait_rows(env, [1, 2, 3])


@pytest.mark.slow
def test_wrong_nats_credentials_are_reported_clearly(tmp_path: Path, pg_url: str) -> None:
    """`check --connect` with wrong NATS credentials exits 1 naming the flow and an
    authorization failure, without printing any secret."""
    kinds = ["user-password", "token"]
    if importlib.util.find_spec("nkeys") is not None:  # nats-py needs it for nkey_seed
        kinds.append("nkey")
    secrets: dict[str, str] = {}
    with ExitStack() as stack:
        runs = {}
        for kind in kinds:
            server_auth, _, _, wrong = auth_case(kind)
            secrets[kind] = wrong.strip().splitlines()[-1].split(": ", 1)[1]
            url = stack.enter_context(throwaway_nats(tmp_path, server_auth))
            path = tmp_path / f"{kind}.yaml"
            path.write_text("flows:\n" + flow("f", f'"{url}"', pg_url, auth=wrong))
            runs[kind] = spawn("check", "--connect", str(path), out=tmp_path / kind)
        for proc in runs.values():
            proc.wait(60)
    reports = {}
    for kind, proc in runs.items():
        text = outputs(tmp_path / kind)
        problems = [line for line in text.splitlines() if "flow 'f':" in line]
        reports[kind] = (proc.returncode, problems, secrets[kind] in text)
    clear = {
        kind: (code, problems, leaked)
        for kind, (code, problems, leaked) in reports.items()
        if code == 1 and not leaked and any("authoriz" in p.lower() for p in problems)
    }
    assert clear == reports, reports


# --------------------------------------------------------------------------- TLS


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_certs(d: Path) -> None:
    """A throwaway CA, a server certificate for 127.0.0.1/localhost and a client certificate."""
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
            "-subj", "/CN=cdcsync test CA",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)  # fmt: skip
    for name, usage in (("server", "serverAuth"), ("client", "clientAuth")):
        openssl("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr",
                "-subj", f"/CN={name}", cwd=d)  # fmt: skip
        (d / f"{name}.ext").write_text(
            "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
            f"extendedKeyUsage={usage}\nbasicConstraints=CA:FALSE\n"
        )
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                "-CAcreateserial", "-out", f"{name}.pem", "-days", "2",
                "-extfile", f"{name}.ext", cwd=d)  # fmt: skip


@contextmanager
def tls_postgres(certs: Path) -> Iterator[PostgresServer]:
    """A throwaway PostgreSQL that accepts only TLS connections (hostssl) over TCP."""
    pg = PostgresServer()
    try:
        pg.start()
        owner = os.stat(pg.data_dir)
        for name in ("server.pem", "server.key"):
            target = pg.data_dir / name
            target.write_bytes((certs / name).read_bytes())
            os.chown(target, owner.st_uid, owner.st_gid)
            target.chmod(0o600)
        with open(pg.data_dir / "postgresql.conf", "a") as conf:
            conf.write("ssl = on\nssl_cert_file = 'server.pem'\nssl_key_file = 'server.key'\n")
        (pg.data_dir / "pg_hba.conf").write_text(
            "local all all trust\nhostssl all all 127.0.0.1/32 trust\n"
        )
        pg.restart()
        yield pg
    finally:
        pg.close()


async def test_tls_to_nats_and_postgresql(env: Env, nursery: trio.Nursery, tmp_path: Path) -> None:
    """Events travel from a NATS server that requires mutual TLS into a PostgreSQL that accepts
    only TLS, with the CA and client certificate in `tls:` and `sslmode=require` in the URL."""
    make_certs(tmp_path)
    c = {n: tmp_path / n for n in ("ca.pem", "server.pem", "server.key", "client.pem")}
    client_key = tmp_path / "client.key"
    nats_tls = (
        f'tls {{ cert_file: "{c["server.pem"]}", key_file: "{c["server.key"]}", '
        f'ca_file: "{c["ca.pem"]}", verify: true, timeout: 5 }}'
    )
    with throwaway_nats(tmp_path, nats_tls) as url, tls_postgres(tmp_path) as pg:
        plain = pg.url_for("postgres")
        with pytest.raises(Exception, match=r"(?i)no pg_hba\.conf entry|ssl"):
            await env.sql("SELECT 1", url=f"{plain}?sslmode=disable")
        secure = f"{plain}?sslmode=require"
        await env.create_schema(USERS, url=secure)
        js = f"jetstream: {{stream: {env.stream}, durable: {env.unique}}}\n"
        tls = f'tls: {{ca: "{c["ca.pem"]}", cert: "{c["client.pem"]}", key: "{client_key}"}}\n'
        text = "api: {enabled: false}\nflows:\n" + flow(
            "f", f'"{url}"', secure, auth=tls, jetstream=js, schema=env.schema
        )
        ctx = ssl.create_default_context(cafile=str(c["ca.pem"]))
        ctx.load_cert_chain(str(c["client.pem"]), str(client_key))
        async with env.running(load(text), nursery):
            events = [envelope("users", "insert", {"id": i, "name": "tls"}) for i in (1, 2)]
            await publish(url, "f.users", events, tls=ctx)
            await wait_rows(env, [1, 2], url=secure)
            used = await env.sql(
                "SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) "
                "WHERE a.application_name LIKE 'cdcsync:%'",
                url=secure,
            )
            assert [r[0] for r in used] == [True]
