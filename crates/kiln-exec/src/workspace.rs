//! The files a task starts with, and the files it leaves behind.
//!
//! A task never works in the user's checkout: the executor copies a
//! [`SourceTree`] into a private workspace (a temporary directory, or a
//! container filesystem), and afterwards [`collect_outputs`] copies back only
//! what the pipeline declared as artifacts or reports.

use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};
use std::process::Command;

use kiln_pipeline::glob_match;

/// The files of a source directory, as a task will see them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceTree {
    pub root: PathBuf,
    /// Paths relative to `root`, sorted; regular files and symlinks only.
    pub files: Vec<PathBuf>,
}

impl SourceTree {
    /// Lists the files under `root`. In a git work tree these are the tracked
    /// files plus untracked ones that are not ignored (what a fresh clone plus
    /// the user's edits would hold), so build output such as `target/` is not
    /// copied into every task. Elsewhere, every file but `.git` and `.kiln`.
    pub fn scan(root: &Path) -> io::Result<SourceTree> {
        let root = root.canonicalize()?;
        let mut files = match git_files(&root) {
            Some(files) => files,
            None => {
                let mut files = Vec::new();
                walk(&root, Path::new(""), &mut files)?;
                files
            }
        };
        files.retain(|f| !is_kiln_state(f) && fs::symlink_metadata(root.join(f)).is_ok());
        files.sort();
        files.dedup();
        Ok(SourceTree { root, files })
    }

    /// An empty tree, for tasks that need no source.
    pub fn empty() -> SourceTree {
        SourceTree {
            root: PathBuf::from("/nonexistent"),
            files: Vec::new(),
        }
    }

    /// Copies every file into `dest`, keeping permissions and symlinks.
    pub fn copy_to(&self, dest: &Path) -> io::Result<()> {
        for file in &self.files {
            let from = self.root.join(file);
            let to = dest.join(file);
            if let Some(parent) = to.parent() {
                fs::create_dir_all(parent)?;
            }
            let meta = fs::symlink_metadata(&from)?;
            if meta.file_type().is_symlink() {
                std::os::unix::fs::symlink(fs::read_link(&from)?, &to)?;
            } else if meta.is_file() {
                fs::copy(&from, &to)?;
            }
        }
        Ok(())
    }

    /// Appends every file to a tar archive under `prefix` (e.g. `workspace`).
    pub fn append_to_tar<W: io::Write>(
        &self,
        tar: &mut tar::Builder<W>,
        prefix: &Path,
    ) -> io::Result<()> {
        tar.follow_symlinks(false);
        let mut dir = tar::Header::new_gnu();
        dir.set_entry_type(tar::EntryType::Directory);
        dir.set_mode(0o777);
        dir.set_size(0);
        dir.set_mtime(0);
        tar.append_data(&mut dir, prefix, io::empty())?;
        for file in &self.files {
            tar.append_path_with_name(self.root.join(file), prefix.join(file))?;
        }
        Ok(())
    }
}

fn is_kiln_state(path: &Path) -> bool {
    path.components().next() == Some(Component::Normal(".kiln".as_ref()))
}

fn git_files(root: &Path) -> Option<Vec<PathBuf>> {
    let output = Command::new("git")
        .arg("-C")
        .arg(root)
        .args([
            "ls-files",
            "-z",
            "--cached",
            "--others",
            "--exclude-standard",
        ])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    if !output.status.success() {
        return None;
    }
    let files = output
        .stdout
        .split(|b| *b == 0)
        .filter(|p| !p.is_empty())
        .map(|p| PathBuf::from(String::from_utf8_lossy(p).into_owned()))
        .filter(|p| is_relative_inside(p))
        .collect();
    Some(files)
}

fn walk(root: &Path, relative: &Path, files: &mut Vec<PathBuf>) -> io::Result<()> {
    for entry in fs::read_dir(root.join(relative))? {
        let entry = entry?;
        let name = entry.file_name();
        if relative.as_os_str().is_empty() && (name == ".git" || name == ".kiln") {
            continue;
        }
        let path = relative.join(&name);
        let kind = entry.file_type()?;
        if kind.is_dir() {
            walk(root, &path, files)?;
        } else if kind.is_file() || kind.is_symlink() {
            files.push(path);
        }
    }
    Ok(())
}

/// True for a relative path with no `..`, root or prefix components.
pub fn is_relative_inside(path: &Path) -> bool {
    !path.as_os_str().is_empty()
        && path
            .components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
}

/// Whether `path` (relative to the workspace, `/`-separated) is selected by one
/// of `patterns`: it matches a pattern, or lies under a directory that does.
pub fn selected_by(patterns: &[String], path: &Path) -> bool {
    let path = path.to_string_lossy();
    let path = path.trim_start_matches("./");
    patterns.iter().any(|pattern| {
        let pattern = pattern.trim_start_matches("./").trim_end_matches('/');
        glob_match(pattern, path)
            || path
                .match_indices('/')
                .any(|(slash, _)| glob_match(pattern, &path[..slash]))
    })
}

/// Copies the regular files under `workspace` selected by `patterns` into
/// `dest`, keeping their relative paths. Symlinks are not followed, so a task
/// cannot smuggle files from outside its workspace into its artifacts.
pub fn collect_outputs(
    workspace: &Path,
    patterns: &[String],
    dest: &Path,
) -> io::Result<Vec<PathBuf>> {
    let mut collected = Vec::new();
    if patterns.is_empty() {
        return Ok(collected);
    }
    let mut files = Vec::new();
    walk_all(workspace, Path::new(""), &mut files)?;
    for file in files {
        if selected_by(patterns, &file) {
            let to = dest.join(&file);
            if let Some(parent) = to.parent() {
                fs::create_dir_all(parent)?;
            }
            fs::copy(workspace.join(&file), &to)?;
            collected.push(file);
        }
    }
    collected.sort();
    Ok(collected)
}

fn walk_all(root: &Path, relative: &Path, files: &mut Vec<PathBuf>) -> io::Result<()> {
    let entries = match fs::read_dir(root.join(relative)) {
        Ok(entries) => entries,
        // A directory the task made unreadable is not worth failing the run for.
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let path = relative.join(entry.file_name());
        let kind = entry.file_type()?;
        if kind.is_dir() {
            walk_all(root, &path, files)?;
        } else if kind.is_file() {
            files.push(path);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selection_by_file_glob_and_directory() {
        let patterns = vec![
            "target/release/app".to_string(),
            "reports/*.xml".into(),
            "dist".into(),
        ];
        assert!(selected_by(&patterns, Path::new("target/release/app")));
        assert!(selected_by(&patterns, Path::new("reports/unit.xml")));
        assert!(!selected_by(&patterns, Path::new("reports/sub/unit.xml")));
        assert!(selected_by(&patterns, Path::new("dist/a/b.js")));
        assert!(!selected_by(&patterns, Path::new("src/main.rs")));
    }

    #[test]
    fn inside_paths() {
        assert!(is_relative_inside(Path::new("a/b")));
        assert!(!is_relative_inside(Path::new("../a")));
        assert!(!is_relative_inside(Path::new("/etc/passwd")));
        assert!(!is_relative_inside(Path::new("a/../../b")));
    }
}
