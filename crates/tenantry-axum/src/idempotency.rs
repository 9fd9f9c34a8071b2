//! The `Idempotency-Key` header of writes: the middleware that reads it (400 when malformed) and fingerprints the request, what a handler says its response is ([`Reply`]), and the response that is either this request's or the replay of the first one with the key ([`Written`], marked `Idempotent-Replayed: true`). Claiming the key and storing the response in the write's transaction is `tenantry_db::idempotency`'s; [`crate::TenantCaller::write_response`] joins the two.
//!
//! ```no_run
//! use axum::{http::StatusCode, routing::post, Router};
//! use tenantry_axum::{error::ApiError, idempotency::{self, Reply, Written}, Tenantry, TenantCaller};
//!
//! async fn create_project(caller: TenantCaller) -> Result<Written<uuid::Uuid>, ApiError> {
//!     caller
//!         .write_response(Reply::new(StatusCode::CREATED), &(), |scope, ()| {
//!             Box::pin(async move {
//!                 let (id,): (uuid::Uuid,) = scope
//!                     .query_one("INSERT INTO projects (name) VALUES ('x') RETURNING id", &[])
//!                     .await?;
//!                 Ok(id)
//!             })
//!         })
//!         .await
//! }
//!
//! # async fn demo(tenantry: Tenantry) {
//! let app: Router = Router::new()
//!     .route("/projects", post(create_project))
//!     .route_layer(axum::middleware::from_fn(idempotency::middleware))
//!     .route_layer(tenantry.layer())
//!     .with_state(tenantry);
//! # }
//! ```

use std::sync::Arc;

use axum::{
    body::{Body, Bytes},
    extract::{FromRequest, Request},
    http::{header, HeaderName, HeaderValue, Method, StatusCode},
    middleware::Next,
    response::{IntoResponse, Response},
};
use serde::Serialize;
use tenantry_db::{DbError, IdempotencyKey, Idempotent, IdempotentRequest, StoredResponse};

use crate::error::{ApiError, ProblemCode};

/// The request header.
pub const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
/// The header that marks a replayed response.
pub const IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

/// How long [`middleware`] waits for the body of a request carrying
/// `Idempotency-Key` and a credential (it reads it before the credential is
/// checked): 408 `request_timeout` past it.
pub const IDEMPOTENT_BODY_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// For every POST, PUT, PATCH and DELETE carrying `Idempotency-Key`: checks
/// the key (400 `invalid_header` unless 1 to 255 visible ASCII characters),
/// and, when the request carries `Authorization` (without it the handler's
/// credential check answers first), reads the body (within the router's body
/// limit and [`IDEMPOTENT_BODY_WAIT`]), and hands the handler's
/// extractors an [`IdempotentRequest`] fingerprinting method, path and
/// query, and body. Other methods ignore the header (a read is idempotent).
/// Route layer: it runs after routing, so unknown routes answer 404 first.
pub async fn middleware(req: Request, next: Next) -> Response {
    let writes = [Method::POST, Method::PUT, Method::PATCH, Method::DELETE];
    let Some(value) = req
        .headers()
        .get(IDEMPOTENCY_KEY)
        .filter(|_| writes.contains(req.method()))
    else {
        return next.run(req).await;
    };
    if req.headers().get_all(IDEMPOTENCY_KEY).iter().count() > 1 {
        return ApiError::new(
            ProblemCode::InvalidHeader,
            "send Idempotency-Key once: which of several keys counts would be a guess",
        )
        .with_field("Idempotency-Key")
        .into_response();
    }
    let Some(key) = value.to_str().ok().and_then(IdempotencyKey::parse) else {
        return ApiError::new(
            ProblemCode::InvalidHeader,
            "Idempotency-Key must be 1 to 255 visible ASCII characters (no spaces)",
        )
        .with_field("Idempotency-Key")
        .into_response();
    };
    // Without a credential the handler answers 401 before it reads a byte:
    // the body is not read here either (nobody unauthenticated makes the
    // server hold a body), and no write of such a request is stored.
    if !req.headers().contains_key(header::AUTHORIZATION) {
        return next.run(req).await;
    }
    let (parts, body) = req.into_parts();
    // Read before any credential is checked, so within a deadline: a client
    // that trickles its body must not hold a connection (and the body read
    // so far) for as long as it likes.
    let read = tokio::time::timeout(
        IDEMPOTENT_BODY_WAIT,
        Bytes::from_request(Request::from_parts(parts.clone(), body), &()),
    )
    .await;
    let Ok(read) = read else {
        return ApiError::new(
            ProblemCode::RequestTimeout,
            format!(
                "the request body did not arrive within {} s",
                IDEMPOTENT_BODY_WAIT.as_secs()
            ),
        )
        .into_response();
    };
    let bytes = match read {
        Ok(bytes) => bytes,
        Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return ApiError::new(
                ProblemCode::BodyTooLarge,
                "request body exceeds the size limit",
            )
            .into_response()
        }
        Err(e) => return ApiError::new(ProblemCode::InvalidJson, e.body_text()).into_response(),
    };
    let path = parts
        .uri
        .path_and_query()
        .map_or(parts.uri.path(), |p| p.as_str());
    let request = IdempotentRequest::new(key, parts.method.as_str(), path, &bytes);
    let mut req = Request::from_parts(parts, Body::from(bytes));
    req.extensions_mut().insert(Arc::new(request));
    next.run(req).await
}

