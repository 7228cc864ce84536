//! Pruning the images built from tasks' Dockerfiles.
//!
//! Every change to a build context makes a new `kiln-build:<hash>` image and
//! nothing else ever removes the old ones, so after each build the executor
//! drops those beyond its [`BuildCachePolicy`].
//!
//! "Last used" is the later of an image's creation time and its last tag
//! time (`Metadata.LastTagTime`): a build tags the image, and reusing a cached
//! image tags it again under the same name (see `image::touch`). The time thus
//! lives in the engine, so it survives restarts and is shared by every Kiln
//! process using that engine, at the cost of one request per reuse. Labels
//! cannot serve: they are fixed when the image is built.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bollard::Docker;
use bollard::query_parameters::{ListImagesOptionsBuilder, RemoveImageOptionsBuilder};
use chrono::{DateTime, Utc};

use super::{engine_message, is_not_found};

/// Which images built from tasks' Dockerfiles the docker executor keeps.
/// Applied after each build; images a task of the executor is using, and the
/// one just built, are always kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BuildCachePolicy {
    /// Most images kept in the build repository, those in use included
    /// (which may exceed it: they are never removed). The least recently
    /// used go first.
    pub max_images: usize,
    /// Images not used for longer than this are removed, however few there are.
    pub max_age: Duration,
}

impl BuildCachePolicy {
    /// Enough for the Dockerfiles of a few busy repositories, each with a
    /// couple of branches whose contexts differ; the images share their base
    /// layers, so each costs mostly the layers its own Dockerfile adds.
    pub const DEFAULT_MAX_IMAGES: usize = 20;
    /// A week: an image unused over a weekend survives, one of a branch
    /// abandoned for longer is rebuilt if it is ever needed again.
    pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 60 * 60);

    /// Never removes anything (the behaviour before pruning existed).
    pub const KEEP_ALL: BuildCachePolicy = BuildCachePolicy {
        max_images: usize::MAX,
        max_age: Duration::MAX,
    };
}

impl Default for BuildCachePolicy {
    fn default() -> Self {
        BuildCachePolicy {
            max_images: Self::DEFAULT_MAX_IMAGES,
            max_age: Self::DEFAULT_MAX_AGE,
        }
    }
}

/// What one pruning did. Tags are full references, e.g. `kiln-build:0123…`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PruneReport {
    /// Tags removed (an image goes once its last tag does).
    pub removed: Vec<String>,
    /// Tags due for removal that were kept because a container uses the
    /// image (the engine refused) or a task of this executor took it up
    /// while the pruning ran.
    pub in_use: Vec<String>,
    /// Tags due for removal whose removal failed otherwise, with the engine's
    /// message.
    pub failed: Vec<(String, String)>,
}

#[derive(Debug, thiserror::Error)]
pub enum PruneError {
    #[error("listing the images of {repository}: {message}")]
    List { repository: String, message: String },
}

/// The build images this executor's tasks are using, counted, so pruning
/// leaves them alone from before they are looked up until the task ends.
#[derive(Debug, Clone, Default)]
pub(super) struct InUse {
    counts: Arc<Mutex<HashMap<String, usize>>>,
    /// Held while a tag is leased and while one is removed, so a removal
    /// either sees the lease or is over before the task looks the image up
    /// (and then builds it again instead of finding it gone later).
    gate: Arc<tokio::sync::Mutex<()>>,
}

impl InUse {
    /// Waits for a removal in progress, if any.
    pub(super) async fn lease(&self, tag: &str) -> Lease {
        let _gate = self.gate.lock().await;
        *self.counts().entry(tag.to_string()).or_insert(0) += 1;
        Lease {
            in_use: self.clone(),
            tag: tag.to_string(),
        }
    }

    fn tags(&self) -> HashSet<String> {
        self.counts().keys().cloned().collect()
    }

    fn contains(&self, tag: &str) -> bool {
        self.counts().contains_key(tag)
    }

