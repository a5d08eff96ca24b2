-- Every request, verdict and learning row belongs to one namespace (finch/store/migrations/0008).
ALTER TABLE requests ADD COLUMN namespace text NOT NULL DEFAULT 'default';
ALTER TABLE feedback ADD COLUMN namespace text NOT NULL DEFAULT 'default';
ALTER TABLE learning ADD COLUMN namespace text NOT NULL DEFAULT 'default';
CREATE INDEX requests_namespace ON requests (namespace, seq);
CREATE INDEX feedback_namespace ON feedback (namespace, seq);
CREATE TABLE namespaces (name text PRIMARY KEY, first_ts double precision NOT NULL);
INSERT INTO namespaces SELECT 'default', MIN(ts) FROM requests HAVING COUNT(*) > 0;
