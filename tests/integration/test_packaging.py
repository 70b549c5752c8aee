"""The packages a user installs carry the dashboard (issue 11): `python -m build` makes the
sdist, a wheel is built from that sdist on a PATH without Node.js, both pass `twine check`,
and the wheel, installed into a fresh virtualenv in a temporary directory outside the
checkout, runs `cdcsync serve` with the dashboard at `/`, moves an event into PostgreSQL and
stops with exit code 0 on SIGTERM.

The builds are isolated (the build backend comes from the package index, as for a user) and
the install resolves the wheel's declared dependencies, so a missing one fails here.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import httpx
import pytest
import trio
from harness import Env, envelope

from cdcsync.api import dashboard
from cdcsync.bridge import aio

REPO = Path(__file__).resolve().parents[2]
PY = sys.executable
ASSET = re.compile(r'(?:src|href)="/(assets/[\w.-]+-[\w-]{8,}\.(?:js|css))"')


def run(argv: list[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> str:
    """Run a command to completion; its output, or the test fails with it."""
    done = subprocess.run(
        argv, capture_output=True, text=True, timeout=300, env=env, cwd=cwd, check=False
    )
    assert done.returncode == 0, f"{' '.join(argv)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


@pytest.fixture(scope="module")
def packages(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(sdist, wheel): the sdist from the checkout, the wheel from the unpacked sdist with
    no node or npm on PATH (installing from an sdist must not need Node.js)."""
    if not (REPO / "dashboard" / "dist" / "index.html").is_file() and not shutil.which("npm"):
        reason = "no npm and no dashboard/dist: the packages cannot carry a dashboard"
        if os.environ.get("CI"):
            pytest.fail(f"{reason} (CI is set: the packaging test must run)")
        pytest.skip(reason)
    out = tmp_path_factory.mktemp("dist")
    run([PY, "-m", "build", "--sdist", "--outdir", str(out), str(REPO)])
    (sdist,) = out.glob("cdcsync-*.tar.gz")
    with tarfile.open(sdist) as tar:
        tar.extractall(out / "src", filter="data")
    (unpacked,) = (out / "src").iterdir()
    bare = out / "bin"  # PATH: only this interpreter, no node, no npm
    bare.mkdir()
    (bare / "python").symlink_to(PY)
    log = run(
        [PY, "-m", "build", "--wheel", "--outdir", str(out), str(unpacked)],
        env={**os.environ, "PATH": str(bare)},
    )
    assert "no built dashboard" not in log
    (wheel,) = out.glob("cdcsync-*.whl")
    return sdist, wheel


