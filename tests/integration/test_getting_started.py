"""docs/getting-started.md runs as written: every command of "Your own NATS and PostgreSQL",
in order, against real servers, prints what the page says it prints.

The page is the script: its ```sh blocks are executed by bash (with NATS_URL and
DATABASE_URL pointing at throwaway servers, because the guide's stream `CDC` on
`cdc.users.>` would collide with the example config's stream on a shared NATS), the
```yaml edit is applied, `cdcsync serve` runs in the background, and each plain block
after a command is compared with that command's output. Only the volatile parts (the
database URL, timestamps) are masked.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from servers import NatsServer, PostgresServer, free_port

ROOT = Path(__file__).resolve().parents[2]
GUIDE = ROOT / "docs" / "getting-started.md"
BIN = Path(sys.executable).parent

pytestmark = pytest.mark.skipif(shutil.which("psql") is None, reason="the guide uses psql")


def steps() -> list[tuple[str, str]]:
    """(kind, text) for each fenced block of the walkthrough section, in order."""
    text = GUIDE.read_text(encoding="utf-8")
    section = text.split("## 2. Your own NATS and PostgreSQL", 1)[1].split("\n## Next", 1)[0]
    return re.findall(r"```(\w*)\n(.*?)```", section, flags=re.S)


def mask(line: str) -> str:
    line = re.sub(r"\(postgresql://[^)]*\)", "(URL)", line)
    line = re.sub(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", "TIME", line)
    return line.rstrip()


def shown_in(expected: str, actual: str) -> bool:
    """Every line the guide shows appears in the output, in the same order."""
    want = [mask(x) for x in expected.strip("\n").splitlines() if x.strip()]
    have = iter(mask(x) for x in actual.splitlines())
    return all(any(w == h for h in have) for w in want)


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[str, str]]:
    with NatsServer() as nats, PostgresServer() as pg:
        yield nats.url, pg.url


READ_ONLY = ('psql "$DATABASE_URL" -c \'SELECT', "curl ", "cdcsync dlq list", "cdcsync check")


def run(command: str, cwd: Path, env: dict[str, str]) -> str:
    done = subprocess.run(
        command, shell=True, cwd=cwd, env=env, capture_output=True, text=True, timeout=60
    )
    return done.stdout + done.stderr


def test_the_walkthrough_runs_as_written(servers: tuple[str, str], tmp_path: Path) -> None:
    """Generate, edit, check (fails, then passes), create the table, serve, publish, read
    the rows, dead-letter, replay: each output block of the guide matches the real output,
    and Ctrl-C stops the service with exit code 0."""
    nats_url, pg_url = servers
    local = f"127.0.0.1:{free_port()}"
    path = os.environ["PATH"]
    env = {**os.environ, "PATH": f"{BIN}:{path}", "NATS_URL": nats_url, "DATABASE_URL": pg_url}
    serve: subprocess.Popen[bytes] | None = None
    last, output = "", ""
    commands = compared = 0
    try:
        for kind, body in steps():
            if kind == "sh":
                for line in body.splitlines():
                    command = line.split("  #", 1)[0].strip().replace("127.0.0.1:8080", local)
                    if not command or command.startswith(("export ", "mkdir ", "scripts/dev")):
                        continue  # the test provides the environment and the directory
                    commands += 1
                    if command.startswith("cdcsync serve"):
                        serve = subprocess.Popen(
                            shlex.split(command),
                            cwd=tmp_path,
                            env=env,
                            start_new_session=True,
                            stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL,
                        )
                        last = ""
                        continue
                    last, output = command, run(command, tmp_path, env)
            elif kind == "yaml":
                config = tmp_path / "cdcsync.yaml"
                text = config.read_text()
                edited = re.sub(r"#\s*tables: \{users: app_users\}.*", body.strip(), text)
                assert edited != text, "the guide's edit no longer matches generate-config"
                config.write_text(edited.replace("127.0.0.1:8080", local))
            elif last:
                # A read-only command is repeated while the service catches up.
                deadline = time.monotonic() + 20
                while not shown_in(body, output) and time.monotonic() < deadline:
                    if not last.startswith(READ_ONLY):
                        break
                    time.sleep(0.3)
                    output = run(last, tmp_path, env)
                assert shown_in(body, output), f"{last}\n--- guide:\n{body}--- got:\n{output}"
                compared += 1
        assert serve is not None and serve.poll() is None, "cdcsync serve is not running"
        assert commands >= 12 and compared >= 7
        serve.send_signal(signal.SIGINT)  # Ctrl-C
        assert serve.wait(timeout=30) == 0
    finally:
        if serve is not None and serve.poll() is None:
            os.killpg(serve.pid, signal.SIGKILL)
            serve.wait()
