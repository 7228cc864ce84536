use std::path::{Component, Path};

use bytes::Bytes;
use futures_util::TryStreamExt;
use kiln_blob::{BlobError, BlobStore, artifact_key, blob_key, run_prefix};
use proptest::prelude::*;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

fn store() -> (tempfile::TempDir, BlobStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = BlobStore::local(&dir.path().join("blobs")).unwrap();
    (dir, store)
}

#[tokio::test]
async fn round_trip_and_missing() {
    let (_dir, store) = store();
    let key = artifact_key("web", 1, "build", "dist/app.txt").unwrap();
    store
        .put(&key, Bytes::from_static(b"hello world"))
        .await
        .unwrap();
    assert_eq!(store.get(&key).await.unwrap(), "hello world");
    assert_eq!(store.size(&key).await.unwrap(), 11);
    assert!(store.exists(&key).await.unwrap());

    // Overwrite.
    store.put(&key, b"v2".to_vec()).await.unwrap();
    assert_eq!(store.get(&key).await.unwrap(), "v2");

    let missing = "jobs/web/none";
    assert!(matches!(
        store.get(missing).await,
        Err(BlobError::NotFound(_))
    ));
    assert!(matches!(
        store.size(missing).await,
        Err(BlobError::NotFound(_))
    ));
    assert!(matches!(
        store.get_stream(missing).await.err(),
        Some(BlobError::NotFound(_))
    ));
    assert!(!store.exists(missing).await.unwrap());
    store.delete(missing).await.unwrap();
    store.delete(&key).await.unwrap();
    assert!(!store.exists(&key).await.unwrap());
}

#[tokio::test]
async fn ranges() {
    let (_dir, store) = store();
    let data: Vec<u8> = (0..=255u8).cycle().take(10_000).collect();
    store.put("log", data.clone()).await.unwrap();
    assert_eq!(store.get_range("log", 0..10).await.unwrap(), &data[0..10]);
    assert_eq!(
        store.get_range("log", 9_990..10_000).await.unwrap(),
        &data[9_990..]
    );
    // The end is clamped to the blob's size.
    assert_eq!(
        store.get_range("log", 9_995..20_000).await.unwrap(),
        &data[9_995..]
    );
    assert!(store.get_range("log", 5..5).await.unwrap().is_empty());
    for start in [10_000, 20_000] {
        let err = store.get_range("log", start..start + 10).await.unwrap_err();
        assert!(
            matches!(err, BlobError::RangeNotSatisfiable { size: 10_000, .. }),
            "{err}"
        );
        let err = store
            .get_range_stream("log", start..start + 10)
            .await
            .err()
            .unwrap();
        assert!(
            matches!(err, BlobError::RangeNotSatisfiable { .. }),
            "{err}"
        );
    }
    assert!(matches!(
        store.get_range("nope", 0..10).await,
        Err(BlobError::NotFound(_))
    ));

    let streamed: Vec<Bytes> = store
        .get_range_stream("log", 100..5_100)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(streamed.concat(), &data[100..5_100]);
}

#[tokio::test]
async fn large_file_streams_both_ways() {
    let (dir, store) = store();
    let src = dir.path().join("big.bin");
    let size = 20 * 1024 * 1024 + 12_345;
    let mut expected = Sha256::new();
    {
        let mut file = tokio::fs::File::create(&src).await.unwrap();
        let mut written = 0usize;
        let mut counter = 0u32;
        while written < size {
            let n = (size - written).min(64 * 1024);
            let chunk: Vec<u8> = (0..n)
                .map(|i| (counter.wrapping_mul(31).wrapping_add(i as u32) % 251) as u8)
                .collect();
            expected.update(&chunk);
            file.write_all(&chunk).await.unwrap();
            written += n;
            counter += 1;
        }
        file.flush().await.unwrap();
    }
    let expected = expected.finalize();

    let key = artifact_key("web", 2, "build", "big.bin").unwrap();
    assert_eq!(store.put_file(&key, &src).await.unwrap(), size as u64);
    assert_eq!(store.size(&key).await.unwrap(), size as u64);

    let mut stream = store.get_stream(&key).await.unwrap();
    let mut actual = Sha256::new();
    let mut chunks = 0;
    let mut largest = 0;
    let mut total = 0;
    while let Some(chunk) = stream.try_next().await.unwrap() {
        actual.update(&chunk);
        chunks += 1;
        largest = largest.max(chunk.len());
        total += chunk.len();
    }
    assert_eq!(total, size);
    assert_eq!(actual.finalize(), expected);
    // Served in pieces, not as one 20 MB buffer.
    assert!(chunks > 1, "one chunk of {largest} bytes");
    assert!(largest < 20 * 1024 * 1024);

    // No partial-upload files are left next to the blob.
    let root = dir
        .path()
        .join("blobs/jobs/web/runs/2/tasks/build/artifacts");
    let names: Vec<_> = std::fs::read_dir(root)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, ["big.bin"]);
}

