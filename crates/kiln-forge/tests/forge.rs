//! Real payloads through `kiln_forge::event::parse`: every GitHub example
//! GitHub publishes (npm `@octokit/webhooks-examples`, installed by
//! `scripts/setup-test-env.sh`), and GitLab and Gitea payloads written to
//! their documented shapes (`tests/fixtures`). For each, what Kiln reads
//! is checked against what the payload itself says, and no byte sequence
//! makes the parsers panic.

use std::path::PathBuf;

use http::{HeaderMap, HeaderValue};
use kiln_forge::ForgeKind;
use kiln_forge::event::{Outcome, Trigger, TriggerKind, parse};
use proptest::prelude::*;
use serde_json::Value;

fn examples_path() -> PathBuf {
    let root = std::env::var("KILN_NPM_FIXTURES").unwrap_or_else(|_| "/opt/kiln-test/npm".into());
    PathBuf::from(root).join("node_modules/@octokit/webhooks-examples/api.github.com/index.json")
}

/// Every (event name, payload) GitHub publishes.
fn github_examples() -> Vec<(String, Value)> {
    let path = examples_path();
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; scripts/setup-test-env.sh installs GitHub's webhook examples",
            path.display()
        )
    });
    let index: Vec<Value> = serde_json::from_str(&text).unwrap();
    index
        .into_iter()
        .flat_map(|event| {
            let name = event["name"].as_str().unwrap().to_string();
            event["examples"]
                .as_array()
                .unwrap()
                .clone()
                .into_iter()
                .map(move |example| (name.clone(), example))
        })
        .collect()
}

fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.insert(*name, HeaderValue::from_str(value).unwrap());
    }
    map
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name),
    )
    .unwrap()
}

fn trigger(outcome: Outcome) -> Trigger {
    match outcome {
        Outcome::Trigger(trigger) => *trigger,
        other => panic!("expected a trigger, got {other:?}"),
    }
}

#[test]
fn every_github_example_is_read_as_github_means_it() {
    let examples = github_examples();
    assert!(examples.len() > 300, "only {} examples", examples.len());
    let mut seen = std::collections::BTreeMap::<&str, usize>::new();
    for (event, payload) in &examples {
        let body = serde_json::to_vec(payload).unwrap();
        let delivery = parse(
            ForgeKind::Github,
            &headers(&[("x-github-event", event), ("x-github-delivery", "d-1")]),
            &body,
        )
        .unwrap_or_else(|e| panic!("a `{event}` example was refused: {e}"));
        assert_eq!(delivery.key.as_deref(), Some("d-1"));
        let outcome = delivery.outcome;
        match event.as_str() {
            "ping" => {
                assert_eq!(outcome, Outcome::Ping);
                *seen.entry("ping").or_default() += 1;
            }
            "push" => {
                let after = payload["after"].as_str().unwrap();
                if payload["deleted"] == Value::Bool(true) {
                    assert!(
                        matches!(&outcome, Outcome::Ignored(reason) if reason.contains("deleted")),
                        "{outcome:?}"
                    );
                    *seen.entry("push deleted").or_default() += 1;
                    continue;
                }
                let trigger = trigger(outcome);
                let reference = payload["ref"].as_str().unwrap();
                let head_commit = payload["head_commit"]["id"].as_str().unwrap_or(after);
                assert_eq!(trigger.sha, head_commit);
                assert_eq!(
                    trigger.repository.full_name,
                    payload["repository"]["full_name"]
                );
                assert!(
                    trigger.repository.urls.contains(
                        &payload["repository"]["clone_url"]
                            .as_str()
                            .unwrap()
                            .to_string()
                    )
                );
                if let Some(name) = reference.strip_prefix("refs/tags/") {
                    assert_eq!(trigger.kind, TriggerKind::Tag { name: name.into() });
                    *seen.entry("tag").or_default() += 1;
                } else {
                    let branch = reference.strip_prefix("refs/heads/").unwrap();
                    assert_eq!(
                        trigger.kind,
                        TriggerKind::Push {
                            branch: branch.into()
                        }
                    );
                    // A new branch has no change set to start from.
                    let before = payload["before"].as_str().unwrap();
                    assert_eq!(trigger.before.is_none(), before.bytes().all(|b| b == b'0'));
                    *seen.entry("push").or_default() += 1;
                }
            }
            "pull_request" => {
                let action = payload["action"].as_str().unwrap();
                if !["opened", "synchronize", "reopened"].contains(&action) {
                    assert!(
                        matches!(&outcome, Outcome::Ignored(reason) if reason.contains(action)),
                        "{action}: {outcome:?}"
                    );
                    *seen.entry("pull_request ignored").or_default() += 1;
                    continue;
                }
                let pr = &payload["pull_request"];
                let trigger = trigger(outcome);
                assert_eq!(trigger.sha, pr["head"]["sha"].as_str().unwrap());
                let TriggerKind::PullRequest(read) = trigger.kind else {
                    panic!("not a pull request: {:?}", trigger.kind)
                };
                assert_eq!(read.number, pr["number"].as_i64().unwrap());
                assert_eq!(read.title, pr["title"].as_str().unwrap());
                assert_eq!(read.author.as_deref(), pr["user"]["login"].as_str());
                assert_eq!(read.head_branch, pr["head"]["ref"].as_str().unwrap());
                assert_eq!(read.base_branch, pr["base"]["ref"].as_str().unwrap());
                assert_eq!(read.head_ref, format!("refs/pull/{}/head", read.number));
                let fork = pr["head"]["repo"]["id"] != pr["base"]["repo"]["id"]
                    || pr["head"]["repo"].is_null();
                assert_eq!(read.from_fork, fork);
                *seen.entry("pull_request").or_default() += 1;
            }
            _ => {
                assert!(
                    matches!(&outcome, Outcome::Ignored(reason) if reason.contains(event.as_str())),
                    "`{event}`: {outcome:?}"
                );
                *seen.entry("other").or_default() += 1;
            }
        }
    }
    // Each kind of outcome was met, so none of the branches above is idle.
    for kind in [
        "ping",
        "push",
        "push deleted",
        "tag",
        "pull_request",
        "pull_request ignored",
        "other",
    ] {
        assert!(
            seen.get(kind).copied().unwrap_or(0) > 0,
            "no `{kind}` example: {seen:?}"
        );
    }
}

