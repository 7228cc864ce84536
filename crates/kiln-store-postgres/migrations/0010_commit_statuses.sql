-- Commit statuses (issue 14): the outbox of what each forge should show on
-- a commit. One row per (forge, repository, sha, context), holding only the
-- latest state wanted there: a newer run of the same job on the same commit
-- takes the row over, and a change bumps `version`, so a send of an older
-- state can never be recorded as the last word. A row is due while
-- `done_version` (the version last delivered or refused for good) is below
-- `version`; `claimed_until` keeps two senders off one row.
CREATE TABLE commit_statuses (
    id               BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    forge            TEXT NOT NULL,
    repository       TEXT NOT NULL,
    sha              TEXT NOT NULL,
    context          TEXT NOT NULL,
    run_id           BIGINT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    run_status       TEXT NOT NULL,
    version          BIGINT NOT NULL,
    done_version     BIGINT,
    attempts         BIGINT NOT NULL DEFAULT 0,
    next_attempt_at  BIGINT NOT NULL,
    claimed_until    BIGINT,
    sent_at          BIGINT,
    error            TEXT,
    UNIQUE (forge, repository, sha, context)
);
CREATE INDEX commit_statuses_by_run ON commit_statuses (run_id);
-- The sender's look for runs whose state no row holds goes by commit.
CREATE INDEX commit_statuses_by_sha ON commit_statuses (sha);
CREATE INDEX commit_statuses_due ON commit_statuses (next_attempt_at)
    WHERE done_version IS NULL OR done_version < version;
