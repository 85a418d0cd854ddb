-- Resources as last applied: only fingerprints, non-secret inputs, outputs (hashes, never raw secrets).
CREATE TABLE resources (
    address     TEXT PRIMARY KEY,
    kind        TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    inputs      TEXT NOT NULL,
    outputs     TEXT NOT NULL,
    deps        TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);

CREATE TABLE runs (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    command     TEXT NOT NULL,
    started_at  TEXT NOT NULL,
    finished_at TEXT,
    status      TEXT NOT NULL,
    pid         INTEGER NOT NULL,
    host        TEXT NOT NULL
);

CREATE TABLE steps (
    run_id      INTEGER NOT NULL REFERENCES runs(id),
    address     TEXT NOT NULL,
    action      TEXT NOT NULL,
    status      TEXT NOT NULL,
    started_at  TEXT NOT NULL,
    duration_ms INTEGER NOT NULL,
    error       TEXT
);
CREATE INDEX steps_by_run ON steps(run_id);

-- At most one row: who is applying right now.
CREATE TABLE apply_lock (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    pid         INTEGER NOT NULL,
    proc_start  INTEGER,
    host        TEXT NOT NULL,
    started_at  TEXT NOT NULL,
    command     TEXT NOT NULL
);
