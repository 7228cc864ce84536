//! `POST /hooks/{forge}`: a forge's webhook deliveries. Authenticated by
//! the forge's signature, not a token: the forge is found by the URL's name
//! (never by the delivery's headers — Gitea and Forgejo also send
//! GitHub's), the body is read up to [`MAX_HOOK_BYTES`], the signature is
//! checked before anything else of it is read, and only then is it parsed.
//! A delivery that starts nothing is answered `2xx` with the reason:
//! forges switch off hooks that keep failing.

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use kiln_api::HookAnswer;
use kiln_forge::ForgeKind;
use kiln_forge::event::Outcome;
use kiln_store::Database;

use super::bodies::ForgePath;
use super::extract::ApiPath;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// The largest delivery taken: GitHub caps its payloads at 25 MiB.
pub const MAX_HOOK_BYTES: usize = 25 << 20;

#[utoipa::path(operation_id = "receive_hook", post, path = "/hooks/{forge}", tag = "forges",
    params(ForgePath),
    request_body(content = Object, content_type = "application/json",
        description = "The forge's delivery as it sends it: GitHub and Gitea/Forgejo sign it (`X-Hub-Signature-256`, `X-Gitea-Signature`), GitLab sends its token (`X-Gitlab-Token`)"),
    responses((status = 200, description = "A ping, answered", body = HookAnswer),
        (status = 202, description = "Runs queued, or the reason none were (an event Kiln does not act on, no job builds the repository, a redelivery)", body = HookAnswer),
        (status = 400, description = "The body is not what the forge sends for that event", body = kiln_api::Problem),
        (status = 401, description = "The signature is missing or wrong, or the forge has no webhook secret; nothing was stored", body = kiln_api::Problem),
        (status = 404, description = "No forge of that name", body = kiln_api::Problem),
        (status = 413, description = "The body is over 25 MiB", body = kiln_api::Problem)))]
pub async fn receive<D: Database>(
    State(state): State<AppState<D>>,
    ApiPath(ForgePath { forge: name }): ApiPath<ForgePath>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<(StatusCode, Json<HookAnswer>)> {
    let forge = state
        .db
        .get_forge(&name)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("forge `{name}` not found")))?;
    let kind: ForgeKind = forge.kind.parse().map_err(ApiError::internal)?;
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("a webhook delivery may be {MAX_HOOK_BYTES} bytes at most"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|length| length > MAX_HOOK_BYTES as u64) {
        return Err(too_large());
    }
    let body = axum::body::to_bytes(body, MAX_HOOK_BYTES)
        .await
        .map_err(|_| too_large())?;
    let secret = match &forge.webhook_secret {
        Some(sealed) => {
            let place = super::forges::sealed_place(&name, "webhook_secret");
            kiln_crypto::open(&state.key, sealed, &place).map_err(|_| {
                ApiError::internal(format!(
                    "the webhook secret of forge `{name}` cannot be decrypted (was the server's key changed?)"
                ))
            })?
        }
        None => Vec::new(),
    };
    if let Err(e) = kiln_forge::signature::verify(kind, &secret, &headers, &body) {
        tracing::info!("webhook delivery to forge {name} refused: {e}");
        return Err(ApiError::unauthorized(e.to_string()));
    }
    let delivery = kiln_forge::event::parse(kind, &headers, &body).map_err(|e| {
        tracing::info!("webhook delivery to forge {name} not read: {e}");
        ApiError::bad_request(e.to_string())
    })?;
    let answer = |status, message: String, queued| {
        tracing::info!("webhook delivery to forge {name}: {message}");
        Ok((status, Json(HookAnswer { message, queued })))
    };
    match delivery.outcome {
        Outcome::Ping => answer(
            StatusCode::OK,
            format!("pong: forge `{name}` is set up"),
            Vec::new(),
        ),
        Outcome::Ignored(reason) => answer(
            StatusCode::ACCEPTED,
            format!("ignored: {reason}"),
            Vec::new(),
        ),
        Outcome::Trigger(trigger) => {
            // A delivery without an id of its own is known by its body: the
            // same bytes again are the same delivery.
            let key = delivery.key.unwrap_or_else(|| {
                let digest = kiln_forge::signature::hmac_sha256_hex(b"kiln-delivery", &body);
                format!("body:{digest}")
            });
            let queued = crate::webhooks::queue(&state, &name, &key, &trigger).await?;
            answer(StatusCode::ACCEPTED, queued.message, queued.jobs)
        }
    }
}
