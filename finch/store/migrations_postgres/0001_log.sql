-- finch's log in PostgreSQL: the tables of the SQLite log (finch/store/migrations, 0001-0007), with
-- an explicit seq where SQLite orders a stream by its rowid. Writers take one advisory lock per
-- transaction (finch.store.postgres), so seq order is commit order and a reader never skips a row.

CREATE TABLE requests (
    seq bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
    id text PRIMARY KEY,
    ts double precision NOT NULL,
    method text NOT NULL,
    path text NOT NULL,
    model text,
    stream integer NOT NULL DEFAULT 0,
    route text NOT NULL,
    reason text NOT NULL,
    status integer NOT NULL,
    latency_ms double precision,
    ttfb_ms double precision,
    attempts integer NOT NULL DEFAULT 0,
    input_tokens integer NOT NULL DEFAULT 0,
    output_tokens integer NOT NULL DEFAULT 0,
    cache_creation_input_tokens integer NOT NULL DEFAULT 0,
    cache_read_input_tokens integer NOT NULL DEFAULT 0,
    cost_usd double precision NOT NULL DEFAULT 0,
    saved_usd double precision NOT NULL DEFAULT 0,
    error_type text,
    upstream_request_id text,
    p_router double precision,
    p_validator double precision,
    p_good double precision,
    decision text
);
CREATE INDEX requests_ts ON requests (ts);

CREATE TABLE examples (
    request_id text PRIMARY KEY REFERENCES requests (id),
    ts double precision NOT NULL,
    model text NOT NULL,
    conversation text NOT NULL,
    answer text NOT NULL,
    max_tokens integer
);
CREATE INDEX examples_ts ON examples (ts);

CREATE TABLE local_answers (
    request_id text PRIMARY KEY REFERENCES requests (id),
    ts double precision NOT NULL,
    conversation text NOT NULL,
    answer text NOT NULL
);

CREATE TABLE learning (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    ts double precision NOT NULL,
    request_id text,
    kind text NOT NULL,
    audit integer NOT NULL DEFAULT 0,
    audit_good integer,
    good integer,
    divergence double precision,
    p_router double precision,
    p_validator double precision,
    p_good double precision,
    threshold double precision,
    loss_generator double precision,
    loss_router double precision,
    loss_validator double precision,
    seconds double precision,
    attempt text,
    seq bigint
);
CREATE INDEX learning_ts ON learning (ts);

CREATE TABLE feedback (
    seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    request_id text NOT NULL,
    ts double precision NOT NULL,
    good integer NOT NULL
);
