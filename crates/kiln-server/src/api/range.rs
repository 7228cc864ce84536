//! `Range: bytes=…` (RFC 9110 §14), for everything served in parts: console
//! logs and artifacts. One range at a time; a download resumes with
//! `bytes=START-`.

use axum::http::{HeaderValue, StatusCode, header};

use crate::error::{ApiError, ApiResult};

/// Whether a `Range` header is in bytes, the only unit served. A server
/// ignores a range in a unit it does not know (RFC 9110 §14.2), and serves
/// the whole representation.
pub fn in_bytes(range: &HeaderValue) -> bool {
    range.to_str().ok().and_then(bytes_spec).is_some()
}

/// The inclusive offsets a `Range` header asks for within `length` bytes,
/// or `416` with that length (`Content-Range: bytes */LENGTH`, RFC 9110
/// §15.5.17).
pub fn satisfiable(range: &HeaderValue, length: u64) -> ApiResult<(u64, u64)> {
    parse_range(range.to_str().unwrap_or(""), length).ok_or_else(|| {
        let error = ApiError::new(
            StatusCode::RANGE_NOT_SATISFIABLE,
            format!(
                "the range `{}` is not one range within the {length} bytes there are",
                range.to_str().unwrap_or("?")
            ),
        );
        match HeaderValue::from_str(&format!("bytes */{length}")) {
            Ok(value) => error.with_header(header::CONTENT_RANGE, value),
            Err(_) => error,
        }
    })
}

/// `Content-Range` of a `206`: bytes `start..=end` of `length`.
pub fn content_range(start: u64, end: u64, length: u64) -> Option<HeaderValue> {
    HeaderValue::from_str(&format!("bytes {start}-{end}/{length}")).ok()
}

/// The ranges after `bytes=` (the unit's name is case-insensitive, RFC 9110
/// §14.1); `None` for another unit.
fn bytes_spec(header: &str) -> Option<&str> {
    let (unit, spec) = header.trim().split_once('=')?;
    unit.trim().eq_ignore_ascii_case("bytes").then_some(spec)
}

/// Parses one `bytes=` range into inclusive offsets within `length` bytes.
fn parse_range(header: &str, length: u64) -> Option<(u64, u64)> {
    let spec = bytes_spec(header)?;
    if spec.contains(',') || length == 0 {
        return None;
    }
    let (first, last) = spec.split_once('-')?;
    let (first, last) = (first.trim(), last.trim());
    let (start, end) = if first.is_empty() {
        let suffix: u64 = last.parse().ok()?;
        if suffix == 0 {
            return None;
        }
        (length.saturating_sub(suffix), length - 1)
    } else {
        let start: u64 = first.parse().ok()?;
        let end = if last.is_empty() {
            length - 1
        } else {
            last.parse::<u64>().ok()?.min(length - 1)
        };
        (start, end)
    };
    (start <= end && start < length).then_some((start, end))
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::{in_bytes, parse_range};

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-4", 10), Some((0, 4)));
        assert_eq!(parse_range("bytes=5-", 10), Some((5, 9)));
        assert_eq!(parse_range("bytes=-3", 10), Some((7, 9)));
        assert_eq!(parse_range("bytes=8-100", 10), Some((8, 9)));
        assert_eq!(parse_range("Bytes=1-2", 10), Some((1, 2)));
        assert_eq!(parse_range("bytes=10-", 10), None);
        assert_eq!(parse_range("bytes=5-2", 10), None);
        assert_eq!(parse_range("bytes=0-1,3-4", 10), None);
        assert_eq!(parse_range("items=0-1", 10), None);
        assert_eq!(parse_range("bytes=0-0", 0), None);
    }

    #[test]
    fn units() {
        assert!(in_bytes(&HeaderValue::from_static("bytes=0-1")));
        assert!(in_bytes(&HeaderValue::from_static(" BYTES = 5-")));
        assert!(in_bytes(&HeaderValue::from_static("bytes=nonsense")));
        assert!(!in_bytes(&HeaderValue::from_static("items=0-1")));
        assert!(!in_bytes(&HeaderValue::from_static("bytes")));
    }
}
