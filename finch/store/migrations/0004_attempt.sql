-- The local answer each learning event judged (for Claude's answers: the candidate finch would have
-- served), so that a verdict can be read beside what it was on. `finch forget` clears it.
ALTER TABLE learning ADD COLUMN attempt TEXT;
