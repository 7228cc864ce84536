//! The files a task starts with, and the files it leaves behind.
//!
//! A task never works in the user's checkout: the executor copies a
//! [`SourceTree`] into a private workspace (a temporary directory, or a
//! container filesystem), and afterwards [`collect_outputs`] copies back only
//! what the pipeline declared as artifacts or reports, following symlinks
//! only while they stay inside the workspace (the docker executor applies
//! the same rule, [`Refusal`], to the container's files).

use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};
use std::process::Command;

use kiln_pipeline::glob_match;

use crate::{LogStream, TaskEvents, TaskOutcome, TaskSpec};

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

/// Whether a file under the directory `dir` (relative to the workspace)
/// could be selected by one of `patterns`: a pattern selects `dir` or one of
/// its parents, or may match something below it. Directories for which this
/// is false are not walked, and symlinks in them not looked at.
pub fn may_select_within(patterns: &[String], dir: &Path) -> bool {
    let dir = dir.to_string_lossy();
    let dir = dir.trim_start_matches("./");
    patterns.iter().any(|pattern| {
        let pattern = pattern.trim_start_matches("./").trim_end_matches('/');
        let mut segments = pattern.split('/');
        for name in dir.split('/').filter(|s| !s.is_empty()) {
            match segments.next() {
                // The pattern selected a parent of `dir`, so all of it.
                None => return true,
                // `**` may match any number of directories from here on.
                Some(segment) if segment.contains("**") => return true,
                Some(segment) if glob_match(segment, name) => {}
                Some(_) => return false,
            }
        }
        true
    })
}

/// How many symlinks an output may be reached through.
pub const MAX_LINKS: usize = 8;

/// What collecting one kind of output found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Collected {
    /// The files kept, relative to the workspace, sorted.
    pub files: Vec<PathBuf>,
    /// The selected symlinks that were not followed, sorted by path.
    pub refused: Vec<RefusedLink>,
}

impl Collected {
    pub(crate) fn sort(&mut self) {
        self.files.sort();
        self.files.dedup();
        self.refused.sort_by(|a, b| a.path.cmp(&b.path));
        self.refused.dedup();
    }
}

/// A symlink among a task's outputs that was not followed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefusedLink {
    /// Where the link is, relative to the workspace.
    pub path: PathBuf,
    /// Its target, as written in the link.
    pub target: String,
    pub reason: Refusal,
}

/// Why a symlink was not followed. The rule is the same on both executors:
/// a link that stays inside the workspace is followed, as if its target were
/// at its place; any other is not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Its target is outside the workspace (the host's files for the
    /// process executor, the image's for docker).
    Outside,
    /// Its target is inside the workspace but does not exist.
    Missing,
    /// Its target is a directory that contains the link: following it
    /// would never end.
    Loop,
    /// It is reached through [`MAX_LINKS`] symlinks already.
    TooDeep,
}

impl RefusedLink {
    /// The line the log shows about it, e.g. "artifact `out/passwd` is a
    /// symlink to `/etc/passwd`, outside the workspace: not kept".
    pub fn describe(&self, noun: &str) -> String {
        let why = match self.reason {
            Refusal::Outside => "outside the workspace: not kept".to_string(),
            Refusal::Missing => "which does not exist: not kept".to_string(),
            Refusal::Loop => "a directory that contains it: not followed".to_string(),
            Refusal::TooDeep => format!("more than {MAX_LINKS} symlinks deep: not followed"),
        };
        format!(
            "{noun} `{}` is a symlink to `{}`, {why}",
            self.path.display(),
            self.target
        )
    }
}

/// Whether a symlink at `link` whose target resolves to `target` may be
/// followed, having been reached through `hops` symlinks; all three paths
/// are fully resolved (on the host, or in the container).
pub(crate) fn judge_link(
    workspace: &Path,
    link: &Path,
    target: &Path,
    hops: usize,
) -> Result<(), Refusal> {
    if !target.starts_with(workspace) {
        Err(Refusal::Outside)
    } else if link.starts_with(target) {
        Err(Refusal::Loop)
    } else if hops >= MAX_LINKS {
        Err(Refusal::TooDeep)
    } else {
        Ok(())
    }
}

