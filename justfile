# cdcsync tasks. `just --list` shows them; each works on a fresh clone (scripts/dev installs).

# run cdcsync on the example config
serve config="config/example.yaml":
    scripts/dev serve {{config}}

# validate a config and connect to its servers
check config="config/example.yaml":
    scripts/dev check {{config}}

# the whole test suite (what CI runs)
test *args:
    scripts/dev test {{args}}

# lint and format check
lint:
    scripts/dev test --version >/dev/null
    .venv/bin/ruff check .
    .venv/bin/ruff format --check .

# end-to-end benchmark; `just bench --quick` for the short one
bench *args:
    scripts/dev bench {{args}}

# CI, as it runs on a fresh machine
ci:
    bash .ci/run
