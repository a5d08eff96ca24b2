-- What the trainer, in its own process, needs of a would-be-local answer to learn from it: the
-- decision as JSON {"answer", "p_good", "audit_chance", "tried": [[text, p_good], ...]}, for
-- answers served and answers withheld to audit them. `finch forget` clears it.
ALTER TABLE requests ADD COLUMN decision TEXT;
