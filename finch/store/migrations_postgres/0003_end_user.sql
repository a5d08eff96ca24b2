-- Whom Claude gave each answer to (finch/store/migrations/0009).
ALTER TABLE examples ADD COLUMN end_user text NOT NULL DEFAULT '';
