"""The API's connections and errors as a client on a raw socket meets them, against a real
`cdcsync serve`: closed when they should be, bounded, and every error one JSON log line
without a secret in it."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import psutil
import pytest
import trio
from cdcproc import REPO, CdcProcess
from harness import Env
from servers import free_port

from cdcsync.api import app as api_app

Answer = tuple[bytes, str]  # what arrived, and how it ended: "closed", "reset" or "open"


def config(env: Env, tmp_path: Path, api: str, flows: str | None = None) -> Path:
    path = tmp_path / "cdcsync.yaml"
    path.write_text(f"api: {api}\nflows:\n" + (flows or env.flow_yaml()))
    return path


def wait_for_api(port: int, proc: subprocess.Popen[bytes] | None, log: Path) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/stats", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert proc is None or proc.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.1)


@contextmanager
def serving(cfg: Path, tmp_path: Path, port: int) -> Iterator[CdcProcess]:
    """`cdcsync serve` on ``port``, its API answering, stopped on exit."""
    proc = CdcProcess(cfg, tmp_path / "serve.log").start()
    try:
        wait_for_api(port, proc.proc, proc.log_path)
        yield proc
    finally:
        proc.stop()


def connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=5)


def read_until_closed(sock: socket.socket, within: float) -> Answer:
    """Read until the server closes (EOF or reset) or ``within`` seconds pass."""
    sock.settimeout(0.1)
    got = b""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        except ConnectionResetError:
            return got, "reset"
        if not chunk:
            return got, "closed"
        got += chunk
    return got, "open"


def get(path: str, *headers: str) -> bytes:
    head = "".join(f"{h}\r\n" for h in headers)
    return f"GET {path} HTTP/1.1\r\nHost: cdcsync\r\n{head}\r\n".encode()


def open_files(proc: CdcProcess) -> int:
    return psutil.Process(proc.pid).num_fds()


def status(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


async def in_thread(env: Env, body: Callable[[], None]) -> None:
    """Run a blocking test body (raw sockets) with the test's schema created."""
    await env.create_schema()
    await trio.to_thread.run_sync(body)


async def test_connection_close_and_idle_connections_are_closed(env: Env, tmp_path: Path) -> None:
    """After a response to `Connection: close` the server closes at once (100 such requests
    raised the process's open files by 100 before); an idle keep-alive connection, and one
    that never sends a request, are closed after `api.keep_alive_s`."""

    def body() -> None:
        port = free_port()
        cfg = config(env, tmp_path, f"{{bind: '127.0.0.1:{port}', keep_alive_s: 2}}")
        with serving(cfg, tmp_path, port) as proc:
            baseline = open_files(proc)
            socks = []
            for _ in range(100):
                sock = connect(port)
                sock.sendall(get("/api/stats", "Connection: close"))
                socks.append(sock)
            for sock in socks:  # the clients keep their ends open
                answer, end = read_until_closed(sock, within=3)
                assert status(answer) == 200 and end == "closed", (answer[:200], end)
            assert open_files(proc) <= baseline + 2, (baseline, open_files(proc))
            for sock in socks:
                sock.close()

            kept = connect(port)
            kept.sendall(get("/api/stats"))
            silent = connect(port)
            started = time.monotonic()
            answer, end = read_until_closed(kept, within=6)
            kept_for = time.monotonic() - started
            assert status(answer) == 200 and end == "closed", (answer[:200], end)
            assert 1.5 < kept_for < 4, kept_for
            assert read_until_closed(silent, within=2)[1] == "closed"
            kept.close()
            silent.close()

    await in_thread(env, body)


