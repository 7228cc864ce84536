-- Pull requests from forks (issue 14): a secret a fork's run may receive.
-- Every secret set before is withheld from forks, as DESIGN.md §6 wants.
ALTER TABLE secrets ADD COLUMN allow_forks BOOLEAN NOT NULL DEFAULT FALSE;
