//! The invariants `docs/ARCHITECTURE.md` states about the crate graph,
//! checked on the graph cargo resolves (`cargo metadata`), so a new
//! dependency that breaks one fails here rather than in review.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::process::Command;

use serde_json::Value;

/// Each workspace crate's normal (non-dev, non-build) dependencies, by name,
/// direct and transitive.
struct Graph {
    direct: HashMap<String, BTreeSet<String>>,
    /// Each workspace package's manifest, as `cargo metadata` reads it.
    manifests: HashMap<String, Value>,
}

impl Graph {
    fn load() -> Graph {
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../Cargo.toml");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        // This machine's platform only: the crates of others are not
        // downloaded, and `--offline` needs nothing the build did not.
        let rustc = Command::new("rustc").arg("-vV").output().unwrap();
        let host = String::from_utf8(rustc.stdout)
            .unwrap()
            .lines()
            .find_map(|line| line.strip_prefix("host: ").map(str::to_string))
            .unwrap();
        let output = Command::new(cargo)
            .args(["metadata", "--format-version", "1", "--offline"])
            .args(["--filter-platform", &host, "--manifest-path"])
            .arg(&workspace)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let metadata: Value = serde_json::from_slice(&output.stdout).unwrap();
        let names: HashMap<&str, &str> = metadata["packages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| (p["id"].as_str().unwrap(), p["name"].as_str().unwrap()))
            .collect();
        let manifests = metadata["packages"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["source"].is_null())
            .map(|p| (p["name"].as_str().unwrap().to_string(), p.clone()))
            .collect();
        let mut direct = HashMap::new();
        for node in metadata["resolve"]["nodes"].as_array().unwrap() {
            let normal: BTreeSet<String> = node["deps"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|dep| {
                    dep["dep_kinds"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|kind| kind["kind"].is_null())
                })
                .map(|dep| names[dep["pkg"].as_str().unwrap()].to_string())
                .collect();
            let name = names[node["id"].as_str().unwrap()].to_string();
            direct
                .entry(name)
                .or_insert_with(BTreeSet::new)
                .extend(normal);
        }
        Graph { direct, manifests }
    }

    fn all(&self, krate: &str) -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut todo = vec![krate.to_string()];
        while let Some(next) = todo.pop() {
            for dep in self.direct.get(&next).into_iter().flatten() {
                if seen.insert(dep.clone()) {
                    todo.push(dep.clone());
                }
            }
        }
        seen
    }

    fn assert_never(&self, krate: &str, forbidden: &[&str], why: &str) {
        // A renamed crate must not make its rule pass by checking nothing.
        assert!(
            self.direct.contains_key(krate),
            "no crate `{krate}` in the workspace"
        );
        let all = self.all(krate);
        let found: Vec<&&str> = forbidden.iter().filter(|f| all.contains(**f)).collect();
        assert!(found.is_empty(), "{krate} depends on {found:?}: {why}");
    }
}

#[test]
fn the_crate_graph_keeps_the_architectures_invariants() {
    let graph = Graph::load();
    graph.assert_never(
        "kiln-pipeline",
        &[
            "tokio",
            "sqlx",
            "reqwest",
            "tonic",
            "bollard",
            "kiln-exec",
            "kiln-store",
        ],
        "the pipeline crate is pure: no I/O, no runtime",
    );
    graph.assert_never(
        "kiln-server",
        &[
            "kiln-exec",
            "bollard",
            "kiln-agent",
            "kiln-store-sqlite",
            "kiln-store-postgres",
        ],
        "the server never runs tasks itself and is generic over the database",
    );
    graph.assert_never(
        "kiln-store",
        &[
            "kiln-server",
            "kiln-exec",
            "kiln-store-sqlite",
            "kiln-store-postgres",
        ],
        "the store's trait and rules know no backend and no caller",
    );
    // What the SQL backends share is behind kiln-store's `sqlx` feature,
    // which only they turn on: the trait and the queue's rules stay pure.
    let sqlx = graph.manifests["kiln-store"]["dependencies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|dep| dep["name"] == "sqlx")
        .expect("kiln-store names sqlx for its feature");
    assert_eq!(
        sqlx["optional"], true,
        "kiln-store needs sqlx only as an option"
    );
    for (name, manifest) in &graph.manifests {
        for dep in manifest["dependencies"].as_array().unwrap() {
            let turns_on_sqlx = dep["name"] == "kiln-store"
                && dep["features"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|feature| feature == "sqlx");
            assert!(
                !turns_on_sqlx || name.starts_with("kiln-store-"),
                "{name} turns on kiln-store's sqlx feature: only backends may"
            );
        }
    }
    for backend in ["kiln-store-sqlite", "kiln-store-postgres"] {
        graph.assert_never(
            backend,
            &["kiln-server", "kiln-exec", "kiln-agent", "axum", "tonic"],
            "a backend is storage only",
        );
    }
    graph.assert_never(
        "kiln-agent",
        &["kiln-server", "kiln-store", "sqlx"],
        "an agent reaches the server only over gRPC",
    );
    graph.assert_never(
        "kiln-client",
        &["kiln-server", "kiln-store", "sqlx"],
        "the client reaches the server only over HTTP",
    );
    graph.assert_never(
        "kiln-ui",
        &[
            "kiln-server",
            "kiln-store",
            "axum",
            "tokio",
            "sqlx",
            "reqwest",
        ],
        "the UI crate renders values to text: no I/O, no HTTP (kiln-server's controllers do that)",
    );
    graph.assert_never(
        "kiln-forge",
        &[
            "kiln-server",
            "kiln-store",
            "axum",
            "tokio",
            "sqlx",
            "reqwest",
        ],
        "the forge crate knows each forge's contract; the server receives, stores and sends",
    );
    graph.assert_never(
        "kiln-exec",
        &[
            "kiln-server",
            "kiln-store",
            "kiln-agent",
            "sqlx",
            "axum",
            "tonic",
        ],
        "an executor runs one task and knows nothing of runs or servers",
    );
}

/// The pipeline crate's sources name no file system, network, process or
/// clock API: the server validates pipelines it read from git with it.
#[test]
fn the_pipeline_crate_does_no_io() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../kiln-pipeline/src");
    let mut offenders = Vec::new();
    for entry in std::fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        // Unit tests may read the repository (e.g. the committed schema).
        let text = text.split("#[cfg(test)]").next().unwrap();
        for api in [
            "std::fs",
            "std::net",
            "std::process",
            "std::env",
            "SystemTime",
            "Instant::now",
            "Utc::now",
            "File::open",
        ] {
            if text.contains(api) {
                offenders.push(format!("{}: {api}", path.display()));
            }
        }
    }
    assert!(offenders.is_empty(), "{offenders:?}");
}
