//! Extractors that refuse as `application/problem+json`, like every other
//! error of the API, rather than with axum's plain-text rejections.
//!
//! - [`ApiJson`]: `415` without a JSON content type, `413` over the body
//!   limit, `400` for text that is not JSON, `422` for JSON that is not an
//!   object or does not fit the body's type (unknown or missing fields,
//!   values the type's checks refuse).
//! - [`ApiPath`] and [`ApiQuery`]: `422` for a parameter whose value its
//!   type refuses.
//!
//! The OpenAPI document declares these answers on every operation that
//! uses them (`super::system::ExtractorResponses`).

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, OptionalFromRequest, Path, Query, Request};
use axum::http::header;
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// A JSON object body, deserialized into `T`. As an `Option`, no body (or
/// `null`, as the document's `oneOf [null, T]` allows) is `None`.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        if !is_json(req.headers()) {
            return Err(not_json());
        }
        parse(&body_of(req, state).await?).map(ApiJson)
    }
}

impl<T, S> OptionalFromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Option<Self>, ApiError> {
        let json = is_json(req.headers());
        let body = body_of(req, state).await?;
        if body.trim_ascii().is_empty() {
            return Ok(None);
        }
        if !json {
            return Err(not_json());
        }
        if body.trim_ascii() == b"null" {
            return Ok(None);
        }
        parse(&body).map(|value| Some(ApiJson(value)))
    }
}

/// `application/json` or `application/…+json`, with any parameters.
fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || essence
            .strip_prefix("application/")
            .is_some_and(|subtype| subtype.ends_with("+json"))
}

fn not_json() -> ApiError {
    ApiError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "the body must be JSON, sent with `Content-Type: application/json`",
    )
}

/// The whole body, within the router's limit.
async fn body_of<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, ApiError> {
    Bytes::from_request(req, state)
        .await
        .map_err(|rejection: BytesRejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!(
                        "the body is larger than the server takes ({} MiB)",
                        super::MAX_BODY_BYTES >> 20
                    ),
                )
            } else {
                ApiError::bad_request(format!("the body could not be read: {rejection}"))
            }
        })
}

/// Parses a body that must be a JSON object: serde would take an array
/// for a struct (`["x"]` as its first field), which no client means.
fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    if first != Some(&b'{') {
        return Err(
            match serde_json::from_slice::<serde::de::IgnoredAny>(body) {
                Ok(_) => ApiError::unprocessable("the body must be a JSON object"),
                Err(e) => syntax_error(&e),
            },
        );
    }
    serde_json::from_slice(body).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => {
            ApiError::unprocessable(format!("the body is not valid: {e}"))
        }
        _ => syntax_error(&e),
    })
}

fn syntax_error(e: &serde_json::Error) -> ApiError {
    ApiError::bad_request(format!("the body is not JSON: {e}"))
}

/// Path parameters, deserialized into `T` (a struct naming them).
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiPath<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(value)) => Ok(ApiPath(value)),
            Err(rejection) => Err(path_error(rejection)),
        }
    }
}

fn path_error(rejection: PathRejection) -> ApiError {
    use axum::extract::path::ErrorKind;
    let PathRejection::FailedToDeserializePathParams(e) = rejection else {
        return ApiError::internal(rejection.body_text());
    };
    let detail = match e.kind() {
        ErrorKind::ParseErrorAtKey {
            key,
            value,
            expected_type,
        } => format!(
            "`{value}` is not a valid `{key}` ({})",
            kind_of(expected_type)
        ),
        ErrorKind::ParseErrorAtIndex {
            value,
            expected_type,
            ..
        }
        | ErrorKind::ParseError {
            value,
            expected_type,
        } => format!("`{value}` is not valid here ({})", kind_of(expected_type)),
        ErrorKind::InvalidUtf8InPathParam { key } => {
            format!("`{key}` is not UTF-8 once percent-decoded")
        }
        ErrorKind::DeserializeError { message, .. } => message.clone(),
        ErrorKind::Message(message) => message.clone(),
        // The handler's type does not fit its route: the server's fault.
        _ => return ApiError::internal(e.body_text()),
    };
    ApiError::unprocessable(format!("the URL's path is not valid: {detail}"))
}

/// What a Rust type name means to a client.
fn kind_of(type_name: &str) -> &'static str {
    match type_name {
        "i64" | "i32" | "u64" | "u32" | "usize" => "expected an integer",
        "bool" => "expected `true` or `false`",
        _ => "expected another value",
    }
}

/// Query parameters, deserialized into `T`.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiQuery<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(value)) => Ok(ApiQuery(value)),
            Err(rejection) => Err(query_error(rejection)),
        }
    }
}

fn query_error(rejection: QueryRejection) -> ApiError {
    let text = rejection.body_text();
    let reason = text
        .strip_prefix("Failed to deserialize query string: ")
        .unwrap_or(&text);
    ApiError::unprocessable(format!("the query is not valid: {reason}"))
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Body {
        branch: Option<String>,
    }

    #[test]
    fn bodies_must_be_json_objects() {
        assert_eq!(
            parse::<Body>(br#" {"branch": "x"}"#).unwrap(),
            Body {
                branch: Some("x".into())
            }
        );
        for (text, status) in [
            (&br#"["feature-x"]"#[..], 422),
            (b"null", 422),
            (b"\"x\"", 422),
            (b"", 400),
            (b"{", 400),
            (b"\x00", 400),
            (br#"{"branch": "x"} trailing"#, 400),
            (br#"{"other": 1}"#, 422),
            (br#"{"branch": 1}"#, 422),
        ] {
            let error = parse::<Body>(text).unwrap_err();
            assert_eq!(
                error.status.as_u16(),
                status,
                "{:?}: {}",
                String::from_utf8_lossy(text),
                error.detail
            );
        }
    }

    #[test]
    fn json_content_types() {
        let with = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::CONTENT_TYPE, value.parse().unwrap());
            is_json(&headers)
        };
        assert!(with("application/json"));
        assert!(with("Application/JSON; charset=utf-8"));
        assert!(with("application/merge-patch+json"));
        assert!(!with("text/plain"));
        assert!(!with("application/jsonx"));
        assert!(!is_json(&HeaderMap::new()));
    }
}
