use std::sync::Arc;

use kiln_blob::BlobStore;
use kiln_crypto::SecretKey;
use kiln_git::GitCache;
use tokio::sync::Notify;

use crate::grpc::Registry;
use crate::metrics::Metrics;

/// What every handler can reach. Cheap to clone.
pub struct AppState<D> {
    pub db: D,
    pub blobs: Arc<BlobStore>,
    pub key: Arc<SecretKey>,
    pub git: Arc<GitCache>,
    pub metrics: Arc<Metrics>,
    /// Woken when tasks become queued, so idle workers start at once.
    pub work: Arc<Notify>,
    /// Agents connected over gRPC to this process.
    pub agents: Arc<Registry>,
}

impl<D: Clone> Clone for AppState<D> {
    fn clone(&self) -> Self {
        AppState {
            db: self.db.clone(),
            blobs: self.blobs.clone(),
            key: self.key.clone(),
            git: self.git.clone(),
            metrics: self.metrics.clone(),
            work: self.work.clone(),
            agents: self.agents.clone(),
        }
    }
}
