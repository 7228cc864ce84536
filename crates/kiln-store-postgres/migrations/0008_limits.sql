-- Limits (issue 12). `log_sizes` counts the bytes stored of each attempt's
-- log, so the server's `--max-log-bytes` holds across restarts and across
-- servers sharing the database without summing chunks on every append.
-- `artifacts.expires_at` (milliseconds) is when the file's `expire-in` runs
-- out; NULL: it does not expire on its own.
CREATE TABLE log_sizes (
    task_id  BIGINT NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    attempt  BIGINT NOT NULL,
    bytes    BIGINT NOT NULL,
    PRIMARY KEY (task_id, attempt)
);
INSERT INTO log_sizes (task_id, attempt, bytes)
    SELECT task_id, attempt, SUM(octet_length(data)) FROM log_chunks GROUP BY task_id, attempt;

ALTER TABLE artifacts ADD COLUMN expires_at BIGINT;
