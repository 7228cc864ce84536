//! Each checked field's schema pattern and its check agree: what the
//! pattern generates is accepted, and any string is accepted exactly when
//! the pattern matches it.

use kiln_api::fields::{
    BranchName, CommitSha, Cursor, ExpiresIn, JobName, PageSize, PipelinePath, RepositoryUrl,
    SecretName, SecretValue, StatusFilter, TokenName, UserName,
};
use proptest::prelude::*;
use serde_json::{Value, json};
use utoipa::PartialSchema;

/// A type's name, its pattern, its check, and the schema carrying the pattern.
type Rule = (&'static str, &'static str, fn(&str) -> bool, Value);

fn rules() -> Vec<Rule> {
    fn schema<T: PartialSchema>() -> Value {
        serde_json::to_value(T::schema()).unwrap()
    }
    vec![
        (
            "JobName",
            JobName::PATTERN,
            |s| JobName::new(s).is_ok(),
            schema::<JobName>(),
        ),
        (
            "TokenName",
            TokenName::PATTERN,
            |s| TokenName::new(s).is_ok(),
            schema::<TokenName>(),
        ),
        (
            "UserName",
            UserName::PATTERN,
            |s| UserName::new(s).is_ok(),
            schema::<UserName>(),
        ),
        (
            "ExpiresIn",
            ExpiresIn::PATTERN,
            |s| ExpiresIn::new(s).is_ok(),
            schema::<ExpiresIn>(),
        ),
        (
            "SecretName",
            SecretName::PATTERN,
            |s| SecretName::new(s).is_ok(),
            schema::<SecretName>(),
        ),
        (
            "BranchName",
            BranchName::PATTERN,
            |s| BranchName::new(s).is_ok(),
            schema::<BranchName>(),
        ),
        (
            "CommitSha",
            CommitSha::PATTERN,
            |s| CommitSha::new(s).is_ok(),
            schema::<CommitSha>(),
        ),
        (
            "RepositoryUrl",
            RepositoryUrl::PATTERN,
            |s| RepositoryUrl::new(s).is_ok(),
            schema::<RepositoryUrl>(),
        ),
        (
            "PipelinePath",
            PipelinePath::PATTERN,
            |s| PipelinePath::new(s).is_ok(),
            schema::<PipelinePath>(),
        ),
        (
            "Cursor",
            Cursor::PATTERN,
            |s| s.parse::<Cursor>().is_ok(),
            schema::<Cursor>(),
        ),
    ]
}

/// Strings near the rules' edges: the characters they name, and others.
fn tricky() -> impl Strategy<Value = String> {
    let alphabet = prop::sample::select(vec![
        'a', 'Z', '0', '9', '_', '-', '.', '/', ' ', '\t', '\n', '\r', '\0', '~', '^', ':', 'é',
        '\u{a0}', '\u{3000}', 'f', 'F', 'g', 's', 'm', 'h', 'd',
    ]);
    prop_oneof![
        prop::collection::vec(alphabet, 0..8).prop_map(|c| c.into_iter().collect()),
        any::<String>(),
        "[a-z0-9./-]{0,6}(\\.\\.)?[a-z0-9./-]{0,6}",
        "[A-Za-z0-9_.-]{60,70}",
        "[A-Za-z0-9_]{125,130}",
        "[0-9a-fA-F]{0,70}",
        "[0-9]{16,20}",
    ]
}

#[test]
fn schemas_carry_the_checked_patterns() {
    for (name, pattern, _, schema) in rules() {
        assert_eq!(schema["pattern"], json!(pattern), "{name}");
        assert_eq!(schema["type"], "string", "{name}");
    }
}

