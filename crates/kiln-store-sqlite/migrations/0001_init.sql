-- Kiln's schema on SQLite. Times are unix milliseconds (INTEGER), statuses
-- the lower-case names of DESIGN.md §1, task specs JSON text.

CREATE TABLE jobs (
    id              INTEGER PRIMARY KEY,
    name            TEXT NOT NULL UNIQUE,
    kind            TEXT NOT NULL,
    repository      TEXT,
    pipeline_path   TEXT,
    default_branch  TEXT,
    pipeline        TEXT,
    next_run        INTEGER NOT NULL DEFAULT 1,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL
);

CREATE TABLE secrets (
    job_id      INTEGER NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    name        TEXT NOT NULL,
    sealed      BLOB NOT NULL,
    updated_at  INTEGER NOT NULL,
    PRIMARY KEY (job_id, name)
);

CREATE TABLE runs (
    id           INTEGER PRIMARY KEY,
    job_id       INTEGER NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    number       INTEGER NOT NULL,
    status       TEXT NOT NULL,
    branch       TEXT,
    sha          TEXT,
    event        TEXT NOT NULL,
    error        TEXT,
    created_at   INTEGER NOT NULL,
    started_at   INTEGER,
    finished_at  INTEGER,
    deadline     INTEGER,
    UNIQUE (job_id, number)
);
-- list_runs walks a job's runs newest first, optionally by status or branch.
CREATE INDEX runs_by_job_status ON runs (job_id, status, number DESC);
CREATE INDEX runs_by_job_branch ON runs (job_id, branch, number DESC);
-- expire() looks for unfinished runs past their deadline.
CREATE INDEX runs_by_deadline ON runs (deadline) WHERE finished_at IS NULL;

CREATE TABLE tasks (
    id                INTEGER PRIMARY KEY,
    run_id            INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    position          INTEGER NOT NULL,
    name              TEXT NOT NULL,
    status            TEXT NOT NULL,
    reason            TEXT,
    spec              TEXT NOT NULL,
    -- spec.runs_on as a JSON array, kept apart so claims filter in SQL.
    runs_on           TEXT NOT NULL DEFAULT '[]',
    attempt           INTEGER NOT NULL DEFAULT 1,
    max_attempts      INTEGER NOT NULL DEFAULT 1,
    agent             TEXT,
    lease_holder      TEXT,
    lease_expires_at  INTEGER,
    cancel_requested  INTEGER NOT NULL DEFAULT 0,
    queued_at         INTEGER,
    started_at        INTEGER,
    finished_at       INTEGER,
    UNIQUE (run_id, position),
    UNIQUE (run_id, name)
);
-- claim_task takes the oldest queued task.
CREATE INDEX tasks_claim ON tasks (status, queued_at, id);
-- expire() looks for running tasks whose lease ran out.
CREATE INDEX tasks_lease ON tasks (lease_expires_at) WHERE status = 'running';

CREATE TABLE steps (
    task_id      INTEGER NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    position     INTEGER NOT NULL,
    name         TEXT NOT NULL,
    status       TEXT NOT NULL,
    exit_code    INTEGER,
    started_at   INTEGER,
    finished_at  INTEGER,
    PRIMARY KEY (task_id, position)
);

CREATE TABLE log_chunks (
    task_id  INTEGER NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    seq      INTEGER NOT NULL,
    data     BLOB NOT NULL,
    PRIMARY KEY (task_id, seq)
);

CREATE TABLE artifacts (
    task_id       INTEGER NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    path          TEXT NOT NULL,
    size          INTEGER NOT NULL,
    content_type  TEXT NOT NULL,
    blob_key      TEXT NOT NULL,
    PRIMARY KEY (task_id, path)
);

CREATE TABLE reports (
    task_id  INTEGER NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    kind     TEXT NOT NULL,
    json     TEXT NOT NULL,
    PRIMARY KEY (task_id, kind)
);

CREATE TABLE tokens (
    id          INTEGER PRIMARY KEY,
    hash        TEXT NOT NULL UNIQUE,
    kind        TEXT NOT NULL,
    name        TEXT NOT NULL,
    is_admin    INTEGER NOT NULL DEFAULT 0,
    created_at  INTEGER NOT NULL
);
