//! Getting the image a task or service runs in: present locally, pulled, or
//! built from the task's `build:` and cached by the content of its context.

use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use bollard::Docker;
use bollard::query_parameters::{
    BuildImageOptionsBuilder, CreateImageOptionsBuilder, TagImageOptionsBuilder,
};
use futures_util::{StreamExt, TryStreamExt};
use kiln_pipeline::Build;
use sha2::{Digest, Sha256};

use super::{engine_message, is_not_found, pipe};
use crate::workspace::is_relative_inside;
use crate::{LogStream, SourceTree, TaskEvents};

/// Repository of the images built from tasks' Dockerfiles, unless the
/// executor is given another.
pub const DEFAULT_BUILD_REPOSITORY: &str = "kiln-build";

/// Name under which a Dockerfile from outside the build context travels in
/// the context archive.
const OUTSIDE_DOCKERFILE: &str = ".kiln-Dockerfile";

/// Whether `image` is present locally.
async fn is_present(docker: &Docker, image: &str) -> Result<bool, String> {
    match docker.inspect_image(image).await {
        Ok(_) => Ok(true),
        Err(e) if is_not_found(&e) => Ok(false),
        // The engine found the image but described it in a shape this client
        // version does not parse; for our purpose that is an answer.
        Err(
            bollard::errors::Error::JsonDataError { .. }
            | bollard::errors::Error::JsonSerdeError { .. },
        ) => Ok(true),
        Err(e) => Err(format!(
            "cannot inspect image {image}: {}",
            engine_message(&e)
        )),
    }
}

/// Makes sure `image` is present, pulling it only when it is not.
pub(super) async fn ensure(
    docker: &Docker,
    image: &str,
    events: &dyn TaskEvents,
) -> Result<(), String> {
    if is_present(docker, image).await? {
        tracing::debug!("image {image} is present");
        return Ok(());
    }
    events.log(
        LogStream::System,
        format!("pulling image {image}\n").as_bytes(),
    );
    let (from_image, tag) = split_reference(image);
    let mut options = CreateImageOptionsBuilder::new().from_image(from_image);
    if let Some(tag) = tag {
        options = options.tag(tag);
    }
    let mut progress = std::pin::pin!(docker.create_image(Some(options.build()), None, None));
    while let Some(item) = progress.next().await {
        match item {
            // Per-layer progress would flood the log; the overall lines say enough.
            Ok(info) if info.id.is_none() => {
                if let Some(status) = info.status {
                    events.log(LogStream::System, format!("{status}\n").as_bytes());
                }
            }
            Ok(_) => {}
            Err(e) => {
                return Err(format!(
                    "image {image} is not present locally and could not be pulled: {}",
                    engine_message(&e)
                ));
            }
        }
    }
    // An engine may end a failed pull without an error message.
    if is_present(docker, image).await? {
        Ok(())
    } else {
        Err(format!(
            "image {image} is not present locally and could not be pulled"
        ))
    }
}

/// Splits `name[:tag]` or `name@digest` for the pull API, which pulls every
/// tag of a repository when given none. A `:` before the last `/` belongs to a
/// registry's port, not a tag.
fn split_reference(image: &str) -> (&str, Option<&str>) {
    if image.contains('@') {
        return (image, None);
    }
    let last_slash = image.rfind('/').map_or(0, |i| i + 1);
    match image[last_slash..].rfind(':') {
        Some(colon) => (
            &image[..last_slash + colon],
            Some(&image[last_slash + colon + 1..]),
        ),
        None => (image, Some("latest")),
    }
}

/// What goes into the archive sent to the engine for a build.
pub(super) struct BuildContext {
    /// (file on disk, name in the archive), sorted by name.
    files: Vec<(PathBuf, PathBuf)>,
    /// The Dockerfile's path in the archive.
    dockerfile: String,
    /// The Dockerfile's content when it lies outside the context.
    outside_dockerfile: Option<Vec<u8>>,
    tag: String,
}

impl BuildContext {
    /// `<repository>:<hash of the context>`.
    pub(super) fn tag(&self) -> &str {
        &self.tag
    }
}

/// How [`build`] came by its image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Obtained {
    Cached,
    Built,
}

/// Reads the context of `build` and derives the tag of its image in `repository`.
pub(super) async fn plan(
    build: &Build,
    source: &SourceTree,
    repository: &str,
) -> Result<BuildContext, String> {
    let (build_spec, tree, repository) = (build.clone(), source.clone(), repository.to_string());
    tokio::task::spawn_blocking(move || plan_build(&build_spec, &tree, &repository))
        .await
        .map_err(|e| format!("preparing the build context: {e}"))?
}