#[tokio::test]
async fn failed_stream_stores_nothing() {
    let (dir, store) = store();
    let chunks = futures_util::stream::iter(vec![
        Ok(Bytes::from(vec![1u8; 9 * 1024 * 1024])),
        Ok(Bytes::from(vec![2u8; 1024])),
        Err(std::io::Error::other("agent went away")),
    ]);
    let err = store.put_stream("partial", chunks).await.unwrap_err();
    assert!(err.to_string().contains("agent went away"), "{err}");
    assert!(!store.exists("partial").await.unwrap());
    // Not even the parts of the aborted upload.
    assert_eq!(
        std::fs::read_dir(dir.path().join("blobs")).unwrap().count(),
        0
    );
}

#[tokio::test]
async fn list_and_delete_prefix() {
    let (dir, store) = store();
    for (run, task, path) in [
        (1, "build", "a.txt"),
        (1, "build", "sub/b.txt"),
        (1, "test", "c.txt"),
        (10, "build", "d.txt"),
    ] {
        let key = artifact_key("web", run, task, path).unwrap();
        store.put(&key, path.as_bytes().to_vec()).await.unwrap();
    }
    store
        .put(&artifact_key("api", 1, "build", "e.txt").unwrap(), "e")
        .await
        .unwrap();

    let run1 = run_prefix("web", 1).unwrap();
    let listed = store.list(&run1).await.unwrap();
    let keys: Vec<_> = listed.iter().map(|m| m.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "jobs/web/runs/1/tasks/build/artifacts/a.txt",
            "jobs/web/runs/1/tasks/build/artifacts/sub/b.txt",
            "jobs/web/runs/1/tasks/test/artifacts/c.txt",
        ]
    );
    assert_eq!(listed[1].size, 9);

    // Whole segments only: run 1 is not a prefix of run 10.
    assert_eq!(store.delete_prefix(&run1).await.unwrap(), 3);
    assert!(store.list(&run1).await.unwrap().is_empty());
    assert_eq!(store.list("jobs/web").await.unwrap().len(), 1);
    assert_eq!(store.list("jobs/api").await.unwrap().len(), 1);
    assert_eq!(store.delete_prefix("jobs/nothing").await.unwrap(), 0);
    // Empty directories are cleaned up.
    assert!(!dir.path().join("blobs/jobs/web/runs/1").exists());
}

#[test]
fn path_escapes_are_rejected() {
    for bad in [
        "../x",
        "/etc/passwd",
        "a/../../b",
        "a//b",
        "a\\b",
        "..\\..\\x",
        "a/./b",
        ".",
        "..",
        "a/..",
        "a/",
        "",
        "a\0b",
        "a\nb",
        "C:\\Windows",
    ] {
        assert!(
            matches!(blob_key(&[bad]), Err(BlobError::InvalidKey { .. })),
            "{bad:?} accepted"
        );
        assert!(
            matches!(blob_key(&["jobs", bad]), Err(BlobError::InvalidKey { .. })),
            "jobs/{bad:?} accepted"
        );
        assert!(
            artifact_key("web", 1, "build", bad).is_err(),
            "artifact {bad:?} accepted"
        );
    }
    assert!(blob_key(&["x".repeat(2000).as_str()]).is_err());
    // A `:` first would read as a URL scheme to the local store; later, as
    // in an artifact's name, it is an ordinary character.
    assert!(blob_key(&["A:"]).is_err());
    assert!(blob_key(&["jobs", "ab:"]).is_err());
    assert!(blob_key(&["jobs", "a:b.txt"]).is_ok());
    assert!(blob_key(&["jobs", "¡A:"]).is_err());
}

