-- Every attempt of a task keeps its own log, artifacts and reports: a retry
-- no longer replaces what the attempt before it left. Rows stored before
-- this change belong to attempt 1. SQLite cannot change a primary key in
-- place, so each table is copied into its new shape.

CREATE TABLE log_chunks_by_attempt (
    task_id  INTEGER NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    attempt  INTEGER NOT NULL,
    seq      INTEGER NOT NULL,
    data     BLOB NOT NULL,
    PRIMARY KEY (task_id, attempt, seq)
);
INSERT INTO log_chunks_by_attempt (task_id, attempt, seq, data)
    SELECT task_id, 1, seq, data FROM log_chunks;
DROP TABLE log_chunks;
ALTER TABLE log_chunks_by_attempt RENAME TO log_chunks;

CREATE TABLE artifacts_by_attempt (
    task_id       INTEGER NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    attempt       INTEGER NOT NULL,
    path          TEXT NOT NULL,
    size          INTEGER NOT NULL,
    content_type  TEXT NOT NULL,
    blob_key      TEXT NOT NULL,
    PRIMARY KEY (task_id, attempt, path)
);
INSERT INTO artifacts_by_attempt (task_id, attempt, path, size, content_type, blob_key)
    SELECT task_id, 1, path, size, content_type, blob_key FROM artifacts;
DROP TABLE artifacts;
ALTER TABLE artifacts_by_attempt RENAME TO artifacts;

CREATE TABLE reports_by_attempt (
    task_id  INTEGER NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    attempt  INTEGER NOT NULL,
    kind     TEXT NOT NULL,
    json     TEXT NOT NULL,
    PRIMARY KEY (task_id, attempt, kind)
);
INSERT INTO reports_by_attempt (task_id, attempt, kind, json)
    SELECT task_id, 1, kind, json FROM reports;
DROP TABLE reports;
ALTER TABLE reports_by_attempt RENAME TO reports;
