"""cdcsync: change-data-capture sync from NATS / JetStream into PostgreSQL."""

__version__ = "0.1.0"
