use serde::{Deserialize, Serialize};

use crate::Event;

/// Conditions under which a task runs; every given list must match.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct When {
    /// Branch globs (`*` stops at `/`, `**` crosses it, `?` is one character).
    /// Empty means any branch.
    pub branch: Vec<String>,
    /// Events; empty means any event.
    pub event: Vec<Event>,
    /// Path globs with `!` exclusions, in order (see [`paths_select`]).
    /// Empty means any change, or none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
}

/// The files a push or pull request changed, as far as they are known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChangeSet {
    /// These paths, relative to the repository's root.
    Files(Vec<String>),
    /// Too many to list: every `paths` filter matches.
    Everything,
}

impl When {
    /// Whether a run of `branch` started by `event` should run the task.
    /// With no branch known (a detached commit) a branch filter never matches.
    pub fn matches(&self, branch: Option<&str>, event: Event) -> bool {
        let branch_ok = self.branch.is_empty()
            || branch.is_some_and(|b| self.branch.iter().any(|glob| glob_match(glob, b)));
        let event_ok = self.event.is_empty() || self.event.contains(&event);
        branch_ok && event_ok
    }

    /// Whether the run's change set lets the task run: always when there
    /// are no `paths`, or no known change set (`None`: api, manual, cron, a
    /// new branch or tag), or too many changes to list; otherwise when
    /// [`paths_select`] selects at least one changed file.
    pub fn matches_paths(&self, changes: Option<&ChangeSet>) -> bool {
        match changes {
            _ if self.paths.is_empty() => true,
            None | Some(ChangeSet::Everything) => true,
            Some(ChangeSet::Files(files)) => files.iter().any(|f| paths_select(&self.paths, f)),
        }
    }
}

/// Whether the path globs `globs` select `path`: the globs are read in
/// order and the last one that matches `path` decides — a plain glob
/// selects it, a `!glob` leaves it out — as in `.gitignore`. A path no glob
/// matches is left out, so a list of only `!` globs selects nothing: write
/// `["**", "!docs/**"]` for "anything but docs". Globs are those of
/// [`glob_match`], matched against the whole path; a leading `/` is ignored.
pub fn paths_select(globs: &[String], path: &str) -> bool {
    globs
        .iter()
        .rev()
        .find_map(|glob| {
            let (exclude, pattern) = match glob.strip_prefix('!') {
                Some(rest) => (true, rest),
                None => (false, glob.as_str()),
            };
            let pattern = pattern.strip_prefix('/').unwrap_or(pattern);
            glob_match(pattern, path).then_some(!exclude)
        })
        .unwrap_or(false)
}

