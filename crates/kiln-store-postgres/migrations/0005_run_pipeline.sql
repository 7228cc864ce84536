-- The pipeline text each run was made from, so that a rerun repeats the
-- run (the same tasks) even after a freestyle job's pipeline was replaced
-- or a git job's pipeline path changed. NULL for runs made before it was
-- kept, and for runs whose pipeline file could not be read.
ALTER TABLE runs ADD COLUMN pipeline TEXT;