#[test]
fn a_github_pull_request_from_a_deleted_fork_is_a_fork() {
    let (_, mut payload) = github_examples()
        .into_iter()
        .find(|(event, p)| event == "pull_request" && p["action"] == "synchronize")
        .unwrap();
    payload["pull_request"]["head"]["repo"] = Value::Null;
    let delivery = parse(
        ForgeKind::Github,
        &headers(&[("x-github-event", "pull_request")]),
        &serde_json::to_vec(&payload).unwrap(),
    )
    .unwrap();
    let TriggerKind::PullRequest(pr) = trigger(delivery.outcome).kind else {
        panic!()
    };
    assert!(pr.from_fork);
}

fn gitlab(event: &'static str, file: &str) -> Outcome {
    parse(
        ForgeKind::Gitlab,
        &headers(&[("x-gitlab-event", event), ("idempotency-key", "k-1")]),
        &fixture(file),
    )
    .unwrap()
    .outcome
}

#[test]
fn gitlab_pushes_tags_and_merge_requests() {
    let push = trigger(gitlab("Push Hook", "gitlab-push.json"));
    assert_eq!(
        push.kind,
        TriggerKind::Push {
            branch: "master".into()
        }
    );
    assert_eq!(push.sha, "da1560886d4f094c3e6c9ef40349f7d38b5d27d7");
    assert_eq!(
        push.before.as_deref(),
        Some("95790bf891e76fee5e1747ab589903a6a1f80f22")
    );
    assert_eq!(push.repository.full_name, "mike/diaspora");
    assert_eq!(push.repository.id.as_deref(), Some("15"));
    assert!(kiln_forge::repository::same_repository(
        "git@example.com:mike/diaspora.git",
        &push.repository
    ));

    assert!(matches!(
        gitlab("Push Hook", "gitlab-push-branch-deleted.json"),
        Outcome::Ignored(reason) if reason.contains("deleted")
    ));

    // The run is at the tag's commit, not the annotated tag's object.
    let tag = trigger(gitlab("Tag Push Hook", "gitlab-tag-push.json"));
    assert_eq!(
        tag.kind,
        TriggerKind::Tag {
            name: "v1.0.0".into()
        }
    );
    assert_eq!(tag.sha, "da1560886d4f094c3e6c9ef40349f7d38b5d27d7");

    for file in [
        "gitlab-merge-request-open.json",
        "gitlab-merge-request-update-commits.json",
    ] {
        let mr = trigger(gitlab("Merge Request Hook", file));
        let TriggerKind::PullRequest(pr) = mr.kind else {
            panic!("{file}")
        };
        assert_eq!(pr.number, 1);
        assert_eq!(pr.head_branch, "ms-viewport");
        assert_eq!(pr.base_branch, "master");
        assert_eq!(pr.head_ref, "refs/merge-requests/1/head");
        assert!(!pr.from_fork, "{file}");
        assert_eq!(mr.sha, "da1560886d4f094c3e6c9ef40349f7d38b5d27d7");
    }
    let fork = trigger(gitlab(
        "Merge Request Hook",
        "gitlab-merge-request-open-fork.json",
    ));
    let TriggerKind::PullRequest(pr) = fork.kind else {
        panic!()
    };
    assert!(pr.from_fork);

    for file in [
        "gitlab-merge-request-update-title.json",
        "gitlab-merge-request-close.json",
    ] {
        assert!(
            matches!(gitlab("Merge Request Hook", file), Outcome::Ignored(reason) if reason.contains("no new commits")),
            "{file}"
        );
    }
    assert!(matches!(
        gitlab("Issue Hook", "gitlab-push.json"),
        Outcome::Ignored(reason) if reason.contains("Issue Hook")
    ));
}

