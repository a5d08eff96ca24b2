-- Row-level security: every row is held to the namespace its transaction names, set per
-- transaction as finch.namespace ('*' for every namespace: a writer's batch, a migration, an
-- administrator's view). A transaction that names none sees and writes no rows. FORCE makes the
-- tables' owner obey it too: only a superuser or a BYPASSRLS role passes it, so finch's role in
-- production should be neither. Training examples and local answers belong to their request's
-- namespace, seen through the requests table (itself under the same rule).
CREATE FUNCTION finch_may_see(row_namespace text) RETURNS boolean LANGUAGE sql STABLE AS $$
    SELECT current_setting('finch.namespace', true) IN ('*', row_namespace)
$$;

ALTER TABLE requests ENABLE ROW LEVEL SECURITY;
ALTER TABLE requests FORCE ROW LEVEL SECURITY;
CREATE POLICY namespace_rows ON requests USING (finch_may_see(namespace));

ALTER TABLE feedback ENABLE ROW LEVEL SECURITY;
ALTER TABLE feedback FORCE ROW LEVEL SECURITY;
CREATE POLICY namespace_rows ON feedback USING (finch_may_see(namespace));

ALTER TABLE learning ENABLE ROW LEVEL SECURITY;
ALTER TABLE learning FORCE ROW LEVEL SECURITY;
CREATE POLICY namespace_rows ON learning USING (finch_may_see(namespace));

ALTER TABLE namespaces ENABLE ROW LEVEL SECURITY;
ALTER TABLE namespaces FORCE ROW LEVEL SECURITY;
CREATE POLICY namespace_rows ON namespaces USING (finch_may_see(name));

ALTER TABLE examples ENABLE ROW LEVEL SECURITY;
ALTER TABLE examples FORCE ROW LEVEL SECURITY;
CREATE POLICY namespace_rows ON examples USING (EXISTS (SELECT 1 FROM requests r WHERE r.id = request_id));

ALTER TABLE local_answers ENABLE ROW LEVEL SECURITY;
ALTER TABLE local_answers FORCE ROW LEVEL SECURITY;
CREATE POLICY namespace_rows ON local_answers USING (EXISTS (SELECT 1 FROM requests r WHERE r.id = request_id));