async def test_a_refused_upload_is_answered_and_closed(env: Env, tmp_path: Path) -> None:
    """A client that keeps sending a body over the limit gets its 413 and a closed
    connection (it was left sending into a connection the server only drained)."""

    def body() -> None:
        port = free_port()
        cfg = config(env, tmp_path, f"{{bind: '127.0.0.1:{port}'}}")
        with serving(cfg, tmp_path, port):
            sock = connect(port)
            sock.sendall(
                b"POST /api/stats/reset HTTP/1.1\r\nHost: cdcsync\r\n"
                b"Content-Length: 100000000\r\n\r\n"
            )
            sock.settimeout(0.05)
            got, end = b"", "open"
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and end == "open":
                try:
                    sock.send(b"x" * 65536)
                except TimeoutError:
                    pass
                except (BrokenPipeError, ConnectionResetError):
                    end = "closed while sending"
                try:
                    chunk = sock.recv(65536)
                    if not chunk:
                        end = "closed"
                    got += chunk
                except TimeoutError:
                    pass
                except ConnectionResetError:
                    end = "reset"
            sock.close()
        assert got.startswith(b"HTTP/1.1 413"), got[:200]
        assert end != "open", "the connection stayed open for 10 s after the 413"

    await in_thread(env, body)


async def test_open_connections_are_bounded(env: Env, tmp_path: Path) -> None:
    """With `api.max_connections: 10`, 40 idle clients hold at most 10 of the process's file
    descriptors; the others wait in the listen queue and are served (then closed) in turn."""

    def body() -> None:
        port = free_port()
        api = f"{{bind: '127.0.0.1:{port}', keep_alive_s: 1, max_connections: 10}}"
        with serving(config(env, tmp_path, api), tmp_path, port) as proc, ExitStack() as stack:
            baseline = open_files(proc)
            socks = [stack.enter_context(connect(port)) for _ in range(40)]
            time.sleep(0.5)
            assert open_files(proc) <= baseline + 10, (baseline, open_files(proc))
            waiting = connect(port)
            stack.enter_context(waiting)
            waiting.sendall(get("/api/stats", "Connection: close"))
            answer, end = read_until_closed(waiting, within=15)
            assert status(answer) == 200 and end == "closed", (answer[:200], end)
            ends = [read_until_closed(s, within=10)[1] for s in socks]
            assert ends == ["closed"] * 40, ends
            assert open_files(proc) <= baseline + 2

    await in_thread(env, body)


