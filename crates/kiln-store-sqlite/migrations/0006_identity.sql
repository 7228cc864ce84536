-- Identity and access (issue 11): users, tokens owned by them, members
-- of jobs, web sessions, the audit log and failed sign-ins. Tokens made
-- before (agent tokens, the first-start admin token) keep no user.
CREATE TABLE users (
    id              INTEGER PRIMARY KEY,
    name            TEXT NOT NULL UNIQUE,
    role            TEXT NOT NULL,
    disabled        INTEGER NOT NULL DEFAULT 0,
    password_hash   TEXT,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL
);

ALTER TABLE tokens ADD COLUMN user_id INTEGER REFERENCES users (id) ON DELETE CASCADE;
ALTER TABLE tokens ADD COLUMN expires_at INTEGER;
ALTER TABLE tokens ADD COLUMN last_used_at INTEGER;
ALTER TABLE tokens ADD COLUMN revoked_at INTEGER;
CREATE INDEX tokens_user ON tokens (user_id);

ALTER TABLE jobs ADD COLUMN visibility TEXT NOT NULL DEFAULT 'private';
ALTER TABLE jobs ADD COLUMN created_by INTEGER REFERENCES users (id) ON DELETE SET NULL;

CREATE TABLE members (
    job_id      INTEGER NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    user_id     INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role        TEXT NOT NULL,
    updated_at  INTEGER NOT NULL,
    PRIMARY KEY (job_id, user_id)
);
CREATE INDEX members_user ON members (user_id);

-- `hash` is the hash of the cookie's value: a stolen database holds no
-- usable session.
CREATE TABLE sessions (
    hash            TEXT PRIMARY KEY,
    user_id         INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at      INTEGER NOT NULL,
    expires_at      INTEGER NOT NULL,
    last_seen_at    INTEGER NOT NULL
);
CREATE INDEX sessions_user ON sessions (user_id);

-- Names, not ids: entries outlive the users, jobs and tokens they name.
CREATE TABLE audit (
    id      INTEGER PRIMARY KEY,
    at      INTEGER NOT NULL,
    actor   TEXT NOT NULL,
    action  TEXT NOT NULL,
    object  TEXT NOT NULL,
    detail  TEXT,
    source  TEXT
);
CREATE INDEX audit_actor ON audit (actor, id);
CREATE INDEX audit_action ON audit (action, id);

-- Per name, known or not, so guessing names is slowed down too.
CREATE TABLE failed_sign_ins (
    id      INTEGER PRIMARY KEY,
    name    TEXT NOT NULL,
    at      INTEGER NOT NULL
);
CREATE INDEX failed_sign_ins_name ON failed_sign_ins (name, at);
