-- Forges and webhooks (issue 14). A forge's token and webhook secret are
-- sealed by the server (NULL: not set). A job names its forge by name; the
-- server checks the name, and a forge a job uses cannot be deleted.
CREATE TABLE forges (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name            TEXT NOT NULL UNIQUE,
    kind            TEXT NOT NULL,
    api_url         TEXT NOT NULL,
    token           BYTEA,
    webhook_secret  BYTEA,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL
);

ALTER TABLE jobs ADD COLUMN forge TEXT;
ALTER TABLE jobs ADD COLUMN fork_prs TEXT NOT NULL DEFAULT 'approve';
CREATE INDEX jobs_by_forge ON jobs (forge) WHERE forge IS NOT NULL;

-- What made each run; runs made before were made through the API.
-- `pull_request` is JSON (number, title, author, branches, from_fork).
ALTER TABLE runs ADD COLUMN trigger_kind TEXT NOT NULL DEFAULT 'api';
ALTER TABLE runs ADD COLUMN trigger_user TEXT;
ALTER TABLE runs ADD COLUMN pull_request TEXT;
-- A tag run's tag (its run has no branch): the task's KILN_TAG.
ALTER TABLE runs ADD COLUMN tag TEXT;

-- A webhook's triggers, one per matching job, stored before the hook is
-- answered; a worker makes each run and marks it done in the run's own
-- transaction. (job_id, delivery) is unique, so a redelivery queues nothing.
CREATE TABLE queued_triggers (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id       BIGINT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    delivery     TEXT NOT NULL,
    payload      TEXT NOT NULL,
    received_at  BIGINT NOT NULL,
    done_at      BIGINT,
    run_id       BIGINT REFERENCES runs (id) ON DELETE SET NULL,
    UNIQUE (job_id, delivery)
);
CREATE INDEX queued_triggers_pending ON queued_triggers (id) WHERE done_at IS NULL;