/// Makes sure the image of `context` exists, building it unless an image of
/// that tag (same Dockerfile path, same context content) does.
pub(super) async fn build(
    docker: &Docker,
    build: &Build,
    context: BuildContext,
    events: &dyn TaskEvents,
) -> Result<Obtained, String> {
    let tag = context.tag.clone();
    if is_present(docker, &tag).await? {
        touch(docker, &tag).await;
        events.log(
            LogStream::System,
            format!("using cached image {tag}\n").as_bytes(),
        );
        return Ok(Obtained::Cached);
    }
    events.log(
        LogStream::System,
        format!(
            "building image {tag} from {} (context {})\n",
            build.dockerfile, build.context
        )
        .as_bytes(),
    );
    let options = BuildImageOptionsBuilder::new()
        .dockerfile(&context.dockerfile)
        .t(&tag)
        .rm(true)
        .forcerm(true)
        .build();
    let BuildContext {
        files,
        outside_dockerfile,
        ..
    } = context;
    let (chunks, job) = pipe::stream_from_blocking(move |out| {
        write_context(out, &files, outside_dockerfile.as_deref())
    });
    let body = bollard::body_try_stream(chunks.map_ok(Into::into));
    let mut progress = std::pin::pin!(docker.build_image(options, None, Some(body)));
    let mut failure = None;
    while let Some(item) = progress.next().await {
        match item {
            Ok(info) => {
                if let Some(text) = info.stream {
                    events.log(LogStream::System, text.as_bytes());
                }
                if let Some(status) = info.status {
                    events.log(LogStream::System, format!("{status}\n").as_bytes());
                }
            }
            Err(e) => {
                failure = Some(engine_message(&e));
                break;
            }
        }
    }
    let archived = job
        .await
        .map_err(|e| format!("archiving the build context: {e}"))?;
    if let Err(e) = archived {
        return Err(format!(
            "archiving the build context {}: {e}",
            build.context
        ));
    }
    if let Some(message) = failure {
        return Err(format!(
            "building {}: {}",
            build.dockerfile,
            message.trim_end()
        ));
    }
    if is_present(docker, &tag).await? {
        events.log(LogStream::System, format!("built image {tag}\n").as_bytes());
        Ok(Obtained::Built)
    } else {
        Err(format!(
            "building {} produced no image {tag}",
            build.dockerfile
        ))
    }
}

/// Tags the image again under the tag it has, which records this use as its
/// last tag time: pruning goes by it (see `cache`). Failing only makes the
/// image look older than it is, so it is not an error.
async fn touch(docker: &Docker, tag: &str) {
    let Some((repository, name)) = tag.rsplit_once(':') else {
        return;
    };
    let options = TagImageOptionsBuilder::new()
        .repo(repository)
        .tag(name)
        .build();
    if let Err(e) = docker.tag_image(tag, Some(options)).await {
        tracing::debug!("recording the use of {tag}: {}", engine_message(&e));
    }
}

/// Lists the context's files (those of the task's source tree, so `.git`,
/// `.kiln` and git-ignored build output stay out) and derives the image tag
/// from their names, modes and contents and the Dockerfile's path.
fn plan_build(
    build: &Build,
    source: &SourceTree,
    repository: &str,
) -> Result<BuildContext, String> {
    let context = normalise(&build.context).ok_or_else(|| {
        format!(
            "build context `{}` must be a relative path inside the repository",
            build.context
        )
    })?;
    let dockerfile_path = normalise(&build.dockerfile)
        .filter(|p| !p.as_os_str().is_empty())
        .ok_or_else(|| {
            format!(
                "dockerfile `{}` must be a relative path inside the repository",
                build.dockerfile
            )
        })?;
    // Both are read from the checkout only. A symlink on the way out of it
    // (a Dockerfile linked to /etc/passwd, a context linked to /) would
    // send a file of the agent's machine to the engine, and through the
    // build's errors into the task's log.
    let checkout = source
        .root
        .canonicalize()
        .map_err(|e| format!("cannot resolve the task's checkout: {e}"))?;
    inside_checkout(&checkout, &context, "build context", &build.context)?;
    let dockerfile_disk =
        inside_checkout(&checkout, &dockerfile_path, "dockerfile", &build.dockerfile)?;
    let files: Vec<(PathBuf, PathBuf)> = source
        .files
        .iter()
        .filter_map(|f| {
            f.strip_prefix(&context)
                .ok()
                .map(|inside| (source.root.join(f), inside.to_path_buf()))
        })
        .filter(|(_, inside)| !inside.as_os_str().is_empty())
        .collect();
    let in_context = dockerfile_path
        .strip_prefix(&context)
        .ok()
        .filter(|inside| files.iter().any(|(_, name)| name == inside))
        .map(Path::to_path_buf);
    let dockerfile_content = fs::read(&dockerfile_disk)
        .map_err(|e| format!("cannot read dockerfile {}: {e}", build.dockerfile))?;

    let mut hasher = Sha256::new();
    hasher.update(b"kiln-build/1\0");
    hasher.update(dockerfile_path.as_os_str().as_encoded_bytes());
    hasher.update(b"\0");
    for (disk, name) in &files {
        hash_file(&mut hasher, disk, name)
            .map_err(|e| format!("reading {}: {e}", disk.display()))?;
    }
    let (dockerfile, outside_dockerfile) = match in_context {
        Some(inside) => (inside.to_string_lossy().into_owned(), None),
        None => {
            hasher.update(b"outside-dockerfile\0");
            hasher.update((dockerfile_content.len() as u64).to_le_bytes());
            hasher.update(&dockerfile_content);
            (OUTSIDE_DOCKERFILE.to_string(), Some(dockerfile_content))
        }
    };
    let digest = hasher.finalize();
    let hex: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
    Ok(BuildContext {
        files,
        dockerfile,
        outside_dockerfile,
        tag: format!("{repository}:{hex}"),
    })
}

