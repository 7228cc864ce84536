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
        };
        assert!(when.matches(Some("main"), Event::Push));
        assert!(!when.matches(Some("main"), Event::Manual));
        assert!(!when.matches(Some("dev"), Event::Push));
        assert!(!when.matches(None, Event::Push));
        assert!(When::default().matches(None, Event::Manual));
    }
}
