-- One row per request that reached finch, whatever its route.
CREATE TABLE requests (
    id TEXT PRIMARY KEY,             -- finch's request id, also sent as x-finch-request-id
    ts REAL NOT NULL,                -- unix seconds when the request arrived
    method TEXT NOT NULL,
    path TEXT NOT NULL,
    model TEXT,
    stream INTEGER NOT NULL DEFAULT 0,
    route TEXT NOT NULL,             -- forward | local | reject (finch answered an error itself)
    reason TEXT NOT NULL,            -- why: eligible, ineligible:tools, passthrough, invalid_request, ...
    status INTEGER NOT NULL,
    latency_ms REAL,
    ttfb_ms REAL,
    attempts INTEGER NOT NULL DEFAULT 0,
    input_tokens INTEGER NOT NULL DEFAULT 0,
    output_tokens INTEGER NOT NULL DEFAULT 0,
    cache_creation_input_tokens INTEGER NOT NULL DEFAULT 0,
    cache_read_input_tokens INTEGER NOT NULL DEFAULT 0,
    cost_usd REAL NOT NULL DEFAULT 0,   -- what the upstream charged, estimated
    saved_usd REAL NOT NULL DEFAULT 0,  -- what a local answer saved, estimated
    error_type TEXT,
    upstream_request_id TEXT
);
CREATE INDEX requests_ts ON requests (ts);

-- Plain-text conversations and the teacher's answer: the training examples.
CREATE TABLE examples (
    request_id TEXT PRIMARY KEY REFERENCES requests (id),
    ts REAL NOT NULL,
    model TEXT NOT NULL,
    conversation TEXT NOT NULL,      -- JSON {"system": str, "turns": [[role, text], ...]}
    answer TEXT NOT NULL
);
CREATE INDEX examples_ts ON examples (ts);