/// What a write answers: its status and, for a response that shows a secret
/// once (an API key, a token), the top-level field holding it, which is
/// blanked (`""`) in the copy stored for replays: secrets are stored nowhere.
#[derive(Debug, Clone, Copy)]
pub struct Reply {
    status: StatusCode,
    secret: Option<&'static str>,
}

impl Reply {
    /// A response with `status` and the handler's value as JSON body (none for 204).
    pub const fn new(status: StatusCode) -> Self {
        Self {
            status,
            secret: None,
        }
    }

    /// The body's top-level `field` is a secret shown once: a replay answers `""` there.
    pub const fn hiding(self, field: &'static str) -> Self {
        Self {
            secret: Some(field),
            ..self
        }
    }

    fn has_body(self) -> bool {
        self.status != StatusCode::NO_CONTENT
    }

    /// The copy of the response stored under the key.
    pub fn stored<T: Serialize>(self, value: &T) -> Result<StoredResponse, DbError> {
        let internal = |e: serde_json::Error| DbError::Internal(format!("response body: {e}"));
        let body = match (self.has_body(), self.secret) {
            (false, _) => None,
            (true, None) => Some(serde_json::to_vec(value).map_err(internal)?),
            (true, Some(field)) => {
                let mut json = serde_json::to_value(value).map_err(internal)?;
                if let Some(secret) = json.get_mut(field) {
                    *secret = serde_json::Value::String(String::new());
                }
                Some(serde_json::to_vec(&json).map_err(internal)?)
            }
        };
        Ok(StoredResponse {
            status: self.status.as_u16(),
            body,
        })
    }

    /// This request's answer from what the write gave.
    pub fn written<T>(self, outcome: Idempotent<T>) -> Written<T> {
        match outcome {
            Idempotent::Fresh(value) => Written::Fresh {
                status: self.status,
                value,
            },
            Idempotent::Replayed(stored) => Written::Replayed(stored),
        }
    }
}

/// A write's response: this request's result, or the response stored by the
/// first request with the same `Idempotency-Key`, replayed byte for byte with
/// `Idempotent-Replayed: true`.
#[derive(Debug)]
pub enum Written<T> {
    /// The write ran in this request.
    Fresh {
        /// The status to answer.
        status: StatusCode,
        /// The body, sent as JSON (nothing for 204).
        value: T,
    },
    /// The stored response of the first request with the key.
    Replayed(StoredResponse),
}

impl<T> Written<T> {
    /// The value this request wrote; `None` for a replay.
    pub fn fresh(&self) -> Option<&T> {
        match self {
            Written::Fresh { value, .. } => Some(value),
            Written::Replayed(_) => None,
        }
    }
}

