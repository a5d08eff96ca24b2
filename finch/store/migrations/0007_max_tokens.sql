-- The request's max_tokens beside its training example: the trainer tries the question's candidates
-- within the same limit the request path did (an answer longer than that was never servable).
-- NULL for rows logged before it was recorded: the trainer then reads max_local_tokens.
ALTER TABLE examples ADD COLUMN max_tokens INTEGER;
