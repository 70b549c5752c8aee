-- Target tables for config/example.yaml (cdcsync never creates your tables).
CREATE TABLE IF NOT EXISTS example_users (
    id         bigint PRIMARY KEY,
    name       text,
    email      text,
    created_at timestamptz DEFAULT now()
);
CREATE TABLE IF NOT EXISTS example_orders (
    id         bigint PRIMARY KEY,
    user_id    bigint,
    total      numeric(12, 2),
    status     text DEFAULT 'new'
);
