//! What `kiln run` learns about the repository it runs in.

use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(Debug, Clone)]
pub struct RepoInfo {
    /// The git work tree's top, or the current directory outside git.
    pub root: PathBuf,
    pub branch: Option<String>,
    pub sha: Option<String>,
}

impl RepoInfo {
    pub fn discover(start: &Path) -> RepoInfo {
        let root = git(start, &["rev-parse", "--show-toplevel"])
            .map(PathBuf::from)
            .unwrap_or_else(|| start.to_path_buf());
        let branch = git(&root, &["symbolic-ref", "--quiet", "--short", "HEAD"]);
        let sha = git(&root, &["rev-parse", "--verify", "--quiet", "HEAD"]);
        RepoInfo { root, branch, sha }
    }

    /// `KILN_JOB` for a local run: the repository directory's name.
    pub fn job_name(&self) -> String {
        self.root
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "local".into())
    }
}

fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let output = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8(output.stdout).ok()?.trim().to_string();
    (output.status.success() && !text.is_empty()).then_some(text)
}