impl<T: Serialize> IntoResponse for Written<T> {
    fn into_response(self) -> Response {
        match self {
            Written::Fresh { status, .. } if status == StatusCode::NO_CONTENT => {
                status.into_response()
            }
            Written::Fresh { status, value } => (status, axum::Json(value)).into_response(),
            Written::Replayed(stored) => {
                let status = StatusCode::from_u16(stored.status)
                    .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                let mut response = match stored.body {
                    Some(body) => {
                        (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
                    }
                    None => status.into_response(),
                };
                response
                    .headers_mut()
                    .insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
                response
            }
        }
    }
}

/// How often the server deletes idempotency keys older than 24 hours.
pub const SWEEP_INTERVAL: std::time::Duration = std::time::Duration::from_secs(300);
/// Keys deleted per transaction of a sweep.
pub const SWEEP_BATCH: i32 = 1000;

/// Deletes expired idempotency keys every [`SWEEP_INTERVAL`], in
/// transactions of [`SWEEP_BATCH`] rows (row locks only), until `stop`
/// resolves or its sender is dropped. Started by [`crate::Tenantry::start`].
pub(crate) async fn sweep(db: tenantry_db::Database, mut stop: tokio::sync::oneshot::Receiver<()>) {
    let mut tick =
        tokio::time::interval_at(tokio::time::Instant::now() + SWEEP_INTERVAL, SWEEP_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = &mut stop => return,
            _ = tick.tick() => {}
        }
        loop {
            let deleted = async {
                let mut scope = db.admin("scheduler").await?;
                let n = scope.expire_idempotency_keys(SWEEP_BATCH).await?;
                scope.commit().await?;
                Ok::<_, DbError>(n)
            }
            .await;
            match deleted {
                Ok(n) if n >= SWEEP_BATCH => continue,
                Ok(_) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "deleting expired idempotency keys failed");
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A POST carrying `Idempotency-Key` whose 100-byte body never arrives,
    /// with `authorization` when given.
    fn stalled_write(authorization: Option<&str>) -> Request {
        let mut builder = Request::builder()
            .method(Method::POST)
            .uri("/")
            .header(IDEMPOTENCY_KEY, "k-1")
            .header(header::CONTENT_LENGTH, "100");
        if let Some(credential) = authorization {
            builder = builder.header(header::AUTHORIZATION, credential);
        }
        let never = futures_util::stream::pending::<Result<Bytes, std::io::Error>>();
        builder.body(Body::from_stream(never)).unwrap()
    }

    /// A body that never arrives gets 408 `request_timeout` after
    /// [`IDEMPOTENT_BODY_WAIT`] (time paused: at once here), before any
    /// handler or credential check runs.
    #[tokio::test(start_paused = true)]
    async fn a_body_that_never_arrives_is_answered_408_instead_of_holding_the_connection() {
        use tower::ServiceExt;
        let app = axum::Router::new()
            .route("/", axum::routing::post(|| async { "the handler ran" }))
            .route_layer(axum::middleware::from_fn(middleware));
        let request = stalled_write(Some("Bearer tk_not_checked_yet"));
        let response = tokio::time::timeout(IDEMPOTENT_BODY_WAIT * 2, app.oneshot(request))
            .await
            .expect("answered within the deadline, not held open")
            .unwrap();
        assert_eq!(response.status(), StatusCode::REQUEST_TIMEOUT);
        assert_eq!(
            response.headers()[axum::http::header::CONTENT_TYPE],
            "application/problem+json"
        );
    }

    /// Without `Authorization` the body is not read: the request goes on at
    /// once, unread, to the handler (whose credential check answers 401
    /// first in a real route), however slowly its body would arrive.
    #[tokio::test(start_paused = true)]
    async fn without_a_credential_the_body_is_left_unread_for_the_handler_to_refuse() {
        use tower::ServiceExt;
        let app = axum::Router::new()
            .route(
                "/",
                axum::routing::post(|headers: axum::http::HeaderMap| async move {
                    (
                        StatusCode::UNAUTHORIZED,
                        format!("no credential: {}", headers.len()),
                    )
                }),
            )
            .route_layer(axum::middleware::from_fn(middleware));
        let request = stalled_write(None);
        let response =
            tokio::time::timeout(std::time::Duration::from_millis(10), app.oneshot(request))
                .await
                .expect("handed on at once, the body unread")
                .unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }

    #[test]
    fn a_secret_is_blanked_in_the_stored_copy_and_nothing_else_changes() {
        let value = serde_json::json!({ "key": "tk_abc_secret", "key_info": { "key_id": "k1" } });
        let stored = Reply::new(StatusCode::CREATED)
            .hiding("key")
            .stored(&value)
            .unwrap();
        let body: serde_json::Value = serde_json::from_slice(&stored.body.unwrap()).unwrap();
        assert_eq!(body["key"], "");
        assert_eq!(body["key_info"], value["key_info"]);
        let plain = Reply::new(StatusCode::CREATED).stored(&value).unwrap();
        assert_eq!(plain.body.unwrap(), serde_json::to_vec(&value).unwrap());
        assert_eq!(
            Reply::new(StatusCode::NO_CONTENT).stored(&()).unwrap(),
            StoredResponse {
                status: 204,
                body: None
            }
        );
    }
}