/// Found by `accepted_keys_stay_under_the_root`: a key `A:` was accepted and
/// could not be stored.
#[tokio::test]
async fn a_colon_inside_a_key_stores_like_any_name() {
    let (_dir, store) = store();
    let key = blob_key(&["jobs", "a:b.txt"]).unwrap();
    store.put(&key, "x").await.unwrap();
    assert_eq!(store.size(&key).await.unwrap(), 1);
}

#[tokio::test]
async fn store_methods_reject_bad_keys() {
    let (dir, store) = store();
    for bad in ["../x", "/etc/passwd", "a/../../b", "a//b", "a\\b"] {
        assert!(matches!(
            store.put(bad, "x").await,
            Err(BlobError::InvalidKey { .. })
        ));
        assert!(matches!(
            store.get(bad).await,
            Err(BlobError::InvalidKey { .. })
        ));
        assert!(matches!(
            store.delete_prefix(bad).await,
            Err(BlobError::InvalidKey { .. })
        ));
        assert!(matches!(
            store.put_file(bad, Path::new("/etc/hostname")).await,
            Err(BlobError::InvalidKey { .. })
        ));
    }
    // Percent-encoded dots are plain names, not parent directories.
    for tricky in [
        "%2E%2E/%2E%2E/x",
        "a/%2e%2e/%2e%2e/%2e%2e/b",
        "%2F%2Fetc%2Fpasswd",
        "~/x",
    ] {
        store.put(tricky, "t").await.unwrap();
        assert!(dir.path().join("blobs").join(tricky).is_file(), "{tricky}");
        assert_eq!(store.get(tricky).await.unwrap(), "t");
    }
    // Nothing was written next to the store.
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["blobs"]);
}

#[test]
fn from_url() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("viaurl");
    BlobStore::from_url(&format!("file://{}", path.display())).unwrap();
    assert!(path.is_dir());
    BlobStore::from_url(dir.path().join("plain").to_str().unwrap()).unwrap();
    assert!(dir.path().join("plain").is_dir());
    assert!(BlobStore::from_url("file://relative").is_err());
    assert!(BlobStore::from_url("gs://bucket").is_err());
    #[cfg(not(feature = "s3"))]
    {
        let err = BlobStore::from_url("s3://bucket/prefix").unwrap_err();
        assert!(err.to_string().contains("`s3` feature"), "{err}");
    }
    #[cfg(feature = "s3")]
    {
        assert!(BlobStore::from_url("s3:///prefix").is_err());
    }
}

/// Segments a hostile build might produce: mostly harmless names, plus the
/// pieces of every escape trick.
fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-zA-Z0-9_.-]{1,12}",
        Just("..".to_string()),
        Just(".".to_string()),
        Just(String::new()),
        "[\\\\/\0 .~:#%]{1,4}",
        ".{1,6}",
    ]
}

fn key_parts() -> impl Strategy<Value = Vec<String>> {
    proptest::collection::vec(segment(), 1..6)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn accepted_keys_stay_under_the_root(
        parts in key_parts(),
        joined in proptest::collection::vec(segment(), 1..6).prop_map(|v| v.join("/")),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let store = BlobStore::local(&root).unwrap();
        let part_refs: Vec<&str> = parts.iter().map(String::as_str).collect();
        for candidate in [blob_key(&part_refs), blob_key(&[joined.as_str()])] {
            let Ok(key) = candidate else { continue };
            // Lexically: only plain names, so joining cannot leave the root.
            prop_assert!(
                Path::new(&key).components().all(|c| matches!(c, Component::Normal(_))),
                "{key:?}"
            );
            // And for real: the blob lands under the root, nothing beside it.
            rt.block_on(store.put(&key, "x")).unwrap();
            prop_assert_eq!(rt.block_on(store.size(&key)).unwrap(), 1);
            let names: Vec<_> = std::fs::read_dir(dir.path())
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            prop_assert_eq!(names, ["root"]);
            let on_disk = root.join(&key);
            prop_assert!(on_disk.is_file(), "{}", on_disk.display());
            prop_assert!(on_disk.canonicalize().unwrap().starts_with(root.canonicalize().unwrap()));
            rt.block_on(store.delete(&key)).unwrap();
        }
    }
}
