//! The stylesheet and script, embedded in the binary. Each is served under
//! a name that holds a hash of its content (`/assets/kiln.3f9a….css`), so
//! browsers may keep it forever: a new build with a changed file links to
//! a new name. Gzipped once, at first use.

use std::sync::LazyLock;

use sha2::{Digest, Sha256};

/// One embedded file.
#[derive(Debug)]
pub struct Asset {
    /// Where it is served: `/assets/{stem}.{hash}.{extension}`.
    pub path: String,
    pub content_type: &'static str,
    pub body: &'static [u8],
    pub gzip: Vec<u8>,
}

/// The directory assets are served from.
pub const PREFIX: &str = "/assets/";

type File = (&'static str, &'static str, &'static str, &'static [u8]);

const FILES: &[File] = &[
    (
        "kiln",
        "css",
        "text/css; charset=utf-8",
        include_bytes!("../assets/kiln.css"),
    ),
    (
        "kiln",
        "js",
        "text/javascript; charset=utf-8",
        include_bytes!("../assets/kiln.js"),
    ),
    (
        "live",
        "js",
        "text/javascript; charset=utf-8",
        include_bytes!("../assets/live.js"),
    ),
    (
        "log",
        "js",
        "text/javascript; charset=utf-8",
        include_bytes!("../assets/log.js"),
    ),
];

static ASSETS: LazyLock<Vec<Asset>> = LazyLock::new(|| {
    FILES
        .iter()
        .map(|&(stem, extension, content_type, body)| {
            let hash = hex::encode(&Sha256::digest(body)[..8]);
            Asset {
                path: format!("{PREFIX}{stem}.{hash}.{extension}"),
                content_type,
                body,
                gzip: crate::gzip(body),
            }
        })
        .collect()
});

/// Every embedded file.
pub fn all() -> &'static [Asset] {
    &ASSETS
}

/// The asset served at `path`, if any.
pub fn find(path: &str) -> Option<&'static Asset> {
    all().iter().find(|asset| asset.path == path)
}

/// Where the stylesheet is served.
pub fn stylesheet() -> &'static str {
    &all()[0].path
}

/// Where the script is served.
pub fn script() -> &'static str {
    &all()[1].path
}

/// Where the live pages' script is served: it follows the change feed
/// and refreshes the parts of a page marked `data-live`.
pub fn live_script() -> &'static str {
    all()
        .iter()
        .find(|asset| asset.path.starts_with("/assets/live."))
        .map_or("", |asset| &asset.path)
}

/// Where the task page's log view script is served (found by its name,
/// not its place in the list, which other assets may join).
pub fn log_script() -> &'static str {
    all()
        .iter()
        .find(|asset| asset.path.starts_with("/assets/log.") && asset.path.ends_with(".js"))
        .map_or("", |asset| asset.path.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assets_are_named_by_their_content_and_gzipped() {
        assert!(stylesheet().starts_with("/assets/kiln.") && stylesheet().ends_with(".css"));
        assert!(script().ends_with(".js"));
        let css = find(stylesheet()).unwrap();
        assert!(css.gzip.len() < css.body.len());
        let mut back = Vec::new();
        use std::io::Read;
        flate2::read::GzDecoder::new(&css.gzip[..])
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, css.body);
        assert!(find("/assets/kiln.css").is_none());
        assert!(live_script().starts_with("/assets/live.") && live_script().ends_with(".js"));
        assert!(find(live_script()).is_some());
        let log = find(log_script()).unwrap();
        assert!(
            std::str::from_utf8(log.body)
                .unwrap()
                .contains("MAX_LINES = 3000")
        );
    }
}
