-- The lock's holder is one engine session, not one process: a random token it alone knows, so a
-- process running several sessions (the daemon) releases only its own.
ALTER TABLE apply_lock ADD COLUMN owner TEXT NOT NULL DEFAULT '';