@pytest.fixture(scope="module")
def installed(packages: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv outside the checkout with the wheel installed; its bin directory."""
    venv = tmp_path_factory.mktemp("user") / "venv"
    run([PY, "-m", "venv", str(venv)])
    run([str(venv / "bin" / "pip"), "install", "--disable-pip-version-check", str(packages[1])])
    return venv / "bin"


def test_the_sdist_and_the_wheel_carry_the_built_dashboard(packages: tuple[Path, Path]) -> None:
    """Both pass `twine check`; the wheel holds index.html and the content-hashed assets it
    names (as package data), the sdist the same files under dashboard/dist."""
    sdist, wheel = packages
    assert "PASSED" in run([PY, "-m", "twine", "check", "--strict", str(sdist), str(wheel)])
    names = set(zipfile.ZipFile(wheel).namelist())
    index = zipfile.ZipFile(wheel).read("cdcsync/_dashboard/index.html").decode()
    assets = ASSET.findall(index)
    assert {a.rsplit(".", 1)[1] for a in assets} == {"js", "css"}, index
    assert {f"cdcsync/_dashboard/{a}" for a in assets} <= names
    with tarfile.open(sdist) as tar:
        members = {m.name.split("/", 1)[1] for m in tar.getmembers()}
    assert {"dashboard/dist/index.html", *(f"dashboard/dist/{a}" for a in assets)} <= members
    assert {"hatch_build.py", "dashboard/package-lock.json"} <= members


async def test_the_installed_wheel_serves_the_dashboard_outside_the_checkout(
    installed: Path, env: Env, tmp_path: Path
) -> None:
    """`cdcsync serve` from the fresh virtualenv, started in a temporary directory: `/` is
    the dashboard (not the "not built" page), its script is served, an event reaches its
    table, and SIGTERM stops it with exit code 0."""
    code = "import cdcsync; print(cdcsync.__file__)"
    where = run([str(installed / "python"), "-c", code], cwd=tmp_path)
    assert Path(where.strip()).is_relative_to(installed.parent), where
    await env.create_schema("CREATE TABLE items (id int PRIMARY KEY, name text);")
    config = tmp_path / "cfg.yaml"
    config.write_text("api:\n  bind: 127.0.0.1:0\nflows:\n" + env.flow_yaml())
    user_env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    user_env.pop("CDCSYNC_DASHBOARD_DIR", None)
    logs = tmp_path / "serve.log"
    with logs.open("wb") as out:
        proc = await trio.lowlevel.open_process(
            [str(installed / "cdcsync"), "serve", str(config), "--log-format", "json"],
            cwd=tmp_path,
            env=user_env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        api = await _api_address(proc, logs)
        async with httpx.AsyncClient(base_url=api) as client:
            page = await client.get("/")
            assert page.status_code == 200, page.text
            assert "not built" not in page.text and '<div id="root">' in page.text
            (script,) = [a for a in ASSET.findall(page.text) if a.endswith(".js")]
            asset = await client.get(f"/{script}")
        assert asset.status_code == 200 and "javascript" in asset.headers["content-type"]
        assert len(asset.content) > 10_000 and "immutable" in asset.headers["cache-control"]
        event = envelope("items", "insert", {"id": 7, "name": "from the wheel"})
        publish = [str(installed / "cdcsync"), "publish", f"{env.subject()}.x", event.decode()]
        await trio.run_process([*publish, "--server", env.nats_url], capture_stderr=True)
        await env.applied(1)
        assert await env.rows("items") == [{"id": 7, "name": "from the wheel"}]
        proc.send_signal(signal.SIGTERM)
        with trio.fail_after(30):
            assert await proc.wait() == 0, logs.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            await proc.wait()
        await aio((await env.nc()).jetstream().delete_stream, env.stream)


async def _api_address(proc: trio.Process, logs: Path) -> str:
    """The API's address from the `api listening` log line, once every flow has started."""
    with trio.fail_after(30):
        while True:
            text = await trio.Path(logs).read_text()
            assert proc.poll() is None, f"cdcsync exited: {text}"
            events = [json.loads(x) for x in text.splitlines() if x.startswith("{")]
            binds = [b for e in events if e.get("event") == "api listening" for b in e["binds"]]
            if binds and any(e.get("event") == "cdcsync started" for e in events):
                return str(binds[0])
            await trio.sleep(0.1)


async def test_a_package_built_without_the_dashboard_says_so(
    env: Env, nursery: trio.Nursery, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Installed from a package that has no dashboard (built where npm was missing), `/`
    says that, and how to get one, instead of naming a repository that is not there."""
    monkeypatch.delenv(dashboard.ENV_VAR, raising=False)
    monkeypatch.setattr(dashboard, "PACKAGED", tmp_path / "site-packages" / "_dashboard")
    monkeypatch.setattr(dashboard, "CHECKOUT", tmp_path / "no-checkout")
    await env.create_schema("CREATE TABLE items (id int PRIMARY KEY);")
    async with (
        env.running(env.config(), nursery) as running,
        httpx.AsyncClient(base_url=running.api) as client,
    ):
        page = await client.get("/")
    assert page.status_code == 200
    assert "package was built without its dashboard" in page.text
    assert dashboard.ENV_VAR in page.text and "npm --prefix dashboard" not in page.text
