//! How names and paths are written in the API's URLs, by the server (the
//! links it answers with) and the client (the requests it makes) alike.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, PercentEncode, utf8_percent_encode};

/// Characters left as they are in a path segment: RFC 3986's unreserved set.
/// Everything else is escaped, including `[`, `]`, `=`, `,` and `/` that task
/// names and job names may hold, so a name is always exactly one segment, and
/// ` `, `#`, `?` and `%` that file names may hold, so that a URL is used as it
/// is (`curl "$SERVER$url"`) and the server decodes it back to the same name.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// `text` percent-encoded as one path segment (UTF-8, then `%XX`).
pub fn segment(text: &str) -> PercentEncode<'_> {
    utf8_percent_encode(text, SEGMENT)
}

#[cfg(test)]
mod tests {
    use super::segment;

    #[test]
    fn a_segment_escapes_all_but_the_unreserved() {
        assert_eq!(segment("a-Z_0.9~").to_string(), "a-Z_0.9~");
        assert_eq!(
            segment("résumé final #1?.txt").to_string(),
            "r%C3%A9sum%C3%A9%20final%20%231%3F.txt"
        );
        assert_eq!(segment("100%/x").to_string(), "100%25%2Fx");
        assert_eq!(segment("test[shard=2]").to_string(), "test%5Bshard%3D2%5D");
    }
}
