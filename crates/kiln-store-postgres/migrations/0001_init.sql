-- Kiln's schema on PostgreSQL. Times are unix milliseconds (BIGINT),
-- statuses the lower-case names of DESIGN.md §1, task specs JSON text.

CREATE TABLE jobs (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name            TEXT NOT NULL UNIQUE,
    kind            TEXT NOT NULL,
    repository      TEXT,
    pipeline_path   TEXT,
    default_branch  TEXT,
    pipeline        TEXT,
    next_run        BIGINT NOT NULL DEFAULT 1,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL
);

CREATE TABLE secrets (
    job_id      BIGINT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    name        TEXT NOT NULL,
    sealed      BYTEA NOT NULL,
    updated_at  BIGINT NOT NULL,
    PRIMARY KEY (job_id, name)
);

CREATE TABLE runs (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id       BIGINT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    number       BIGINT NOT NULL,
    status       TEXT NOT NULL,
    branch       TEXT,
    sha          TEXT,
    event        TEXT NOT NULL,
    error        TEXT,
    created_at   BIGINT NOT NULL,
    started_at   BIGINT,
    finished_at  BIGINT,
    deadline     BIGINT,
    UNIQUE (job_id, number)
);
-- list_runs walks a job's runs newest first, optionally by status or branch.
CREATE INDEX runs_by_job_status ON runs (job_id, status, number DESC);
CREATE INDEX runs_by_job_branch ON runs (job_id, branch, number DESC);
-- expire() looks for unfinished runs past their deadline.
CREATE INDEX runs_by_deadline ON runs (deadline) WHERE finished_at IS NULL;

CREATE TABLE tasks (
    id                BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id            BIGINT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    position          BIGINT NOT NULL,
    name              TEXT NOT NULL,
    status            TEXT NOT NULL,
    reason            TEXT,
    spec              TEXT NOT NULL,
    -- spec.runs_on, kept apart so claims filter in SQL (`runs_on <@ labels`).
    runs_on           TEXT[] NOT NULL DEFAULT '{}',
    attempt           BIGINT NOT NULL DEFAULT 1,
    max_attempts      BIGINT NOT NULL DEFAULT 1,
    agent             TEXT,
    lease_holder      TEXT,
    lease_expires_at  BIGINT,
    cancel_requested  BOOLEAN NOT NULL DEFAULT FALSE,
    queued_at         BIGINT,
    started_at        BIGINT,
    finished_at       BIGINT,
    UNIQUE (run_id, position),
    UNIQUE (run_id, name)
);
-- claim_task takes the oldest queued task.
CREATE INDEX tasks_claim ON tasks (status, queued_at, id);
-- expire() looks for running tasks whose lease ran out.
CREATE INDEX tasks_lease ON tasks (lease_expires_at) WHERE status = 'running';

CREATE TABLE steps (
    task_id      BIGINT NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    position     BIGINT NOT NULL,
    name         TEXT NOT NULL,
    status       TEXT NOT NULL,
    exit_code    BIGINT,
    started_at   BIGINT,
    finished_at  BIGINT,
    PRIMARY KEY (task_id, position)
);

CREATE TABLE log_chunks (
    task_id  BIGINT NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    seq      BIGINT NOT NULL,
    data     BYTEA NOT NULL,
    PRIMARY KEY (task_id, seq)
);

CREATE TABLE artifacts (
    task_id       BIGINT NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    path          TEXT NOT NULL,
    size          BIGINT NOT NULL,
    content_type  TEXT NOT NULL,
    blob_key      TEXT NOT NULL,
    PRIMARY KEY (task_id, path)
);

CREATE TABLE reports (
    task_id  BIGINT NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    kind     TEXT NOT NULL,
    json     TEXT NOT NULL,
    PRIMARY KEY (task_id, kind)
);

CREATE TABLE tokens (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    hash        TEXT NOT NULL UNIQUE,
    kind        TEXT NOT NULL,
    name        TEXT NOT NULL,
    is_admin    BOOLEAN NOT NULL DEFAULT FALSE,
    created_at  BIGINT NOT NULL
);
