"""`cdcsync dlq list | replay | purge` against real dead letters in PostgreSQL and MySQL."""

from __future__ import annotations

import sys
from pathlib import Path

import trio
from harness import Env, envelope


async def dlq(config: Path, *args: str) -> tuple[int, str, str]:
    result = await trio.run_process(
        [sys.executable, "-m", "cdcsync", "dlq", *args, "-c", str(config)],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    return result.returncode, result.stdout.decode(), result.stderr.decode()


async def test_replay_applies_fixed_letters_and_keeps_the_rest(
    env: Env, nursery: trio.Nursery, tmp_path: Path, target: str
) -> None:
    """Replay removes exactly the letters it applied; the rest stay with their new reason."""
    await env.create_schema("CREATE TABLE users (id int PRIMARY KEY, name text);")
    subject = env.subject() + ".x"
    events = [
        envelope("users", "insert", {"id": 1, "name": "ok"}),
        envelope("orders", "insert", {"id": 10, "total": 5}),  # table does not exist yet
        envelope("orders", "insert", {"id": 11, "total": "lots"}),  # will not fit numeric
        envelope("users", "insert", {"id": 2, "name": "ok", "nickname": "x"}),  # no such column
    ]
    flow = env.flow_yaml()
    text = "api:\n  enabled: false\nflows:\n" + flow
    config_path = tmp_path / "cdcsync.yaml"
    config_path.write_text(text)
    async with env.running(env.config(flow), nursery):
        await env.publish(subject, events)
        await env.applied(4)
    assert len(await env.dead_letters()) == 3

    code, out, _ = await dlq(config_path, "list")
    assert code == 0
    assert "unknown table 'orders'" in out and "unknown column(s) 'nickname'" in out

    await env.execute(f"CREATE TABLE {env.schema}.orders (id int PRIMARY KEY, total numeric)")
    code, out, err = await dlq(config_path, "replay", "--all")
    assert code == 0, err
    assert "applied 1, still failing 2" in out
    assert await env.rows("orders") == [{"id": 10, "total": 5}]
    left = await env.dead_letters()
    assert sorted(d["payload"] for d in left) == sorted([events[2], events[3]])
    refused = (
        "1366: Incorrect decimal value" if env.mysql else "invalid input syntax for type numeric"
    )
    assert any(refused in d["error"] for d in left)

    await env.execute(f"ALTER TABLE {env.schema}.users ADD COLUMN nickname text")
    one = next(d["id"] for d in left if d["payload"] == events[3])
    code, out, _ = await dlq(config_path, "replay", "--id", str(one))
    assert code == 0 and "applied 1, still failing 0" in out
    assert (await env.rows("users"))[-1] == {"id": 2, "name": "ok", "nickname": "x"}

    code, out, _ = await dlq(config_path, "purge", "--before", "2000-01-01")
    assert code == 0 and "purged 0" in out
    code, out, _ = await dlq(config_path, "purge", "--before", "2999-01-01")
    assert code == 0 and "purged 1" in out
    assert await env.dead_letters() == []


async def test_dlq_rejects_an_unknown_flow(env: Env, tmp_path: Path) -> None:
    """Naming a flow that the config does not have is an error, not an empty success."""
    config_path = tmp_path / "cdcsync.yaml"
    config_path.write_text("flows:\n" + env.flow_yaml())
    code, _, err = await dlq(config_path, "list", "--flow", "nope")
    assert code == 1 and "no destination matches" in err


async def test_replay_of_an_id_that_does_not_exist_says_so(
    env: Env, nursery: trio.Nursery, tmp_path: Path, target: str
) -> None:
    """`replay --id N` for an id no selected destination has printed "applied 0" and exited 0;
    now it names the missing ids and exits 1, after replaying the ids that do exist."""
    await env.create_schema("CREATE TABLE users (id int PRIMARY KEY, name text);")
    flow = env.flow_yaml()
    config_path = tmp_path / "cdcsync.yaml"
    config_path.write_text("api:\n  enabled: false\nflows:\n" + flow)

    code, out, err = await dlq(config_path, "replay", "--id", "987654321")
    assert code == 1, out + err
    assert "no dead letter with id 987654321" in err and "applied" not in out

    async with env.running(env.config(flow), nursery):
        await env.publish(env.subject() + ".x", [envelope("users", "insert", {"id": 1, "x": 2})])
        await env.applied(1)
    [letter] = await env.dead_letters()
    await env.execute(f"ALTER TABLE {env.schema}.users ADD COLUMN x int")
    code, out, err = await dlq(
        config_path, "replay", "--id", str(letter["id"]), "--id", "987654321"
    )
    assert code == 1, out + err
    assert "applied 1, still failing 0" in out
    assert "no dead letter with id 987654321 in the selected" in err  # only the missing one
    assert await env.rows("users") == [{"id": 1, "name": None, "x": 2}]
