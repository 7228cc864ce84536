-- Polling (issue 14): a git job with `poll_interval` (seconds) is polled
-- with `git ls-remote`. `job_polls` keeps the refs seen at the last poll
-- (JSON: ref name to commit), its error, when the next poll is due, and a
-- claim with an expiry so that one server polls a job at a time.
ALTER TABLE jobs ADD COLUMN poll_interval BIGINT;
CREATE TABLE job_polls (
    job_id        BIGINT PRIMARY KEY REFERENCES jobs (id) ON DELETE CASCADE,
    refs          TEXT,
    polled_at     BIGINT,
    error         TEXT,
    next_poll_at  BIGINT NOT NULL DEFAULT 0,
    holder        TEXT,
    lease_until   BIGINT
);
