-- Every request, verdict and learning row belongs to one namespace: what finch learns from one is
-- never served to another (finch.server.principals). Rows logged before namespaces existed belong to
-- the one namespace there was. '' is a request whose principal was not resolved: logged, never learned.
ALTER TABLE requests ADD COLUMN namespace TEXT NOT NULL DEFAULT 'default';
ALTER TABLE feedback ADD COLUMN namespace TEXT NOT NULL DEFAULT 'default';
ALTER TABLE learning ADD COLUMN namespace TEXT NOT NULL DEFAULT 'default';
CREATE INDEX requests_namespace ON requests (namespace);
CREATE INDEX feedback_namespace ON feedback (namespace);
-- The namespaces that have something to learn, for trainers to find them.
CREATE TABLE namespaces (name TEXT PRIMARY KEY, first_ts REAL NOT NULL);
INSERT INTO namespaces SELECT 'default', MIN(ts) FROM requests HAVING COUNT(*) > 0;
