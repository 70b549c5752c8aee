"""``cdcsync serve`` with test-only patches, to reach paths a valid configuration cannot.

    python tests/patched_serve.py [--boom] [--url FLOW=URL ...] [--server FLOW=URL ...] -- ARGS

``--boom`` adds ``GET /api/boom``, which raises (an unexpected error inside the API);
``--url`` / ``--server`` give a flow's destinations / NATS servers a URL *after* the
configuration was validated (as an embedding program could), e.g. one with a password the
loader would refuse. ARGS are the ``cdcsync`` command line (``serve FILE --log-format json``).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import Any

from cdcsync import app, cli, config


def _patched_load(real: Any, urls: dict[str, str], servers: dict[str, str]) -> Any:
    def load(path: str) -> config.Config:
        cfg = real(path)
        flows = []
        for flow in cfg.flows:
            source = flow.source
            if flow.name in servers:
                options = dataclasses.replace(source.options, servers=(servers[flow.name],))
                source = dataclasses.replace(source, options=options)
            dests = tuple(
                dataclasses.replace(d, options=dataclasses.replace(d.options, url=urls[flow.name]))
                if flow.name in urls
                else d
                for d in flow.destinations
            )
            flows.append(dataclasses.replace(flow, source=source, destinations=dests))
        return dataclasses.replace(cfg, flows=tuple(flows))

    return load


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--boom", action="store_true")
    parser.add_argument("--url", action="append", default=[])
    parser.add_argument("--server", action="append", default=[])
    parser.add_argument("args", nargs=argparse.REMAINDER)
    ns = parser.parse_args()
    if ns.boom:
        create = app.create_app

        def with_boom(*args: Any, **kwargs: Any) -> Any:
            quart_app = create(*args, **kwargs)

            @quart_app.get("/api/boom")
            async def boom() -> str:
                raise RuntimeError("boom: an unexpected error inside the API")

            return quart_app

        app.create_app = with_boom  # type: ignore[assignment]
    urls = dict(u.split("=", 1) for u in ns.url)
    servers = dict(s.split("=", 1) for s in ns.server)
    config.load = _patched_load(config.load, urls, servers)  # type: ignore[assignment]
    return cli.main([a for a in ns.args if a != "--"])


if __name__ == "__main__":
    sys.exit(main())