fn gitea(event: &'static str, file: &str) -> kiln_forge::event::Delivery {
    parse(
        ForgeKind::Gitea,
        // Gitea sends GitHub's event header too; the forge's kind decides.
        &headers(&[("x-gitea-event", event), ("x-github-event", event)]),
        &fixture(file),
    )
    .unwrap()
}

#[test]
fn gitea_pushes_tags_and_pull_requests() {
    let push = gitea("push", "gitea-push.json");
    let key = push.key.clone().unwrap();
    let push = trigger(push.outcome);
    assert_eq!(
        push.kind,
        TriggerKind::Push {
            branch: "develop".into()
        }
    );
    assert_eq!(push.sha, "bffeb74224043ba2feb48d137756c8a9331c449a");
    assert!(kiln_forge::repository::same_repository(
        "ssh://gitea@localhost:2222/gitea/webhooks.git",
        &push.repository
    ));
    // A redelivery says the same, so it has the same key.
    assert_eq!(gitea("push", "gitea-push.json").key.unwrap(), key);

    let tag = trigger(gitea("push", "gitea-push-tag.json").outcome);
    assert_eq!(
        tag.kind,
        TriggerKind::Tag {
            name: "v1.2.0".into()
        }
    );

    let opened = trigger(gitea("pull_request", "gitea-pull-request-opened.json").outcome);
    let TriggerKind::PullRequest(pr) = opened.kind else {
        panic!()
    };
    assert_eq!((pr.number, pr.from_fork), (3, false));
    assert_eq!(pr.head_ref, "refs/pull/3/head");
    assert_eq!(pr.author.as_deref(), Some("contributor"));

    let synced =
        trigger(gitea("pull_request", "gitea-pull-request-synchronized-fork.json").outcome);
    let TriggerKind::PullRequest(pr) = synced.kind else {
        panic!()
    };
    assert!(pr.from_fork);
    assert_eq!(
        synced.before.as_deref(),
        Some("28e1879d029cb852e4844d9c718537df08844e03")
    );

    assert!(matches!(
        gitea("pull_request", "gitea-pull-request-closed.json").outcome,
        Outcome::Ignored(reason) if reason.contains("closed")
    ));
}

#[test]
fn bodies_that_are_not_the_event_are_clear_errors() {
    let body = fixture("gitea-push.json");
    let body = body.trim_ascii_end();
    for cut in [0, 1, body.len() / 2, body.len() - 1] {
        let error = parse(
            ForgeKind::Gitea,
            &headers(&[("x-gitea-event", "push")]),
            &body[..cut],
        )
        .unwrap_err();
        assert!(error.to_string().contains("`push` event's body"), "{error}");
    }
    let error = parse(ForgeKind::Github, &HeaderMap::new(), b"{}").unwrap_err();
    assert!(error.to_string().contains("X-GitHub-Event"), "{error}");
    // A pull request event whose body is a push.
    let error = parse(
        ForgeKind::Gitlab,
        &headers(&[("x-gitlab-event", "Merge Request Hook")]),
        &fixture("gitlab-push.json"),
    )
    .unwrap_err();
    assert!(error.to_string().contains("object_attributes"), "{error}");
}

const EVENTS: [(ForgeKind, &str, &str); 6] = [
    (ForgeKind::Github, "x-github-event", "push"),
    (ForgeKind::Github, "x-github-event", "pull_request"),
    (ForgeKind::Gitlab, "x-gitlab-event", "Push Hook"),
    (ForgeKind::Gitlab, "x-gitlab-event", "Merge Request Hook"),
    (ForgeKind::Gitea, "x-gitea-event", "push"),
    (ForgeKind::Gitea, "x-gitea-event", "pull_request"),
];

proptest! {
    #[test]
    fn no_bytes_make_a_parser_panic(which in 0..EVENTS.len(), body in proptest::collection::vec(any::<u8>(), 0..512)) {
        let (kind, header, event) = EVENTS[which];
        let _ = parse(kind, &headers(&[(header, event)]), &body);
    }

    #[test]
    fn no_mangled_payload_makes_a_parser_panic(
        which in 0..EVENTS.len(),
        file in 0..4usize,
        at in any::<proptest::sample::Index>(),
        byte in any::<u8>(),
    ) {
        let files = ["gitea-push.json", "gitlab-push.json", "gitlab-merge-request-open.json", "gitea-pull-request-opened.json"];
        let mut body = fixture(files[file]);
        let at = at.index(body.len());
        body[at] = byte;
        let (kind, header, event) = EVENTS[which];
        let _ = parse(kind, &headers(&[(header, event)]), &body);
    }
}
