-- Settling a run after one of its tasks ends asks which statuses its tasks
-- are in: one index seek per status instead of a scan of the run's tasks
-- (which made ending each task of a wide run cost as much as the run).
CREATE INDEX tasks_by_run_status ON tasks (run_id, status);
