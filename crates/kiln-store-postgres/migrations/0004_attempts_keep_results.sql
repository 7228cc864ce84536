-- Every attempt of a task keeps its own log, artifacts and reports: a retry
-- no longer replaces what the attempt before it left. Rows stored before
-- this change belong to attempt 1.

ALTER TABLE log_chunks ADD COLUMN attempt BIGINT NOT NULL DEFAULT 1;
ALTER TABLE log_chunks ALTER COLUMN attempt DROP DEFAULT;
ALTER TABLE log_chunks DROP CONSTRAINT log_chunks_pkey;
ALTER TABLE log_chunks ADD PRIMARY KEY (task_id, attempt, seq);

ALTER TABLE artifacts ADD COLUMN attempt BIGINT NOT NULL DEFAULT 1;
ALTER TABLE artifacts ALTER COLUMN attempt DROP DEFAULT;
ALTER TABLE artifacts DROP CONSTRAINT artifacts_pkey;
ALTER TABLE artifacts ADD PRIMARY KEY (task_id, attempt, path);

ALTER TABLE reports ADD COLUMN attempt BIGINT NOT NULL DEFAULT 1;
ALTER TABLE reports ALTER COLUMN attempt DROP DEFAULT;
ALTER TABLE reports DROP CONSTRAINT reports_pkey;
ALTER TABLE reports ADD PRIMARY KEY (task_id, attempt, kind);