/// Copies the regular files under `workspace` selected by `patterns` into
/// `dest`, keeping their relative paths. A symlink is followed only while it
/// stays inside the workspace (see [`Refusal`]), so a task cannot smuggle
/// the host's files into its artifacts through one.
pub fn collect_outputs(
    workspace: &Path,
    patterns: &[String],
    dest: &Path,
) -> io::Result<Collected> {
    let mut collected = Collected::default();
    if patterns.is_empty() {
        return Ok(collected);
    }
    let root = workspace.canonicalize()?;
    let mut walk = Walk {
        root: &root,
        patterns,
        files: Vec::new(),
        refused: Vec::new(),
    };
    walk.dir(&root, Path::new(""), 0)?;
    for (name, real) in walk.files {
        let to = dest.join(&name);
        if let Some(parent) = to.parent() {
            fs::create_dir_all(parent)?;
        }
        fs::copy(real, &to)?;
        collected.files.push(name);
    }
    collected.refused = walk.refused;
    collected.sort();
    Ok(collected)
}

/// A walk of the workspace for [`collect_outputs`].
struct Walk<'a> {
    /// The workspace, fully resolved.
    root: &'a Path,
    patterns: &'a [String],
    /// Selected files: their name in the workspace, and where they really are.
    files: Vec<(PathBuf, PathBuf)>,
    refused: Vec<RefusedLink>,
}

impl Walk<'_> {
    /// Walks the directory that is really at `real` (fully resolved) and is
    /// named `named` in the workspace, reached through `hops` symlinks.
    fn dir(&mut self, real: &Path, named: &Path, hops: usize) -> io::Result<()> {
        let entries = match fs::read_dir(real) {
            Ok(entries) => entries,
            // A directory the task made unreadable is not worth failing the run for.
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => return Ok(()),
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            let (name, path) = (named.join(entry.file_name()), entry.path());
            let kind = entry.file_type()?;
            if kind.is_dir() {
                if may_select_within(self.patterns, &name) {
                    self.dir(&path, &name, hops)?;
                }
            } else if kind.is_file() {
                if selected_by(self.patterns, &name) {
                    self.files.push((name, path));
                }
            } else if kind.is_symlink() {
                self.link(&path, name, hops)?;
            }
        }
        Ok(())
    }

    /// Follows the symlink at `path` (named `name`) if the rule allows it.
    fn link(&mut self, path: &Path, name: PathBuf, hops: usize) -> io::Result<()> {
        let selected = selected_by(self.patterns, &name);
        if !selected && !may_select_within(self.patterns, &name) {
            return Ok(());
        }
        let written = fs::read_link(path)?;
        let judged = match fs::canonicalize(path) {
            Ok(target) => judge_link(self.root, path, &target, hops).map(|()| target),
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => Err(Refusal::TooDeep),
            // Nothing there: where the link points says which refusal it is.
            Err(_) => {
                let base = path.parent().unwrap_or(self.root);
                match judge_link(self.root, path, &lexical_join(base, &written), hops) {
                    Err(Refusal::Outside) => Err(Refusal::Outside),
                    _ => Err(Refusal::Missing),
                }
            }
        };
        match judged {
            Err(reason) => self.refused.push(RefusedLink {
                path: name,
                target: written.to_string_lossy().into_owned(),
                reason,
            }),
            Ok(target) => {
                let meta = fs::metadata(&target)?;
                if meta.is_dir() {
                    self.dir(&target, &name, hops + 1)?;
                } else if meta.is_file() && selected {
                    self.files.push((name, target));
                }
            }
        }
        Ok(())
    }
}

/// `target` taken from the directory `base` without touching the file
/// system, for a link whose target does not exist.
fn lexical_join(base: &Path, target: &Path) -> PathBuf {
    let mut path = base.to_path_buf();
    for component in target.components() {
        match component {
            Component::RootDir => path = PathBuf::from("/"),
            Component::ParentDir => {
                path.pop();
            }
            Component::Normal(name) => path.push(name),
            Component::CurDir | Component::Prefix(_) => {}
        }
    }
    path
}

/// The two kinds of file a task may keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OutputKind {
    Artifacts,
    Reports,
}

impl OutputKind {
    const ALL: [OutputKind; 2] = [OutputKind::Artifacts, OutputKind::Reports];

    /// Their directory under the task's outputs.
    fn dir(self) -> &'static str {
        match self {
            OutputKind::Artifacts => "artifacts",
            OutputKind::Reports => "reports",
        }
    }

    /// What the log calls one.
    fn noun(self) -> &'static str {
        match self {
            OutputKind::Artifacts => "artifact",
            OutputKind::Reports => "report",
        }
    }

    fn patterns(self, spec: &TaskSpec) -> &[String] {
        match self {
            OutputKind::Artifacts => &spec.artifacts,
            OutputKind::Reports => &spec.reports,
        }
    }

    fn record(self, outcome: &mut TaskOutcome, files: Vec<PathBuf>) {
        match self {
            OutputKind::Artifacts => outcome.artifacts = files,
            OutputKind::Reports => outcome.reports = files,
        }
    }
}

