-- Agent identity (issue 12): an agent token is its agent's only, and
-- bounds what that agent may announce. `agent_labels` is a JSON array of
-- the labels it may offer (NULL: any); `max_capacity` the most tasks it may
-- take at once (NULL: the server's limit). The shared token agents used to
-- present under any name now only registers new agents.
ALTER TABLE tokens ADD COLUMN agent_labels TEXT;
ALTER TABLE tokens ADD COLUMN max_capacity BIGINT;
UPDATE tokens SET kind = 'registration' WHERE kind = 'agent' AND name = 'shared';
