-- Whom Claude gave each answer to, inside a namespace whose requests name their end users: a digest
-- of the end user's id under the server secret, never the id ('' when the request named none).
ALTER TABLE examples ADD COLUMN end_user TEXT NOT NULL DEFAULT '';
