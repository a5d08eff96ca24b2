-- Row-level security: every row is held to the namespace its transaction names, set per
-- transaction as finch.namespace ('*' for every namespace: a writer's batch, a migration, an
-- administrator's view). A transaction that names none sees and writes no rows. FORCE makes the
-- tables' owner obey it too: only a superuser or a BYPASSRLS role passes it, so finch's role in
-- production should be neither. Training examples and local answers belong to their request's
-- namespace, seen through the requests table (itself under the same rule).
CREATE FUNCTION finch_may_see(row_namespace text) RETURNS boolean LANGUAGE sql STABLE AS $$
    SELECT current_setting('finch.namespace', true) IN ('*', row_namespace)
$$;

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['requests', 'feedback', 'learning', 'namespaces', 'examples', 'local_answers'] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY namespace_rows ON %I USING (%s)', t, CASE t
            WHEN 'namespaces' THEN 'finch_may_see(name)'
            WHEN 'examples' THEN 'EXISTS (SELECT 1 FROM requests r WHERE r.id = request_id)'
            WHEN 'local_answers' THEN 'EXISTS (SELECT 1 FROM requests r WHERE r.id = request_id)'
            ELSE 'finch_may_see(namespace)' END);
    END LOOP;
END $$;