/// Collects the task's artifacts and reports with `collect_one` (the
/// executor's way of copying the files some patterns select into a
/// directory, `None` when it was interrupted), records them in `outcome`,
/// and says in the log what was refused and which patterns matched nothing.
/// Failing to collect is noted, not fatal: the steps' result stands.
pub(crate) async fn collect_each<'a, F, Fut>(
    spec: &'a TaskSpec,
    events: &dyn TaskEvents,
    outcome: &mut TaskOutcome,
    mut collect_one: F,
) where
    F: FnMut(&'a [String], PathBuf) -> Fut,
    Fut: Future<Output = Option<Result<Collected, String>>>,
{
    for kind in OutputKind::ALL {
        let patterns = kind.patterns(spec);
        if patterns.is_empty() {
            continue;
        }
        let Some(collected) = collect_one(patterns, spec.outputs.join(kind.dir())).await else {
            return;
        };
        match collected {
            Ok(collected) => {
                log_collected(kind.noun(), patterns, &collected, events);
                kind.record(outcome, collected.files);
            }
            Err(e) => events.log(
                LogStream::System,
                format!("collecting {} failed: {e}\n", kind.dir()).as_bytes(),
            ),
        }
    }
}

/// Says what was refused, and which patterns matched nothing: a typo there
/// otherwise goes unnoticed. A pattern that matched only refused links is
/// explained by their notes.
fn log_collected(noun: &str, patterns: &[String], collected: &Collected, events: &dyn TaskEvents) {
    for link in &collected.refused {
        events.log(
            LogStream::System,
            format!("{}\n", link.describe(noun)).as_bytes(),
        );
    }
    for pattern in patterns {
        let single = std::slice::from_ref(pattern);
        let found = collected.files.iter().any(|f| selected_by(single, f))
            || collected.refused.iter().any(|link| {
                selected_by(single, &link.path) || may_select_within(single, &link.path)
            });
        if !found {
            events.log(
                LogStream::System,
                format!("{noun} pattern `{pattern}` matched no file\n").as_bytes(),
            );
        }
    }
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

    fn patterns(list: &[&str]) -> Vec<String> {
        list.iter().map(|p| p.to_string()).collect()
    }

    #[test]
    fn directories_are_walked_only_where_a_pattern_may_select() {
        let selects = |list: &[&str], dir: &str| may_select_within(&patterns(list), Path::new(dir));
        assert!(selects(&["out"], "out"));
        assert!(selects(&["out"], "out/deep/er"));
        assert!(selects(&["out/*.txt"], "out"));
        assert!(selects(&["target/release/app"], "target"));
        assert!(selects(&["r-*/*.xml"], "r-x"));
        assert!(selects(&["**/*.xml"], "any/where"));
        assert!(selects(&["a/**"], "a/b/c"));
        assert!(!selects(&["out"], "target"));
        assert!(!selects(&["target/release/app"], "target/debug"));
        assert!(!selects(&["out/*.txt"], "src"));
    }

    #[test]
    fn links_leaving_the_workspace_or_looping_are_refused() {
        let (workspace, link) = (Path::new("/workspace"), Path::new("/workspace/out/l"));
        for (target, hops, judged) in [
            ("/workspace/data/x", 0, Ok(())),
            ("/etc/passwd", 0, Err(Refusal::Outside)),
            ("/workspacex", 0, Err(Refusal::Outside)),
            ("/workspace", 0, Err(Refusal::Loop)),
            ("/workspace/out", 0, Err(Refusal::Loop)),
            ("/workspace/data", MAX_LINKS, Err(Refusal::TooDeep)),
        ] {
            assert_eq!(
                judge_link(workspace, link, Path::new(target), hops),
                judged,
                "{target} after {hops} links"
            );
        }
        assert_eq!(
            lexical_join(Path::new("/ws/out"), Path::new("../nowhere")),
            Path::new("/ws/nowhere")
        );
        assert_eq!(
            lexical_join(Path::new("/ws/out"), Path::new("/etc")),
            Path::new("/etc")
        );
    }

    #[test]
    fn inside_paths() {
        assert!(is_relative_inside(Path::new("a/b")));
        assert!(!is_relative_inside(Path::new("../a")));
        assert!(!is_relative_inside(Path::new("/etc/passwd")));
        assert!(!is_relative_inside(Path::new("a/../../b")));
    }
}
