//! Copying artifacts and reports out of a task container.
//!
//! The container is untrusted: its archive may hold absolute paths, `..`,
//! symlinks or devices. Only regular files at plain relative paths selected by
//! the task's patterns are written, and never through a symlink on this side.
//!
//! Symlinks in the container follow the process executor's rule
//! ([`Refusal`]): one whose target stays inside the workspace is followed
//! (its target is downloaded under the link's name), any other is refused.
//! The engine resolves the links on the way to a path it is asked for
//! without a word, so no path asked for goes through one: a download stops
//! at the first link on its way, which the rule then judges.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use bollard::Docker;
use bollard::query_parameters::{
    ContainerArchiveInfoOptionsBuilder, DownloadFromContainerOptionsBuilder,
};

use super::{WORKSPACE, engine_message, is_not_found, pipe};
use crate::workspace::{
    Collected, Refusal, RefusedLink, is_relative_inside, judge_link, may_select_within, selected_by,
};

/// One path of the container to download.
struct Fetch {
    /// Where it is in the container, with no symlink on the way.
    path: PathBuf,
    /// What it is called in the workspace.
    named: PathBuf,
    /// How many symlinks led to it.
    hops: usize,
    /// The link that led to it, if any.
    via: Option<Link>,
}

/// A symlink found in a downloaded archive.
struct Link {
    /// What it is called in the workspace.
    named: PathBuf,
    /// Where it is in the container.
    at: PathBuf,
    /// Its target, as written in the link.
    target: String,
}

impl Link {
    fn refused(self, reason: Refusal) -> RefusedLink {
        RefusedLink {
            path: self.named,
            target: self.target,
            reason,
        }
    }
}

/// Copies the files of the container's workspace selected by `patterns` into
/// `dest`; returns their paths relative to the workspace, sorted, and the
/// links it refused.
pub(super) async fn collect(
    docker: &Docker,
    container: &str,
    patterns: &[String],
    dest: &Path,
) -> Result<Collected, String> {
    let workspace = Path::new(WORKSPACE);
    let mut collected = Collected::default();
    let mut fetches = Vec::new();
    for root in download_roots(patterns) {
        let named = first_link_on_the_way(docker, container, &root).await?;
        fetches.push(Fetch {
            // Not `/workspace/` for the whole workspace: a trailing slash
            // asks the engine to follow the path if it is a link.
            path: workspace.join(&named).components().collect(),
            named,
            hops: 0,
            via: None,
        });
    }
    while let Some(fetch) = fetches.pop() {
        let path = fetch.path.to_string_lossy().into_owned();
        let options = DownloadFromContainerOptionsBuilder::new()
            .path(&path)
            .build();
        let body = docker.download_from_container(container, Some(options));
        let (patterns, dest_dir) = (patterns.to_vec(), dest.to_path_buf());
        let (fetched, named) = (fetch.path.clone(), fetch.named.clone());
        let result = pipe::consume_blocking(body, move |reader| {
            extract(reader, &fetched, &named, &patterns, &dest_dir)
        })
        .await;
        let links = match result {
            Ok(extracted) => {
                collected.files.extend(extracted.files);
                extracted.links
            }
            Err(pipe::Consumed::Body(e)) if is_not_found(&e) => {
                match fetch.via {
                    Some(link) => collected.refused.push(link.refused(Refusal::Missing)),
                    None => tracing::debug!("{path} does not exist in the container"),
                }
                continue;
            }
            Err(pipe::Consumed::Body(e)) => {
                return Err(format!(
                    "copying {path} out of the container: {}",
                    engine_message(&e)
                ));
            }
            Err(pipe::Consumed::Consumer(e)) => {
                return Err(format!("copying {path} out of the container: {e}"));
            }
        };
        for link in links {
            let Some(target) = resolve(docker, container, &link.at).await? else {
                continue;
            };
            match judge_link(workspace, &link.at, &target, fetch.hops) {
                Err(reason) => collected.refused.push(link.refused(reason)),
                Ok(()) => fetches.push(Fetch {
                    path: target,
                    named: link.named.clone(),
                    hops: fetch.hops + 1,
                    via: Some(link),
                }),
            }
        }
    }
    collected.sort();
    Ok(collected)
}

/// Where the symlink at `path` leads, fully resolved by the engine in the
/// container; `None` if it is gone or no longer a link.
async fn resolve(docker: &Docker, container: &str, path: &Path) -> Result<Option<PathBuf>, String> {
    let options = ContainerArchiveInfoOptionsBuilder::new()
        .path(&path.to_string_lossy())
        .build();
    match docker
        .get_container_archive_info(container, Some(options))
        .await
    {
        Ok(stat) if !stat.link_target.is_empty() => Ok(Some(PathBuf::from(stat.link_target))),
        Ok(_) => Ok(None),
        Err(e) if is_not_found(&e) => Ok(None),
        Err(e) => Err(format!(
            "looking at {} in the container: {}",
            path.display(),
            engine_message(&e)
        )),
    }
}

