//! Does a job's `repository` name the repository an event is about?
//!
//! People write a repository as whatever they cloned it by: an https URL
//! with or without `.git` or credentials, an `ssh://` URL, the scp-like
//! `git@host:owner/name.git`, or the forge's full name `owner/name`. All
//! of them are reduced to `host/path` (lowercase, no scheme, user, port,
//! `.git` or trailing slash) and compared; a bare full name is compared
//! with the event's full name. Forges treat paths case-insensitively, and
//! so does this.

use crate::event::Repository;

/// Whether `job_repository` (a job's `repository` field) is `repository`.
pub fn same_repository(job_repository: &str, repository: &Repository) -> bool {
    let wanted = job_repository.trim();
    if wanted.is_empty() {
        return false;
    }
    if is_full_name(wanted) {
        return trim_path(wanted).eq_ignore_ascii_case(trim_path(&repository.full_name));
    }
    // A URL that is no forge's (a `file://` URL, a path) matches only
    // itself, as the event gives it.
    let Some(wanted) = location(wanted) else {
        return repository
            .urls
            .iter()
            .any(|url| trim_path(url.trim()) == trim_path(wanted));
    };
    repository
        .urls
        .iter()
        .filter_map(|url| location(url))
        .any(|url| url == wanted)
}

/// What the forge's API calls the repository a job's `repository` names:
/// its `owner/name` (GitLab: `group/subgroup/name`), lowercase when read
/// from a URL; `None` for a local path or `file://` URL, which names no
/// repository of a forge.
pub fn api_name(job_repository: &str) -> Option<String> {
    let written = job_repository.trim();
    if is_full_name(written) {
        return Some(trim_path(written).to_string());
    }
    let location = location(written)?;
    location.split_once('/').map(|(_, path)| path.to_string())
}

/// `owner/name` or `group/subgroup/name`: no scheme, no host.
fn is_full_name(text: &str) -> bool {
    !text.contains("://")
        && !text.contains(':')
        && !text.starts_with('/')
        && text.contains('/')
        && !text
            .split('/')
            .next()
            .is_some_and(|first| first.contains('.'))
}

fn trim_path(path: &str) -> &str {
    let path = path.trim_matches('/');
    path.strip_suffix(".git").unwrap_or(path)
}

/// `host/path` of a clone or web URL, lowercase; `None` when it is none.
pub fn location(url: &str) -> Option<String> {
    let url = url.trim();
    let (authority_and_path, scp_like) = match url.split_once("://") {
        Some((scheme, rest)) => {
            let scheme = scheme.to_ascii_lowercase();
            if !matches!(
                scheme.as_str(),
                "http" | "https" | "ssh" | "git" | "git+ssh"
            ) {
                return None;
            }
            (rest, false)
        }
        // `git@host:owner/name.git`
        None => (url, true),
    };
    let (authority, path) = if scp_like {
        let (authority, path) = authority_and_path.split_once(':')?;
        if path.starts_with("//") {
            return None;
        }
        (authority, path)
    } else {
        match authority_and_path.find('/') {
            Some(at) => authority_and_path.split_at(at),
            None => (authority_and_path, ""),
        }
    };
    // Drop `user[:password]@` and `:port`.
    let host = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    let host = match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    };
    let path = path.split(['?', '#']).next().unwrap_or("");
    let path = trim_path(path);
    if host.is_empty() || path.is_empty() {
        return None;
    }
    Some(format!("{}/{}", host, path).to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello() -> Repository {
        Repository {
            id: Some("186853002".into()),
            full_name: "Codertocat/Hello-World".into(),
            urls: vec![
                "https://github.com/Codertocat/Hello-World.git".into(),
                "git@github.com:Codertocat/Hello-World.git".into(),
                "git://github.com/Codertocat/Hello-World.git".into(),
                "https://github.com/Codertocat/Hello-World".into(),
            ],
        }
    }

    #[test]
    fn every_way_of_writing_the_repository_matches() {
        for written in [
            "https://github.com/Codertocat/Hello-World.git",
            "https://github.com/codertocat/hello-world",
            "https://github.com/Codertocat/Hello-World/",
            "https://user:token@github.com/Codertocat/Hello-World.git",
            "git@github.com:Codertocat/Hello-World.git",
            "git@github.com:Codertocat/Hello-World",
            "ssh://git@github.com/Codertocat/Hello-World.git",
            "ssh://git@github.com:22/Codertocat/Hello-World.git",
            "Codertocat/Hello-World",
            "codertocat/hello-world",
        ] {
            assert!(same_repository(written, &hello()), "{written}");
        }
    }

    #[test]
    fn other_repositories_do_not() {
        for written in [
            "https://github.com/Codertocat/Hello-World-2.git",
            "https://github.com/Codertocat",
            "https://gitlab.com/Codertocat/Hello-World.git",
            "https://github.com/Other/Hello-World",
            "Other/Hello-World",
            "Hello-World",
            "file:///srv/git/Hello-World.git",
            "",
        ] {
            assert!(!same_repository(written, &hello()), "{written}");
        }
    }

    #[test]
    fn a_local_url_matches_only_itself() {
        let local = Repository {
            id: None,
            full_name: "team/app".into(),
            urls: vec!["file:///srv/git/app.git".into()],
        };
        assert!(same_repository("file:///srv/git/app.git", &local));
        assert!(same_repository("file:///srv/git/app", &local));
        assert!(!same_repository("file:///srv/git/other.git", &local));
        assert!(!same_repository("/srv/git/app.git", &local));
    }

    #[test]
    fn api_names_come_from_urls_and_full_names() {
        assert_eq!(
            api_name("https://github.com/Octo/App.git").as_deref(),
            Some("octo/app")
        );
        assert_eq!(
            api_name("git@gitlab.example.com:group/sub/app.git").as_deref(),
            Some("group/sub/app")
        );
        assert_eq!(api_name("Octo/App").as_deref(), Some("Octo/App"));
        assert_eq!(api_name("file:///srv/git/app.git"), None);
        assert_eq!(api_name("/srv/git/app.git"), None);
    }

    #[test]
    fn nested_groups_of_gitlab_match() {
        let project = Repository {
            id: Some("15".into()),
            full_name: "group/sub/app".into(),
            urls: vec![
                "http://gitlab.example.com/group/sub/app.git".into(),
                "git@gitlab.example.com:group/sub/app.git".into(),
            ],
        };
        assert!(same_repository("group/sub/app", &project));
        assert!(same_repository(
            "https://gitlab.example.com/group/sub/app",
            &project
        ));
        assert!(!same_repository("group/app", &project));
    }
}