/// Where `relative` (in the checkout at `checkout`, itself resolved)
/// leads once its symlinks are followed; an error when that is outside the
/// checkout. A path that does not exist is left to fail where it is read.
fn inside_checkout(
    checkout: &Path,
    relative: &Path,
    what: &str,
    named: &str,
) -> Result<PathBuf, String> {
    let path = checkout.join(relative);
    let resolved = match path.canonicalize() {
        Ok(resolved) => resolved,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(path),
        Err(e) => return Err(format!("cannot resolve {what} `{named}`: {e}")),
    };
    if !resolved.starts_with(checkout) {
        return Err(format!(
            "{what} `{named}` leads through a symlink to {}, outside the repository's \
             checkout: it is not read from the agent's machine",
            resolved.display()
        ));
    }
    Ok(resolved)
}

/// `a/./b/` → `a/b`, `.` → empty; `None` for paths leaving the repository.
fn normalise(path: &str) -> Option<PathBuf> {
    let path = Path::new(path);
    if path.as_os_str().is_empty() {
        return Some(PathBuf::new());
    }
    if !is_relative_inside(path) {
        return None;
    }
    Some(
        path.components()
            .filter(|c| matches!(c, Component::Normal(_)))
            .collect(),
    )
}

fn hash_file(hasher: &mut Sha256, disk: &Path, name: &Path) -> io::Result<()> {
    let meta = fs::symlink_metadata(disk)?;
    let name = name.as_os_str().as_encoded_bytes();
    hasher.update((name.len() as u64).to_le_bytes());
    hasher.update(name);
    hasher.update(meta.permissions().mode().to_le_bytes());
    if meta.file_type().is_symlink() {
        let target = fs::read_link(disk)?;
        hasher.update(b"l");
        hasher.update(target.as_os_str().as_encoded_bytes());
        hasher.update(b"\0");
    } else {
        hasher.update(b"f");
        hasher.update(meta.len().to_le_bytes());
        let mut file = fs::File::open(disk)?;
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            let n = file.read(&mut buffer)?;
            if n == 0 {
                break;
            }
            hasher.update(&buffer[..n]);
        }
    }
    Ok(())
}

fn write_context(
    out: &mut pipe::ChannelWriter,
    files: &[(PathBuf, PathBuf)],
    outside_dockerfile: Option<&[u8]>,
) -> io::Result<()> {
    let mut tar = tar::Builder::new(out);
    tar.follow_symlinks(false);
    for (disk, name) in files {
        tar.append_path_with_name(disk, name)?;
    }
    if let Some(content) = outside_dockerfile {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_mode(0o644);
        header.set_size(content.len() as u64);
        header.set_mtime(0);
        tar.append_data(&mut header, OUTSIDE_DOCKERFILE, content)?;
    }
    tar.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_split_for_the_pull_api() {
        assert_eq!(split_reference("postgres"), ("postgres", Some("latest")));
        assert_eq!(split_reference("postgres:16"), ("postgres", Some("16")));
        assert_eq!(
            split_reference("reg:5000/team/app"),
            ("reg:5000/team/app", Some("latest"))
        );
        assert_eq!(
            split_reference("reg:5000/team/app:v1"),
            ("reg:5000/team/app", Some("v1"))
        );
        assert_eq!(
            split_reference("app@sha256:abcd"),
            ("app@sha256:abcd", None)
        );
    }

    #[test]
    fn paths_normalise_or_are_refused() {
        assert_eq!(normalise("."), Some(PathBuf::new()));
        assert_eq!(normalise("./ci/"), Some(PathBuf::from("ci")));
        assert_eq!(normalise("../elsewhere"), None);
        assert_eq!(normalise("/etc"), None);
    }
}