/// Matches `text` against a glob where `*` matches within one path segment,
/// `**` matches across segments and `?` matches one character other than `/`.
/// Runs in O(len(glob) × len(text)) time, whatever the input.
pub fn glob_match(glob: &str, text: &str) -> bool {
    #[derive(Clone, Copy)]
    enum Token {
        Char(char),
        Any,
        Star,
        DoubleStar,
    }
    let mut tokens = Vec::new();
    let mut chars = glob.chars().peekable();
    while let Some(c) = chars.next() {
        tokens.push(match c {
            '*' if chars.peek() == Some(&'*') => {
                while chars.peek() == Some(&'*') {
                    chars.next();
                }
                Token::DoubleStar
            }
            '*' => Token::Star,
            '?' => Token::Any,
            c => Token::Char(c),
        });
    }
    let text: Vec<char> = text.chars().collect();
    // matches[j]: the tokens seen so far match text[..j].
    let mut matches = vec![false; text.len() + 1];
    matches[0] = true;
    for token in tokens {
        let mut next = vec![false; text.len() + 1];
        match token {
            Token::Char(c) => {
                for j in 0..text.len() {
                    next[j + 1] = matches[j] && text[j] == c;
                }
            }
            Token::Any => {
                for j in 0..text.len() {
                    next[j + 1] = matches[j] && text[j] != '/';
                }
            }
            Token::Star | Token::DoubleStar => {
                let crosses = matches!(token, Token::DoubleStar);
                next[0] = matches[0];
                for j in 0..text.len() {
                    next[j + 1] = matches[j + 1] || (next[j] && (crosses || text[j] != '/'));
                }
            }
        }
        matches = next;
    }
    matches[text.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match("main", "main"));
        assert!(!glob_match("main", "mainline"));
        assert!(glob_match("release/*", "release/1.0"));
        assert!(!glob_match("release/*", "release/1.0/hotfix"));
        assert!(glob_match("release/**", "release/1.0/hotfix"));
        assert!(glob_match("feature-?", "feature-x"));
        assert!(glob_match("*", "anything"));
        assert!(!glob_match("*", "a/b"));
        assert!(glob_match("**", "a/b"));
    }

    #[test]
    fn when_filters_branch_and_event() {
        let when = When {
            branch: vec!["main".into()],
            event: vec![Event::Push],
            paths: Vec::new(),
        };
        assert!(when.matches(Some("main"), Event::Push));
        assert!(!when.matches(Some("main"), Event::Manual));
        assert!(!when.matches(Some("dev"), Event::Push));
        assert!(!when.matches(None, Event::Push));
        assert!(When::default().matches(None, Event::Manual));
    }

    fn globs_of(list: &[&str]) -> Vec<String> {
        list.iter().map(|g| g.to_string()).collect()
    }

    #[test]
    fn last_matching_glob_decides() {
        let globs = globs_of(&["**", "!docs/**", "docs/api/**"]);
        assert!(paths_select(&globs, "src/main.rs"));
        assert!(!paths_select(&globs, "docs/guide.md"));
        assert!(paths_select(&globs, "docs/api/index.md"));
        assert!(!paths_select(&globs_of(&["!docs/**"]), "src/main.rs"));
        assert!(paths_select(&globs_of(&["/src/**"]), "src/a/b.rs"));
        assert!(!paths_select(&globs_of(&["src/*"]), "src/a/b.rs"));
    }

    #[test]
    fn paths_need_a_known_change_set() {
        let when = When {
            paths: globs_of(&["src/**"]),
            ..When::default()
        };
        let docs = ChangeSet::Files(vec!["docs/a.md".into()]);
        let src = ChangeSet::Files(vec!["docs/a.md".into(), "src/lib.rs".into()]);
        assert!(!when.matches_paths(Some(&docs)));
        assert!(when.matches_paths(Some(&src)));
        assert!(when.matches_paths(None), "no change set runs the task");
        assert!(when.matches_paths(Some(&ChangeSet::Everything)));
        assert!(When::default().matches_paths(Some(&docs)));
    }

    /// A straightforward backtracking matcher, the definition the
    /// dynamic-programming one must agree with.
    fn reference(glob: &[char], text: &[char]) -> bool {
        match glob {
            [] => text.is_empty(),
            ['*', '*', rest @ ..] => {
                let rest = {
                    let mut r = rest;
                    while let ['*', more @ ..] = r {
                        r = more;
                    }
                    r
                };
                (0..=text.len()).any(|i| reference(rest, &text[i..]))
            }
            ['*', rest @ ..] => (0..=text.len())
                .take_while(|&i| i == 0 || text[i - 1] != '/')
                .any(|i| reference(rest, &text[i..])),
            ['?', rest @ ..] => {
                matches!(text.first(), Some(c) if *c != '/') && reference(rest, &text[1..])
            }
            [c, rest @ ..] => text.first() == Some(c) && reference(rest, &text[1..]),
        }
    }

    proptest::proptest! {
        #[test]
        fn glob_match_agrees_with_backtracking(
            glob in "[ab/*?]{0,8}",
            text in "[ab/]{0,10}",
        ) {
            let g: Vec<char> = glob.chars().collect();
            let t: Vec<char> = text.chars().collect();
            proptest::prop_assert_eq!(glob_match(&glob, &text), reference(&g, &t));
        }

        #[test]
        fn an_exclusion_after_everything_wins(
            path in "[a-z]{1,4}(/[a-z]{1,4}){0,3}",
        ) {
            let globs = vec!["**".to_string(), format!("!{path}")];
            proptest::prop_assert!(!paths_select(&globs, &path));
            proptest::prop_assert!(paths_select(&globs[..1], &path));
        }

        #[test]
        fn any_text_matches_itself_literally(text in "[a-z/.]{0,12}") {
            proptest::prop_assert!(glob_match(&text, &text));
        }
    }
}
