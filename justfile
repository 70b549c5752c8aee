# cdcsync tasks. `just --list` shows them; each works on a fresh clone (scripts/dev installs).

# the demo: its own NATS + PostgreSQL, 3 flows, live events, the dashboard (Ctrl-C stops)
demo *args:
    scripts/dev demo {{args}}

# run cdcsync on the example config
serve config="config/example.yaml":
    scripts/dev serve {{config}}

# build the dashboard served at / (dashboard/dist; needs node >= 20.19 and npm)
dashboard:
    npm --prefix dashboard ci --no-audit --no-fund
    npm --prefix dashboard run build

# the sdist and the wheel in dist/, both with the built dashboard (needs npm unless already built)
dist:
    scripts/dev install
    .venv/bin/python -m build

# build the container image and smoke-test it and compose.yaml with podman (root; 2-3 min)
container-smoke:
    scripts/container-smoke

# validate a config and connect to its servers
check config="config/example.yaml":
    scripts/dev check {{config}}

# the whole test suite (what CI runs)
test *args:
    scripts/dev test {{args}}

# lint, format check and strict type check
lint:
    scripts/dev install
    .venv/bin/ruff check .
    .venv/bin/ruff format --check .
    .venv/bin/mypy

# end-to-end benchmark: the tables (issue 15 targets included) + bench/results/*.json (4-13 min); `just bench --quick`: smoke run (<1 min)
bench *args:
    scripts/dev bench {{args}}

# chaos soak, row by row against a model, on its own servers; ~10 min (see tests/soak/soak.py);
# `just soak target=mysql` soaks the MySQL destination (a throwaway MariaDB)
soak seeds="1 2 3" events="100000" max_seconds="180" target="postgres":
    scripts/dev install
    .venv/bin/python tests/soak/soak.py --seed {{seeds}} --events {{events}} --max-seconds {{max_seconds}} --target {{target}}

# the soak's partitioned mode: every flow in 4 partitions shared by 2 instances (nats-server 2.10+ from the wheel)
soak-partitioned seeds="1 2 3" events="100000" max_seconds="180" instances="2":
    scripts/dev install
    .venv/bin/python tests/soak/soak.py --partitioned --instances {{instances}} --seed {{seeds}} --events {{events}} --max-seconds {{max_seconds}}

# regenerate docs/reference/configuration.md from the schema (a test fails when it is stale)
docs:
    scripts/dev install
    .venv/bin/python -m cdcsync.reference --write

# CI, as it runs on a fresh machine
ci:
    bash .ci/run
