"""`cdcsync check --connect` on Kafka flows: every failure said in plain words with its fix,
on the line of the flow's source, and nothing created on the broker."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import trio
from kafkakit import aio_create_topic, aio_topics
from servers import TansuBroker, free_port

from cdcsync.bridge import aio, open_bridge


def check(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cdcsync", "check", "--connect", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def flow(name: str, brokers: str, topic: str, pg_url: str, extra: str = "") -> str:
    return f"""
  - name: {name}
    source:
      type: kafka
      brokers: ["{brokers}"]
      topics: ["{topic}"]
      group: g-{name}{extra}
    destinations:
      - name: primary
        type: postgres
        url: "{pg_url}"
"""


async def _setup(bootstrap: str, topic: str) -> None:
    async with open_bridge():
        await aio(aio_create_topic, bootstrap, topic, 4)


async def _topics(bootstrap: str) -> set[str]:
    async with open_bridge():
        return await aio(aio_topics, bootstrap)


def test_check_connect_says_what_is_wrong_with_kafka_and_the_fix(
    tmp_path: Path, kafka_broker: TansuBroker, pg_url: str, unique: str
) -> None:
    """A missing topic (not created by the check), a broker that is down, SASL refused
    (SCRAM and PLAIN against a broker that requires SCRAM, and no SASL at all): one line
    each with the fix; a flow whose topic exists passes."""
    trio.run(_setup, kafka_broker.bootstrap, f"{unique}.ok")
    down = f"127.0.0.1:{free_port()}"
    scram = "\n      sasl: {mechanism: SCRAM-SHA-256, username: cdc, password: s3cr3t-w0rd}"
    plain = "\n      sasl: {mechanism: PLAIN, username: cdc, password: s3cr3t-w0rd}"
    with TansuBroker(authentication=True) as secured:
        path = tmp_path / "kafka.yaml"
        path.write_text(
            "flows:"
            + flow("ok", kafka_broker.bootstrap, f"{unique}.ok", pg_url)
            + flow("missing", kafka_broker.bootstrap, f"{unique}.nope", pg_url)
            + flow("down", down, f"{unique}.ok", pg_url)
            + flow("scram", secured.bootstrap, f"{unique}.ok", pg_url, scram)
            + flow("plain", secured.bootstrap, f"{unique}.ok", pg_url, plain)
            + flow("nosasl", secured.bootstrap, f"{unique}.ok", pg_url)
        )
        result = check(path)
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    text = "\n".join(lines)

    def line_of(*needles: str) -> str:
        found = [line for line in lines if all(n in line for n in needles)]
        assert len(found) == 1, f"not one line with {needles}:\n{text}"
        return found[0]

    assert not any("'ok'" in line for line in lines), text
    line_of("'missing'", f"'{unique}.nope' does not exist", "fix: create it", "correct 'topics'")
    line_of("'down'", "cannot reach any Kafka broker", down, "fix: start the brokers")
    line_of("'scram'", "refused the SASL login (SCRAM-SHA-256, user 'cdc')", "fix: correct sasl")
    line_of("'plain'", "refused the SASL login (PLAIN, user 'cdc')", "fix: correct sasl")
    line_of("'nosasl'", "fix: if they are up and their listener requires TLS or SASL")
    assert "s3cr3t-w0rd" not in result.stdout + result.stderr
    assert all(re.match(rf"{re.escape(str(path))}:\d+: flow '", line) for line in lines), text
    # Asked without naming the topic: the broker (which creates topics on demand) has none.
    assert f"{unique}.nope" not in trio.run(_topics, kafka_broker.bootstrap)
