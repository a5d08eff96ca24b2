-- What a namespace asked finch to forget (finch/store/migrations/0010), under row-level security.
CREATE TABLE forgets (
    seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    namespace text NOT NULL,
    conversation text,
    ts double precision NOT NULL
);
CREATE INDEX forgets_namespace ON forgets (namespace, seq);
ALTER TABLE forgets ENABLE ROW LEVEL SECURITY;
ALTER TABLE forgets FORCE ROW LEVEL SECURITY;
CREATE POLICY namespace_rows ON forgets USING (finch_may_see(namespace));
