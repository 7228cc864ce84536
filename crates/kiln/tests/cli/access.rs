//! `kiln user`, `kiln token`, `kiln member` and `kiln audit` as a person or
//! a script uses them: the real binary against a real `kiln server`, as the
//! admin (the server's `KILN_ADMIN_TOKEN`) and as the users it makes.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use serde_json::{Value, json};

use crate::server::{ADMIN, Server};

/// What `kiln ARGS` printed and how it exited, run as the holder of
/// `token` with `stdin` for its standard input.
struct Outcome {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Outcome {
    /// Stdout, after checking that the command succeeded.
    fn ok(&self) -> &str {
        assert_eq!(self.code, Some(0), "{self}");
        &self.stdout
    }

    /// Stderr, after checking that the command failed with `code`.
    fn failed(&self, code: i32) -> &str {
        assert_eq!(self.code, Some(code), "{self}");
        &self.stderr
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {:?}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

fn kiln(server: &Server, token: &str, args: &[&str], stdin: &str) -> Outcome {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(args)
        .env("KILN_SERVER", &server.url)
        .env("KILN_TOKEN", token)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Dropped at once, so a command that reads standard input sees its end.
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let Output {
        status,
        stdout,
        stderr,
    } = child.wait_with_output().unwrap();
    Outcome {
        code: status.code(),
        stdout: String::from_utf8(stdout).unwrap(),
        stderr: String::from_utf8(stderr).unwrap(),
    }
}

fn admin(server: &Server, args: &[&str]) -> Outcome {
    kiln(server, ADMIN, args, "")
}

/// A table line's cells, which hold no double spaces.
fn cells(line: &str) -> Vec<String> {
    line.split("  ")
        .map(str::trim)
        .filter(|cell| !cell.is_empty())
        .map(String::from)
        .collect()
}

/// The header of a table, its cells between ` | `.
fn header(table: &str) -> String {
    cells(table.lines().next().unwrap_or_default()).join(" | ")
}

/// The cells of the table row whose first cell is `first`.
fn row(table: &str, first: &str) -> Option<Vec<String>> {
    table
        .lines()
        .map(cells)
        .find(|cells| cells.first().map(String::as_str) == Some(first))
}

/// A new token for `user`, as a script captures it: standard output alone.
fn token_for(server: &Server, user: &str, name: &str) -> String {
    let outcome = admin(server, &["token", "create", name, "--user", user]);
    outcome.ok().trim().to_string()
}

#[tokio::test]
async fn an_admin_makes_a_user_a_token_and_a_member_and_the_audit_log_tells() {
    let server = Server::start(None);

    // The password comes on standard input, never on the command line.
    let password = "correct horse battery staple";
    let created = kiln(
        &server,
        ADMIN,
        &["user", "create", "ada", "--password-stdin"],
        &format!("{password}\n"),
    );
    assert_eq!(
        created.ok(),
        "created user `ada`: user, enabled, with a password\n"
    );
    let users = admin(&server, &["user", "list"]);
    let users = users.ok();
    assert_eq!(header(users), "NAME | ROLE | STATE | PASSWORD | CREATED");
    let ada = row(users, "ada").expect(users);
    assert_eq!(ada[..4], ["ada", "user", "enabled", "yes"], "{users}");
    assert!(!users.contains(password));

    // A token for the admin, and one for ada that a script captures.
    token_for(&server, "admin", "admin-laptop");
    let created = admin(
        &server,
        &[
            "token",
            "create",
            "ada-ci",
            "--user",
            "ada",
            "--expires-in",
            "1d",
        ],
    );
    let token = created.ok().trim().to_string();
    assert_eq!(created.stdout, format!("{token}\n"), "the value alone");
    assert!(token.len() >= 20, "{created}");
    assert!(
        created.stderr.contains("API token `ada-ci`")
            && created.stderr.contains("for user `ada`")
            && created.stderr.contains("shown this once"),
        "{created}"
    );
    assert!(!created.stderr.contains(&token), "{created}");

    // Ada's token lists ada's tokens only, never a value.
    let listed = kiln(&server, &token, &["token", "list"], "");
    let tokens = listed.ok();
    assert_eq!(
        header(tokens),
        "ID | NAME | USER | CREATED | EXPIRES | LAST USED | REVOKED"
    );
    assert_eq!(tokens.lines().count(), 2, "{tokens}");
    let ada_ci = cells(tokens.lines().nth(1).unwrap());
    assert_eq!(ada_ci[1..3], ["ada-ci", "ada"], "{tokens}");
    assert_eq!(ada_ci[4], "in 23h", "{tokens}");
    assert_eq!(ada_ci[6], "-", "{tokens}");
    assert!(!tokens.contains("admin-laptop") && !tokens.contains(&token));

    // Ada is no admin.
    let refused = kiln(&server, &token, &["user", "list"], "");
    let message = refused.failed(1);
    assert!(
        message.starts_with("error: the server refused this request (403 Forbidden): "),
        "{refused}"
    );
    assert!(refused.stdout.is_empty(), "{refused}");

    // A private job is invisible to ada until she is a member of it.
    let (status, job) = server
        .send(
            reqwest::Method::PUT,
            "/api/v1/jobs/app",
            json!({"kind": "freestyle", "pipeline": "version: 1\ntasks:\n  a:\n    steps:\n      - run: true\n"}),
        )
        .await;
    assert!(status.is_success(), "{job}");
    let hidden = kiln(&server, &token, &["member", "list", "app"], "");
    assert!(hidden.failed(1).contains("Not Found"), "{hidden}");
    let set = admin(&server, &["member", "set", "app", "ada", "developer"]);
    assert_eq!(set.ok(), "`ada` is now developer of job `app`\n");
    let members = kiln(&server, &token, &["member", "list", "app"], "");
    let members = members.ok();
    assert!(members.starts_with("USER"), "{members}");
    assert_eq!(
        row(members, "ada").expect(members)[..2],
        ["ada", "developer"]
    );
    // A developer may not hand out roles.
    let refused = kiln(
        &server,
        &token,
        &["member", "set", "app", "ada", "maintainer"],
        "",
    );
    assert!(refused.failed(1).contains("(403 Forbidden)"), "{refused}");
    let removed = admin(&server, &["member", "remove", "app", "ada"]);
    assert_eq!(removed.ok(), "removed `ada` from job `app`\n");
    let members = admin(&server, &["member", "list", "app"]);
    assert_eq!(row(members.ok(), "ada"), None, "{members}");

    // A revoked token stops working at once, and stays listed as revoked.
    let listed = admin(
        &server,
        &["token", "list", "--user", "ada", "--output", "json"],
    );
    let listed: Value = serde_json::from_str(listed.ok()).unwrap();
    let id = listed[0]["id"].as_i64().expect("a token id").to_string();
    let revoked = admin(&server, &["token", "revoke", &id]);
    assert_eq!(
        revoked.ok(),
        format!("revoked token {id}: it no longer works\n")
    );
    let refused = kiln(&server, &token, &["token", "list"], "");
    assert!(
        refused
            .failed(1)
            .contains("the server refused the token (401)"),
        "{refused}"
    );
    let tokens = admin(&server, &["token", "list", "--user", "ada"]);
    let ada_ci = row(tokens.ok(), &id).expect(&tokens.stdout);
    assert_eq!(
        ada_ci.last().map(String::as_str),
        Some("just now"),
        "{tokens}"
    );

    // The audit log tells who made ada, and only that when asked.
    let audit = admin(&server, &["audit", "--action", "user.create"]);
    let entries = audit.ok();
    assert_eq!(
        header(entries),
        "WHEN | ACTOR | ACTION | OBJECT | SOURCE | DETAIL"
    );
    assert_eq!(entries.lines().count(), 2, "{entries}");
    let entry = cells(entries.lines().nth(1).unwrap());
    assert_eq!(
        entry[1..4],
        ["admin", "user.create", "user/ada"],
        "{entries}"
    );
    assert!(entry[4].starts_with("127.0.0.1"), "{entries}");
    // One entry of many, and a word that there are more.
    let newest = admin(&server, &["audit", "--limit", "1"]);
    assert_eq!(newest.ok().lines().count(), 2, "{newest}");
    assert!(
        newest.stderr.contains("older entries not shown"),
        "{newest}"
    );
    let every = admin(&server, &["audit", "--all", "--output", "json"]);
    let every: Value = serde_json::from_str(every.ok()).unwrap();
    let actions: Vec<&str> = every["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|entry| entry["action"].as_str())
        .collect();
    for action in [
        "user.create",
        "token.create",
        "member.set",
        "member.remove",
        "token.revoke",
    ] {
        assert!(actions.contains(&action), "{action} in {actions:?}");
    }
}

#[tokio::test]
async fn disabling_a_user_stops_their_tokens_and_deleting_removes_them() {
    let server = Server::start(None);
    let created = admin(&server, &["user", "create", "bob"]);
    assert_eq!(
        created.ok(),
        "created user `bob`: user, enabled, no password\n"
    );
    let token = token_for(&server, "bob", "bob-laptop");
    kiln(&server, &token, &["token", "list"], "").ok();

    let disabled = admin(&server, &["user", "set", "bob", "--disable"]);
    assert_eq!(
        disabled.ok(),
        "updated user `bob`: user, disabled, no password\n"
    );
    let refused = kiln(&server, &token, &["token", "list"], "");
    assert!(refused.failed(1).contains("(401)"), "{refused}");

    let changed = kiln(
        &server,
        ADMIN,
        &[
            "user",
            "set",
            "bob",
            "--enable",
            "--role",
            "admin",
            "--password-stdin",
        ],
        "a long enough password\n",
    );
    assert_eq!(
        changed.ok(),
        "updated user `bob`: admin, enabled, with a password\n"
    );
    // Bob is an admin now: he may list the users.
    let users = kiln(&server, &token, &["user", "list"], "");
    assert_eq!(row(users.ok(), "bob").expect(&users.stdout)[1], "admin");

    let deleted = admin(&server, &["user", "delete", "bob"]);
    assert_eq!(deleted.ok(), "deleted user `bob`\n");
    let users = admin(&server, &["user", "list"]);
    assert_eq!(row(users.ok(), "bob"), None, "{users}");
    let refused = kiln(&server, &token, &["token", "list"], "");
    assert!(refused.failed(1).contains("(401)"), "{refused}");

    // Usage errors: no password on standard input, nothing to change.
    let empty = kiln(
        &server,
        ADMIN,
        &["user", "create", "carol", "--password-stdin"],
        "",
    );
    assert!(
        empty
            .failed(2)
            .contains("error: the password is empty: pass it on standard input"),
        "{empty}"
    );
    let nothing = admin(&server, &["user", "set", "carol"]);
    assert!(nothing.failed(2).contains("--role"), "{nothing}");
    let users = admin(&server, &["user", "list"]);
    assert_eq!(row(users.ok(), "carol"), None, "{users}");
}