    fn counts(&self) -> std::sync::MutexGuard<'_, HashMap<String, usize>> {
        // The map stays consistent whatever panicked while holding it.
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One task's use of a build image; ends when dropped, however the task ends.
#[derive(Debug)]
pub(super) struct Lease {
    in_use: InUse,
    tag: String,
}

impl Drop for Lease {
    fn drop(&mut self) {
        // No gate: ending a use can only make a removal possible.
        let mut counts = self.in_use.counts();
        if let Some(count) = counts.get_mut(&self.tag) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.tag);
            }
        }
    }
}

/// One tag of the build repository and when it was last used.
#[derive(Debug, Clone)]
struct Cached {
    tag: String,
    last_used: DateTime<Utc>,
}

/// Applies `policy` to the tags of `repository`, never removing `keep` nor
/// a tag leased from `in_use`.
pub(super) async fn prune(
    docker: &Docker,
    repository: &str,
    policy: BuildCachePolicy,
    in_use: &InUse,
    keep: Option<&str>,
) -> Result<PruneReport, PruneError> {
    let images = list(docker, repository, policy).await?;
    let mut protected = in_use.tags();
    protected.extend(keep.map(str::to_string));
    let doomed = choose(&images, policy, &protected, Utc::now());
    let mut report = PruneReport::default();
    for tag in doomed {
        let _gate = in_use.gate.lock().await;
        if in_use.contains(&tag) {
            // A task took it up since the listing.
            report.in_use.push(tag);
            continue;
        }
        // Not forced: the engine refuses to remove an image a container
        // uses, and removing a tag of an image with others only untags it.
        let options = RemoveImageOptionsBuilder::new().force(false).build();
        match docker.remove_image(&tag, Some(options), None).await {
            Ok(_) => {
                tracing::info!("removed cached build image {tag}");
                report.removed.push(tag);
            }
            // Someone else pruned it first.
            Err(e) if is_not_found(&e) => {}
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 409,
                message,
            }) => {
                tracing::debug!("keeping cached build image {tag}: {}", message.trim());
                report.in_use.push(tag);
            }
            Err(e) => {
                let message = engine_message(&e);
                tracing::warn!("removing cached build image {tag}: {message}");
                report.failed.push((tag, message));
            }
        }
    }
    Ok(report)
}

/// The tags of `repository`, with their last use where the policy needs it.
async fn list(
    docker: &Docker,
    repository: &str,
    policy: BuildCachePolicy,
) -> Result<Vec<Cached>, PruneError> {
    let filters = HashMap::from([("reference", vec![repository])]);
    let options = ListImagesOptionsBuilder::new().filters(&filters).build();
    let summaries = docker
        .list_images(Some(options))
        .await
        .map_err(|e| PruneError::List {
            repository: repository.to_string(),
            message: engine_message(&e),
        })?;
    let prefix = format!("{repository}:");
    let tagged: Vec<_> = summaries
        .into_iter()
        .filter_map(|image| {
            let tags: Vec<String> = image
                .repo_tags
                .into_iter()
                .filter(|t| t.starts_with(&prefix))
                .collect();
            let created = DateTime::from_timestamp(image.created, 0).unwrap_or_default();
            (!tags.is_empty()).then_some((image.id, tags, created))
        })
        .collect();
    let count: usize = tagged.iter().map(|(_, tags, _)| tags.len()).sum();
    let now = Utc::now();
    let mut images = Vec::with_capacity(count);
    for (id, tags, created) in tagged {
        // The last use is never before the creation, so the tag time is only
        // worth a request when the creation alone could doom the image.
        let needed = count > policy.max_images || age(created, now) > policy.max_age;
        let last_used = if needed {
            last_tagged(docker, &id)
                .await
                .map_or(created, |t| t.max(created))
        } else {
            created
        };
        images.extend(tags.into_iter().map(|tag| Cached { tag, last_used }));
    }
    Ok(images)
}

/// When the image was last tagged, if the engine says.
async fn last_tagged(docker: &Docker, id: &str) -> Option<DateTime<Utc>> {
    let inspected = match docker.inspect_image(id).await {
        Ok(inspected) => inspected,
        Err(e) => {
            // The creation time stands in; removal is only ever a bit early.
            tracing::debug!("inspecting cached build image {id}: {}", engine_message(&e));
            return None;
        }
    };
    let text = inspected.metadata?.last_tag_time?;
    // Engines that never tagged the image report the zero time.
    DateTime::parse_from_rfc3339(&text)
        .ok()
        .map(|t| t.with_timezone(&Utc))
        .filter(|t| t.timestamp() > 0)
}