#[test]
fn what_a_pattern_generates_is_accepted() {
    for (name, pattern, accepts, _) in rules() {
        // proptest generates from the pattern without its anchors.
        let body = pattern
            .strip_prefix('^')
            .unwrap()
            .strip_suffix('$')
            .unwrap();
        let strategy = proptest::string::string_regex(body).unwrap();
        proptest::test_runner::TestRunner::default()
            .run(&strategy, |value| {
                prop_assert!(accepts(&value), "refuses {:?}", value);
                Ok(())
            })
            .unwrap_or_else(|e| panic!("{name} ({pattern}): {e}"));
    }
}

proptest! {
    #[test]
    fn a_check_accepts_exactly_what_its_pattern_matches(value in tricky()) {
        for (name, pattern, accepts, _) in rules() {
            let matches = regex::Regex::new(pattern).unwrap().is_match(&value);
            prop_assert_eq!(accepts(&value), matches, "{} on {:?} ({})", name, value, pattern);
        }
    }
}

#[test]
fn rules_by_example() {
    assert!(JobName::new("app-1.x_y").is_ok());
    assert!(JobName::new("-app").is_err());
    assert!(JobName::new("a".repeat(65)).is_err());
    assert!(SecretName::new("_TOKEN2").is_ok());
    assert!(SecretName::new("2TOKEN").is_err());
    assert!(BranchName::new("feature/x").is_ok());
    assert!(BranchName::new("--upload-pack=x").is_err());
    assert!(PipelinePath::new("ci/.kiln.yml").is_ok());
    assert!(PipelinePath::new("./a/../b").is_err());
    assert!(PipelinePath::new("/etc/passwd").is_err());
    assert!(PipelinePath::new("...").is_ok());
    assert!(RepositoryUrl::new("-oProxyCommand=x").is_err());
    assert!(RepositoryUrl::new("file:///tmp/repo").is_ok());
    assert_eq!("".parse::<Cursor>(), Ok(Cursor(None)));
    assert_eq!("12".parse::<Cursor>(), Ok(Cursor(Some(12))));
    assert!("-1".parse::<Cursor>().is_err());
}

#[test]
fn secret_values_are_counted_in_characters() {
    assert!(SecretValue::new("").is_err());
    // Three characters of six bytes are still too short; four of one byte
    // are enough.
    let short = SecretValue::new("ééé").unwrap_err().to_string();
    assert!(
        short.contains("4 to 65536") && short.contains("masked"),
        "{short}"
    );
    assert!(SecretValue::new("abcd").is_ok());
    assert!(SecretValue::new("é".repeat(SecretValue::MAX_CHARS)).is_ok());
    assert!(SecretValue::new("x".repeat(SecretValue::MAX_CHARS + 1)).is_err());
    let schema = serde_json::to_value(SecretValue::schema()).unwrap();
    assert_eq!(schema["minLength"], SecretValue::MIN_CHARS);
    assert_eq!(schema["maxLength"], SecretValue::MAX_CHARS);
}

#[test]
fn page_sizes_and_statuses() {
    let limit = |v: Value| serde_json::from_value::<PageSize>(v).map(PageSize::get);
    assert_eq!(limit(json!(1)).unwrap(), 1);
    assert_eq!(limit(json!(500)).unwrap(), 500);
    assert!(limit(json!(0)).is_err());
    assert!(limit(json!(501)).is_err());
    let schema = serde_json::to_value(PageSize::schema()).unwrap();
    assert_eq!(
        (schema["minimum"].clone(), schema["maximum"].clone()),
        (json!(1), json!(500))
    );

    assert_eq!("".parse::<StatusFilter>(), Ok(StatusFilter(None)));
    assert_eq!(
        "running".parse::<StatusFilter>(),
        Ok(StatusFilter(Some("running")))
    );
    assert!(
        "bogus"
            .parse::<StatusFilter>()
            .unwrap_err()
            .contains("bogus")
    );
    let schema = serde_json::to_value(StatusFilter::schema()).unwrap();
    assert_eq!(
        schema["enum"].as_array().unwrap().len(),
        kiln_api::STATUSES.len() + 1
    );
}
