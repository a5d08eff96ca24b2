-- What a namespace asked finch to forget (finch forget --question, POST /finch/forget): one
-- question's conversation, or (NULL) everything it learned. The trainer follows these rows as a
-- stream of their own and forgets what it learned of them; replicas stop serving them at once.
CREATE TABLE forgets (
    namespace TEXT NOT NULL,
    conversation TEXT,
    ts REAL NOT NULL
);
CREATE INDEX forgets_namespace ON forgets (namespace);