fn age(then: DateTime<Utc>, now: DateTime<Utc>) -> Duration {
    // An engine clock ahead of ours makes a negative age: just used.
    (now - then).to_std().unwrap_or(Duration::ZERO)
}

/// The tags to remove, least recently used first. Protected tags are kept and
/// count towards `max_images`; of the rest the most recently used are kept
/// while there is room and they are not older than `max_age`.
fn choose(
    images: &[Cached],
    policy: BuildCachePolicy,
    protected: &HashSet<String>,
    now: DateTime<Utc>,
) -> Vec<String> {
    let mut candidates: Vec<&Cached> = images
        .iter()
        .filter(|i| !protected.contains(&i.tag))
        .collect();
    candidates.sort_by(|a, b| b.last_used.cmp(&a.last_used).then(a.tag.cmp(&b.tag)));
    let mut kept = images.len() - candidates.len();
    let mut doomed = Vec::new();
    for image in candidates {
        if age(image.last_used, now) <= policy.max_age && kept < policy.max_images {
            kept += 1;
        } else {
            doomed.push(image.tag.clone());
        }
    }
    doomed.reverse();
    doomed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_000_000 + seconds, 0).unwrap()
    }

    fn cached(tags: &[(&str, i64)]) -> Vec<Cached> {
        tags.iter()
            .map(|(tag, seconds)| Cached {
                tag: tag.to_string(),
                last_used: at(*seconds),
            })
            .collect()
    }

    fn policy(max_images: usize, max_age_secs: u64) -> BuildCachePolicy {
        BuildCachePolicy {
            max_images,
            max_age: Duration::from_secs(max_age_secs),
        }
    }

    fn protect(tags: &[&str]) -> HashSet<String> {
        tags.iter().map(|t| t.to_string()).collect()
    }

    #[test]
    fn the_least_recently_used_beyond_the_count_go_first() {
        let images = cached(&[("b", 20), ("a", 10), ("d", 40), ("c", 30)]);
        let doomed = choose(&images, policy(2, 1000), &protect(&[]), at(50));
        assert_eq!(doomed, ["a", "b"]);
    }

    #[test]
    fn protected_tags_stay_and_count_towards_the_limit() {
        let images = cached(&[("old", 10), ("mid", 20), ("new", 30)]);
        let doomed = choose(&images, policy(2, 1000), &protect(&["old"]), at(50));
        assert_eq!(doomed, ["mid"]);
        // Even over the limit, and even when old.
        let doomed = choose(&images, policy(0, 5), &protect(&["old", "new"]), at(50));
        assert_eq!(doomed, ["mid"]);
    }

    #[test]
    fn images_unused_for_longer_than_the_age_go_however_few() {
        let images = cached(&[("stale", 10), ("fresh", 45)]);
        let doomed = choose(&images, policy(20, 30), &protect(&[]), at(50));
        assert_eq!(doomed, ["stale"]);
        // Exactly the age is still kept; a clock behind the engine's is "now".
        let doomed = choose(&images, policy(20, 40), &protect(&[]), at(50));
        assert!(doomed.is_empty(), "{doomed:?}");
        let doomed = choose(&images, policy(20, 0), &protect(&[]), at(0));
        assert!(doomed.is_empty(), "{doomed:?}");
    }

    #[test]
    fn keep_all_keeps_all() {
        let images = cached(&[("a", -1_000_000), ("b", 0)]);
        assert!(choose(&images, BuildCachePolicy::KEEP_ALL, &protect(&[]), at(50)).is_empty());
    }

    #[tokio::test]
    async fn leases_are_counted() {
        let in_use = InUse::default();
        let first = in_use.lease("kiln-build:a").await;
        let second = in_use.lease("kiln-build:a").await;
        assert_eq!(in_use.tags(), protect(&["kiln-build:a"]));
        drop(first);
        assert_eq!(in_use.tags(), protect(&["kiln-build:a"]));
        drop(second);
        assert!(in_use.tags().is_empty());
    }
}
