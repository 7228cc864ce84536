-- claim_task is fair between jobs: it takes a task of the job with the
-- fewest running tasks. Tasks carry their run's job so that each job's
-- queue head and running count are index lookups, not joins over runs.
ALTER TABLE tasks ADD COLUMN job_id BIGINT;
UPDATE tasks SET job_id = (SELECT runs.job_id FROM runs WHERE runs.id = tasks.run_id);
-- A job's oldest queued task.
CREATE INDEX tasks_job_queue ON tasks (job_id, queued_at, id) WHERE status = 'queued';
-- How many tasks of a job run.
CREATE INDEX tasks_job_running ON tasks (job_id) WHERE status = 'running';