/// `root`, or the first of its parents that is a symlink in the container:
/// the engine would follow that link on the way to `root` unasked.
async fn first_link_on_the_way(
    docker: &Docker,
    container: &str,
    root: &Path,
) -> Result<PathBuf, String> {
    let mut prefix = PathBuf::new();
    let components: Vec<_> = root.components().collect();
    // The last component itself is never followed: its archive holds the link.
    for component in components.iter().take(components.len().saturating_sub(1)) {
        prefix.push(component);
        if resolve(docker, container, &Path::new(WORKSPACE).join(&prefix))
            .await?
            .is_some()
        {
            return Ok(prefix);
        }
    }
    Ok(root.to_path_buf())
}

/// The directories to download: the literal leading part of each pattern, so
/// that `out/**` does not copy a whole `target/` across. Roots inside another
/// root are dropped, so no file arrives twice.
fn download_roots(patterns: &[String]) -> Vec<PathBuf> {
    let mut roots: Vec<PathBuf> = Vec::new();
    for pattern in patterns {
        let pattern = pattern.trim_start_matches("./").trim_end_matches('/');
        let literal: PathBuf = pattern
            .split('/')
            .take_while(|segment| !segment.contains(['*', '?', '[', '{']))
            .filter(|segment| !segment.is_empty() && *segment != ".")
            .collect();
        // A pattern reaching outside the workspace matches nothing in it.
        if !literal.as_os_str().is_empty() && !is_relative_inside(&literal) {
            continue;
        }
        roots.push(literal);
    }
    roots.sort();
    roots.dedup();
    let mut kept: Vec<PathBuf> = Vec::new();
    for root in roots {
        if !kept.iter().any(|k| root.starts_with(k)) {
            kept.push(root);
        }
    }
    kept
}

/// What one archive held.
struct Extracted {
    files: Vec<PathBuf>,
    /// The symlinks among the selected paths, or leading to where some may be.
    links: Vec<Link>,
}

/// Writes the selected files of the archive of `fetched` into `dest`, under
/// their workspace names (`fetched` is called `named` in the workspace).
fn extract(
    reader: &mut pipe::ChannelReader,
    fetched: &Path,
    named: &Path,
    patterns: &[String],
    dest: &Path,
) -> io::Result<Extracted> {
    // The archive of `/workspace/a/b` names its entries `b`, `b/…`.
    let parent = fetched.parent().unwrap_or(Path::new("/"));
    let mut archive = tar::Archive::new(reader);
    let mut extracted = Extracted {
        files: Vec::new(),
        links: Vec::new(),
    };
    for entry in archive.entries()? {
        let mut entry = entry?;
        let kind = entry.header().entry_type();
        if !matches!(kind, tar::EntryType::Regular | tar::EntryType::Symlink) {
            continue;
        }
        let name = entry.path()?.into_owned();
        if !is_relative_inside(&name) {
            tracing::warn!(
                "ignoring archive entry {} from the container",
                name.display()
            );
            continue;
        }
        let relative = clean(&named.join(name.components().skip(1).collect::<PathBuf>()));
        if !is_relative_inside(&relative) {
            continue;
        }
        if kind == tar::EntryType::Symlink {
            if selected_by(patterns, &relative) || may_select_within(patterns, &relative) {
                let target = entry
                    .link_name()?
                    .map(|t| t.to_string_lossy().into_owned())
                    .unwrap_or_default();
                extracted.links.push(Link {
                    named: relative,
                    at: parent.join(&name),
                    target,
                });
            }
            continue;
        }
        if !selected_by(patterns, &relative) {
            continue;
        }
        let to = dest.join(&relative);
        create_dirs(dest, relative.parent().unwrap_or(Path::new("")))?;
        // Replace rather than write through whatever is there already.
        match fs::symlink_metadata(&to) {
            Ok(meta) if meta.is_dir() => continue,
            Ok(_) => fs::remove_file(&to)?,
            Err(_) => {}
        }
        let mut file = fs::File::create(&to)?;
        io::copy(&mut entry, &mut file)?;
        // Keep executables executable; never set-id bits from an untrusted source.
        let mode = entry.header().mode().unwrap_or(0o644) & 0o755;
        file.set_permissions(fs::Permissions::from_mode(mode | 0o600))?;
        extracted.files.push(relative);
    }
    Ok(extracted)
}

fn clean(path: &Path) -> PathBuf {
    path.components()
        .filter(|c| matches!(c, Component::Normal(_)))
        .collect()
}

/// Creates `relative` under `dest` one level at a time, refusing to pass
/// through anything that is not a real directory.
fn create_dirs(dest: &Path, relative: &Path) -> io::Result<()> {
    let mut at = dest.to_path_buf();
    fs::create_dir_all(&at)?;
    for component in relative.components() {
        at.push(component);
        match fs::symlink_metadata(&at) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{} exists and is not a directory", at.display()),
                ));
            }
            Err(_) => fs::create_dir(&at)?,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roots(patterns: &[&str]) -> Vec<String> {
        let patterns: Vec<String> = patterns.iter().map(|p| p.to_string()).collect();
        download_roots(&patterns)
            .iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn downloads_only_the_literal_part_of_patterns() {
        assert_eq!(roots(&["out"]), ["out"]);
        assert_eq!(roots(&["reports/*.xml", "reports/unit/a.xml"]), ["reports"]);
        assert_eq!(roots(&["./target/release/app"]), ["target/release/app"]);
        assert_eq!(roots(&["**/*.xml", "out"]), [""]);
        assert_eq!(roots(&["../etc/passwd"]), Vec::<String>::new());
    }
}