async def test_an_overlong_path_is_404_and_every_log_line_is_json(
    env: Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A path segment over 255 characters answered 500 and logged a 50-line plain-text
    traceback (File name too long); it is a 404, and the log stays JSON lines."""

    def body() -> None:
        dist = tmp_path / "dist"
        (dist / "assets").mkdir(parents=True)
        (dist / "index.html").write_text("<!doctype html><div id=root>")
        port = free_port()
        cfg = config(env, tmp_path, f"{{bind: '127.0.0.1:{port}'}}")
        monkeypatch.setenv("CDCSYNC_DASHBOARD_DIR", str(dist))
        with serving(cfg, tmp_path, port) as proc:
            long = "a" * 300
            with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
                codes = {
                    p: client.get(p).status_code
                    for p in (
                        f"/{long}",
                        f"/assets/{long}.js",
                        f"/flows/{long}",
                        f"/api/flows/{long}",
                    )
                }
                assert client.get("/flows/users").status_code == 200  # client routes still work
        assert set(codes.values()) == {404}, codes
        lines = proc.log_path.read_text().splitlines()
        assert lines and all(isinstance(json.loads(line), dict) for line in lines), lines[:20]

    await in_thread(env, body)


def patched_serve(cfg: Path, log: Path, *patches: str) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        return subprocess.Popen(
            [sys.executable, str(REPO / "tests" / "patched_serve.py"), *patches, "--",
             "serve", str(cfg), "--log-format", "json"],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, cwd=REPO,
        )  # fmt: skip


@contextmanager
def running(proc: subprocess.Popen[bytes], port: int, log: Path) -> Iterator[None]:
    try:
        wait_for_api(port, proc, log)
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def test_an_unexpected_api_error_is_one_json_log_line(env: Env, tmp_path: Path) -> None:
    """An error no handler expected (here a route that raises) answers a JSON 500 and logs
    one JSON line with the traceback inside, never Quart's plain-text traceback."""

    def body() -> None:
        port = free_port()
        cfg = config(env, tmp_path, f"{{bind: '127.0.0.1:{port}'}}")
        log = tmp_path / "serve.log"
        with running(patched_serve(cfg, log, "--boom"), port, log):
            resp = httpx.get(f"http://127.0.0.1:{port}/api/boom", timeout=5)
            assert resp.status_code == 500 and "error" in resp.json()
            assert httpx.get(f"http://127.0.0.1:{port}/api/stats", timeout=5).status_code == 200
        lines = log.read_text().splitlines()
        records = [json.loads(line) for line in lines]  # every line is JSON
        failed = [r for r in records if r.get("event") == "api request failed"]
        assert len(failed) == 1 and failed[0]["path"] == "/api/boom", records
        assert "RuntimeError: boom" in failed[0]["exception"]

    await in_thread(env, body)


SECRET = "S3cret"
PASSWORDS = {"slash": "S3cret/Pr0be", "hash": "S3cret#Pr0be", "qmark": "S3cret?Pr0be",
             "at": "S3cret@Pr0be"}  # fmt: skip


@pytest.mark.slow
async def test_a_malformed_password_that_reaches_a_running_service_is_never_shown(
    env: Env, tmp_path: Path
) -> None:
    """Redaction does not trust the URL to parse: with a password holding a raw '/', '#',
    '?' or '@' in a PostgreSQL URL and in a NATS server URL (handed to the service after
    validation, as an embedding program could), the flows fail and restart, and neither the
    API's responses nor any JSON log line contain any part of it."""

    def body() -> None:
        port = free_port()
        closed = free_port()
        host = env.nats_url.removeprefix("nats://")
        flows = "".join(
            env.flow_yaml(f"pg{name}") + env.flow_yaml(f"nats{name}") for name in PASSWORDS
        )
        cfg = config(env, tmp_path, f"{{bind: '127.0.0.1:{port}'}}", flows)
        patches = []
        for name, password in PASSWORDS.items():
            patches += [
                "--url",
                f"pg{name}=postgresql://postgres:{password}@127.0.0.1:{closed}/test",
            ]
            patches += ["--server", f"nats{name}=nats://cdc:{password}@{host}"]
        log = tmp_path / "serve.log"
        bodies = {}
        with running(patched_serve(cfg, log, *patches), port, log):
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 30
            while True:  # until every flow failed at least twice
                stats = httpx.get(f"{base}/api/stats", timeout=5).json()
                if all(f["restarts"] >= 2 for f in stats["flows"] if f["name"].startswith("pg")):
                    break
                assert time.monotonic() < deadline, stats
                time.sleep(0.3)
            for endpoint in ("/health", "/api/stats", "/api/flows", "/api/history",
                             *(f"/api/flows/pg{n}" for n in PASSWORDS),
                             *(f"/api/flows/nats{n}" for n in PASSWORDS)):  # fmt: skip
                bodies[endpoint] = httpx.get(base + endpoint, timeout=5).text
        lines = log.read_text().splitlines()
        assert all(isinstance(json.loads(line), dict) for line in lines)
        assert any("flow restarting" in line for line in lines)
        leaked = {
            where: text
            for where, text in {
                **bodies,
                **{f"log line {i}": line for i, line in enumerate(lines)},
            }.items()
            if SECRET in text or "Pr0be" in text
        }
        assert not leaked, leaked

    await in_thread(env, body)


async def test_a_trickling_request_body_is_cut_off(
    env: Env, nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A POST whose body arrives a byte a second held its connection for ever (no timeout
    applies while a request is in progress); it gets 408 and a close after the body timeout."""
    monkeypatch.setattr(api_app, "BODY_TIMEOUT_S", 1, raising=False)
    await env.create_schema()
    async with env.running(env.config(), nursery, wait_running=False) as running:
        host, port = running.api.removeprefix("http://").rsplit(":", 1)
        stream = await trio.open_tcp_stream(host, int(port))
        async with stream:
            await stream.send_all(
                b"POST /api/stats/reset HTTP/1.1\r\nHost: cdcsync\r\nContent-Length: 100\r\n\r\n"
            )
            got, closed = b"", False
            with trio.move_on_after(8):
                while not closed:
                    with trio.move_on_after(0.5):
                        chunk = await stream.receive_some(65536)
                        closed = not chunk
                        got += chunk
                    if not closed:
                        await stream.send_all(b"x")
    assert got.startswith(b"HTTP/1.1 408"), got[:200]
    assert closed, "the connection stayed open after the 408"
