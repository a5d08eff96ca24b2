-- The learning loop: scores behind each decision, local answers, judged attempts, audits, feedback.
ALTER TABLE requests ADD COLUMN p_router REAL;
ALTER TABLE requests ADD COLUMN p_validator REAL;

-- Every answer finch made locally and served (the conversation is kept so feedback can teach).
CREATE TABLE local_answers (
    request_id TEXT PRIMARY KEY REFERENCES requests (id),
    ts REAL NOT NULL,
    conversation TEXT NOT NULL,
    answer TEXT NOT NULL
);

-- One row per learning event the trainer processed.
CREATE TABLE learning (
    id INTEGER PRIMARY KEY,
    ts REAL NOT NULL,
    request_id TEXT,
    kind TEXT NOT NULL,              -- claude | feedback
    audit INTEGER NOT NULL DEFAULT 0, -- 1: a sampled forward of an answer finch would have served
    audit_good INTEGER,              -- for an audit: the judge's verdict on that withheld answer
    good INTEGER,                    -- the judge's (or the user's) verdict on the local attempt
    divergence REAL,                 -- 1 - cos(local attempt, teacher answer)
    p_router REAL,
    p_validator REAL,
    threshold REAL,                  -- the validator operating point after this event
    loss_generator REAL,
    loss_router REAL,
    loss_validator REAL,
    seconds REAL                     -- trainer time spent on this event
);
CREATE INDEX learning_ts ON learning (ts);

CREATE TABLE feedback (
    request_id TEXT NOT NULL,
    ts REAL NOT NULL,
    good INTEGER NOT NULL
);
