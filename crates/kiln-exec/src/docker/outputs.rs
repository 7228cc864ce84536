//! Copying artifacts and reports out of a task container.
//!
//! The container is untrusted: its archive may hold absolute paths, `..`,
//! symlinks or devices. Only regular files at plain relative paths selected by
//! the task's patterns are written, and never through a symlink.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use bollard::Docker;
use bollard::query_parameters::DownloadFromContainerOptionsBuilder;

use super::{WORKSPACE, engine_message, is_not_found, pipe};
use crate::workspace::{is_relative_inside, selected_by};

/// Copies the files of the container's workspace selected by `patterns` into
/// `dest`; returns their paths relative to the workspace, sorted.
pub(super) async fn collect(
    docker: &Docker,
    container: &str,
    patterns: &[String],
    dest: &Path,
) -> Result<Vec<PathBuf>, String> {
    let mut collected = Vec::new();
    for root in download_roots(patterns) {
        // The archive of `/workspace/a/b` names its entries `b/…`.
        let archived = Path::new(WORKSPACE.trim_start_matches('/')).join(&root);
        let base = archived.parent().map(Path::to_path_buf).unwrap_or_default();
        let path = format!("{WORKSPACE}/{}", root.to_string_lossy());
        let options = DownloadFromContainerOptionsBuilder::new()
            .path(path.trim_end_matches('/'))
            .build();
        let body = docker.download_from_container(container, Some(options));
        let (patterns, dest_dir) = (patterns.to_vec(), dest.to_path_buf());
        let result = pipe::consume_blocking(body, move |reader| {
            extract(reader, &base, &patterns, &dest_dir)
        })
        .await;
        match result {
            Ok(files) => collected.extend(files),
            Err(pipe::Consumed::Body(e)) if is_not_found(&e) => {
                tracing::debug!("{path} does not exist in the container")
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
        }
    }
    collected.sort();
    collected.dedup();
    Ok(collected)
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

fn extract(
    reader: &mut pipe::ChannelReader,
    base: &Path,
    patterns: &[String],
    dest: &Path,
) -> io::Result<Vec<PathBuf>> {
    let mut archive = tar::Archive::new(reader);
    let mut files = Vec::new();
    for entry in archive.entries()? {
        let mut entry = entry?;
        if entry.header().entry_type() != tar::EntryType::Regular {
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
        let Ok(relative) = base
            .join(&name)
            .strip_prefix(WORKSPACE.trim_start_matches('/'))
            .map(clean)
        else {
            continue;
        };
        if !is_relative_inside(&relative) || !selected_by(patterns, &relative) {
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
        files.push(relative);
    }
    Ok(files)
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
