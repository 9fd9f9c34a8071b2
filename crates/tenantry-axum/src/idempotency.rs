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

use std::{
    pin::Pin,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, OnceLock,
    },
    task::{ready, Context, Poll},
};

use axum::{
    body::{Body, Bytes, HttpBody},
    extract::Request,
    http::{header, HeaderName, HeaderValue, Method, StatusCode},
    middleware::Next,
    response::{IntoResponse, Response},
};
use http_body::{Frame, SizeHint};
use serde::Serialize;
use tenantry_db::{DbError, IdempotencyKey, Idempotent, IdempotentRequest, StoredResponse};

use crate::error::{ApiError, ProblemCode};

/// The request header.
pub const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
/// The header that marks a replayed response.
pub const IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

/// For every POST, PUT, PATCH and DELETE carrying `Idempotency-Key`: checks
/// the key (400 `invalid_header` unless 1 to 255 visible ASCII characters)
/// and hands the handler's extractors a [`PendingIdempotency`], which
/// fingerprints method, path and query, and the body as the handler's own
/// extractor reads it. The middleware reads nothing itself: a body is read
/// only after the route has checked the credential, as without the header.
/// Other methods ignore the header (a read is idempotent). Route layer: it
/// runs after routing, so unknown routes answer 404 first.
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
    let (mut parts, body) = req.into_parts();
    let path = parts
        .uri
        .path_and_query()
        .map_or(parts.uri.path(), |p| p.as_str());
    let pending = Arc::new(PendingIdempotency {
        key,
        method: parts.method.as_str().to_owned(),
        path: path.to_owned(),
        started: AtomicBool::new(false),
        read: OnceLock::new(),
    });
    parts.extensions.insert(Arc::clone(&pending));
    let body = Body::new(Fingerprinted {
        inner: body,
        chunks: Vec::new(),
        pending,
    });
    next.run(Request::from_parts(parts, body)).await
}

/// A write's `Idempotency-Key` and what makes two requests the same one:
/// method, path and query, known from the start, and the body, known once
/// the handler's extractor has read it to its end. Put in the request's
/// extensions by [`middleware`]; the credential extractors hand it on.
#[derive(Debug)]
pub struct PendingIdempotency {
    key: IdempotencyKey,
    method: String,
    path: String,
    /// Whether any of the body has been read.
    started: AtomicBool,
    /// Set when the body has been read to its end.
    read: OnceLock<IdempotentRequest>,
}

impl PendingIdempotency {
    /// The request under its key: its body as the handler read it. A body
    /// the handler never touched counts as empty (nothing the write did came
    /// from it), which is also what a request without a body hashes to.
    /// While the body is read in part only, 500 `internal_error` (logged): a
    /// write must come after its whole body is read, or two requests
    /// differing in the unread rest would be taken for one; every body
    /// extractor reads to the end first, so only a handler's mistake gets it.
    pub fn request(&self) -> Result<IdempotentRequest, ApiError> {
        match self.read.get() {
            Some(read) => Ok(read.clone()),
            None if self.started.load(Ordering::Acquire) => {
                tracing::error!("a write under an Idempotency-Key began before its request body was read to its end; refused");
                Err(ApiError::new(ProblemCode::InternalError, "internal error"))
            }
            None => Ok(IdempotentRequest::new(
                self.key.clone(),
                &self.method,
                &self.path,
                &[],
            )),
        }
    }
}

/// The request body as the handler reads it, its pieces kept (shared, not
/// copied) until its end, when they are hashed into the
/// [`PendingIdempotency`].
struct Fingerprinted {
    inner: Body,
    chunks: Vec<Bytes>,
    pending: Arc<PendingIdempotency>,
}

impl Fingerprinted {
    fn finish(&mut self) {
        let chunks = std::mem::take(&mut self.chunks);
        let pending = &self.pending;
        let request = IdempotentRequest::with_body_in_pieces(
            pending.key.clone(),
            &pending.method,
            &pending.path,
            &chunks,
        );
        let _ = pending.read.set(request);
    }
}

impl HttpBody for Fingerprinted {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = &mut *self;
        let frame = ready!(Pin::new(&mut this.inner).poll_frame(cx));
        match &frame {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    this.pending.started.store(true, Ordering::Release);
                    this.chunks.push(data.clone());
                }
                if this.inner.is_end_stream() {
                    this.finish();
                }
            }
            None => this.finish(),
            Some(Err(_)) => {}
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// What a write answers: its status and, for a response that shows a secret
/// once (an API key, a token), the top-level field holding it, which is
/// blanked (`""`) in the copy stored for replays: secrets are stored nowhere.
#[derive(Debug, Clone, Copy)]
pub struct Reply {
    status: StatusCode,
    secret: Option<&'static str>,
    location: Option<Located>,
}

/// Where a created thing is read ([`Reply::located`]): a path prefix and the
/// body's top-level string field that ends the path.
#[derive(Debug, Clone, Copy)]
pub struct Located {
    prefix: &'static str,
    field: &'static str,
}

impl Located {
    /// `Location` for a JSON body whose `field` is a string that fits a
    /// header: its top-level members are read as text, nothing below them
    /// parsed.
    fn header(self, body: &[u8]) -> Option<HeaderValue> {
        let members: Members = serde_json::from_slice(body).ok()?;
        let (_, text) = members.0.iter().find(|(name, _)| name == self.field)?;
        let id: String = serde_json::from_str(text.get()).ok()?;
        HeaderValue::from_str(&format!("{}{id}", self.prefix)).ok()
    }
}

impl Reply {
    /// A response with `status` and the handler's value as JSON body (none for 204).
    pub const fn new(status: StatusCode) -> Self {
        Self {
            status,
            secret: None,
            location: None,
        }
    }

    /// The response names where the created thing is read: `Location:
    /// <prefix><the body's top-level field>` (e.g. `"/v1/resources/"`,
    /// `"id"`), on the first answer and on its replays alike.
    pub const fn located(self, prefix: &'static str, field: &'static str) -> Self {
        Self {
            location: Some(Located { prefix, field }),
            ..self
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
                // The answer's own bytes with the one member blanked: through
                // a `Value`, the members came back in another order, and the
                // replay was not the answer byte for byte (found by a
                // client's audit).
                let bytes = serde_json::to_vec(value).map_err(internal)?;
                let mut members: Members = serde_json::from_slice(&bytes).map_err(internal)?;
                for (name, text) in &mut members.0 {
                    if name == field {
                        *text = serde_json::value::RawValue::from_string("\"\"".into())
                            .map_err(internal)?;
                    }
                }
                Some(serde_json::to_vec(&members).map_err(internal)?)
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
                location: self.location,
            },
            Idempotent::Replayed(stored) => Written::Replayed {
                stored,
                location: self.location,
            },
        }
    }
}

/// A JSON object's members in their order, each value's text as it was.
struct Members(Vec<(String, Box<serde_json::value::RawValue>)>);

impl<'de> serde::Deserialize<'de> for Members {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct InOrder;
        impl<'de> serde::de::Visitor<'de> for InOrder {
            type Value = Members;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Members, A::Error> {
                let mut members = Vec::new();
                while let Some(member) = map.next_entry()? {
                    members.push(member);
                }
                Ok(Members(members))
            }
        }
        deserializer.deserialize_map(InOrder)
    }
}

impl Serialize for Members {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (name, text) in &self.0 {
            map.serialize_entry(name, text)?;
        }
        map.end()
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
        /// Where what was created is read ([`Reply::located`]).
        location: Option<Located>,
    },
    /// The stored response of the first request with the key.
    Replayed {
        /// Status and body as first answered.
        stored: StoredResponse,
        /// Where what was created is read ([`Reply::located`]).
        location: Option<Located>,
    },
}

impl<T> Written<T> {
    /// The value this request wrote; `None` for a replay.
    pub fn fresh(&self) -> Option<&T> {
        match self {
            Written::Fresh { value, .. } => Some(value),
            Written::Replayed { .. } => None,
        }
    }
}

impl<T: Serialize> IntoResponse for Written<T> {
    fn into_response(self) -> Response {
        match self {
            Written::Fresh { status, .. } if status == StatusCode::NO_CONTENT => {
                status.into_response()
            }
            Written::Fresh {
                status,
                value,
                location,
            } => match serde_json::to_vec(&value) {
                Ok(body) => answer(status, Some(body), location),
                Err(e) => {
                    tracing::error!(error = %e, "a response body could not be written as JSON");
                    ApiError::new(ProblemCode::InternalError, "internal error").into_response()
                }
            },
            Written::Replayed { stored, location } => {
                let status = StatusCode::from_u16(stored.status)
                    .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                let mut response = answer(status, stored.body, location);
                response
                    .headers_mut()
                    .insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
                response
            }
        }
    }
}

/// A response with `body` as JSON (none: no body) and, when the reply names
/// where the created thing is read and the body carries it, `Location`: the
/// body is written once, and the location read from those bytes, for a
/// first answer and a replay alike.
fn answer(status: StatusCode, body: Option<Vec<u8>>, location: Option<Located>) -> Response {
    let location = location
        .zip(body.as_deref())
        .and_then(|(located, bytes)| located.header(bytes));
    let mut response = match body {
        Some(body) => (status, [(header::CONTENT_TYPE, "application/json")], body).into_response(),
        None => status.into_response(),
    };
    if let Some(location) = location {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
}

/// How often the server deletes idempotency keys older than 24 hours.
pub const SWEEP_INTERVAL: std::time::Duration = std::time::Duration::from_secs(300);
/// Keys deleted per transaction of a sweep.
pub const SWEEP_BATCH: i32 = 1000;

/// Deletes expired idempotency keys every [`SWEEP_INTERVAL`], in
/// transactions of [`SWEEP_BATCH`] rows (row locks only), until `stop`
/// resolves or its sender is dropped. Started by [`crate::Tenantry::start`].
pub(crate) async fn sweep(db: tenantry_db::Database, mut stop: tokio::sync::watch::Receiver<()>) {
    let mut tick =
        tokio::time::interval_at(tokio::time::Instant::now() + SWEEP_INTERVAL, SWEEP_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.changed() => return,
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

    use tower::ServiceExt;

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

    /// The middleware reads no body, whatever credential the request
    /// carries (none, a wrong one, one still to be checked): the request
    /// goes on at once, unread, to the route, whose credential check
    /// answers first (here a stand-in that refuses everyone), however
    /// slowly its body would arrive.
    #[tokio::test(start_paused = true)]
    async fn the_body_is_left_unread_for_the_route_to_check_the_credential_first() {
        let app = axum::Router::new()
            .route(
                "/",
                axum::routing::post(|headers: axum::http::HeaderMap| async move {
                    (
                        StatusCode::UNAUTHORIZED,
                        format!("refused: {}", headers.len()),
                    )
                }),
            )
            .route_layer(axum::middleware::from_fn(middleware));
        for credential in [None, Some("Bearer tk_wrong"), Some("Basic eDp5")] {
            let response = tokio::time::timeout(
                std::time::Duration::from_millis(10),
                app.clone().oneshot(stalled_write(credential)),
            )
            .await
            .unwrap_or_else(|_| panic!("{credential:?}: handed on at once, the body unread"))
            .unwrap();
            assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        }
    }

    /// How much of the body the test handler reads before it looks at the
    /// fingerprint.
    #[derive(Clone, Copy)]
    enum Reads {
        All,
        Nothing,
        OnePiece,
    }

    /// A route that answers 200 when the fingerprint its handler sees after
    /// reading `reads` of the body is the one of the method, `/w?x=1` and
    /// `expected` under key `k-1`, 409 when it is another, 425 when there is
    /// none.
    fn fingerprinting_app(reads: Reads, expected: &'static [u8]) -> axum::Router {
        let check = move |pending: axum::Extension<Arc<PendingIdempotency>>, body: Request| async move {
            use futures_util::StreamExt;
            let method = body.method().as_str().to_owned();
            match reads {
                Reads::All => {
                    axum::body::to_bytes(body.into_body(), usize::MAX)
                        .await
                        .unwrap();
                }
                Reads::Nothing => {}
                Reads::OnePiece => {
                    body.into_body().into_data_stream().next().await;
                }
            }
            let key = IdempotencyKey::parse("k-1").unwrap();
            match pending.request() {
                Err(_) => StatusCode::TOO_EARLY,
                Ok(r) if r == IdempotentRequest::new(key, &method, "/w?x=1", expected) => {
                    StatusCode::OK
                }
                Ok(_) => StatusCode::CONFLICT,
            }
        };
        axum::Router::new()
            .route("/w", axum::routing::post(check).delete(check))
            .route_layer(axum::middleware::from_fn(middleware))
    }

    /// A keyed write whose body arrives in `chunks`, or in one piece of
    /// known length (as hyper gives a body with `Content-Length`, whose end
    /// shows with its last piece) when `chunks` is `None`.
    fn keyed_write(
        method: Method,
        chunks: Option<&[&'static [u8]]>,
        whole: &'static [u8],
    ) -> Request {
        let body = match chunks {
            Some(chunks) => {
                let frames: Vec<Result<Bytes, std::io::Error>> =
                    chunks.iter().map(|c| Ok(Bytes::from_static(c))).collect();
                Body::from_stream(futures_util::stream::iter(frames))
            }
            None => Body::from(Bytes::from_static(whole)),
        };
        Request::builder()
            .method(method)
            .uri("/w?x=1")
            .header(IDEMPOTENCY_KEY, "k-1")
            .body(body)
            .unwrap()
    }

    /// The body is hashed as the handler reads it, in as many pieces as it
    /// comes, to the very fingerprint of the whole body read at once (the
    /// one stored keys were made with); a body the handler never touches
    /// counts as empty; one read in part has no fingerprint.
    #[tokio::test]
    async fn the_fingerprint_of_a_body_read_by_the_handler_is_the_whole_bodys() {
        const WHOLE: &[u8] = b"{\"name\":\"acme\"}";
        let pieces: &[&[u8]] = &[&WHOLE[..3], &WHOLE[3..9], &WHOLE[9..]];
        let empty: &[&[u8]] = &[];
        for (reads, chunks, expected, status) in [
            (Reads::All, None, WHOLE, StatusCode::OK),
            (Reads::All, Some(&[WHOLE][..]), WHOLE, StatusCode::OK),
            (Reads::All, Some(pieces), WHOLE, StatusCode::OK),
            (Reads::All, Some(empty), b"".as_slice(), StatusCode::OK),
            // A different body is a different request.
            (
                Reads::All,
                Some(pieces),
                b"{\"name\":\"acmf\"}".as_slice(),
                StatusCode::CONFLICT,
            ),
            (Reads::All, None, b"".as_slice(), StatusCode::CONFLICT),
            // Untouched, as by a route that takes no body.
            (Reads::Nothing, Some(pieces), b"".as_slice(), StatusCode::OK),
            (Reads::OnePiece, Some(pieces), WHOLE, StatusCode::TOO_EARLY),
        ] {
            let response = fingerprinting_app(reads, expected)
                .oneshot(keyed_write(Method::POST, chunks, WHOLE))
                .await
                .unwrap();
            assert_eq!(response.status(), status, "{chunks:?} against {expected:?}");
        }
    }

    #[test]
    fn a_located_reply_names_the_created_thing_fresh_and_replayed_and_nothing_without_its_field() {
        let reply = Reply::new(StatusCode::CREATED).located("/v1/things/", "id");
        let value = serde_json::json!({ "id": "abc", "name": "x" });
        let location = |written: Written<serde_json::Value>| {
            written
                .into_response()
                .headers()
                .get(header::LOCATION)
                .map(|v| v.to_str().unwrap().to_owned())
        };
        let fresh = reply.written(Idempotent::Fresh(value.clone()));
        assert_eq!(location(fresh).as_deref(), Some("/v1/things/abc"));
        let stored = reply.stored(&value).unwrap();
        let replayed = reply.written(Idempotent::Replayed(stored));
        assert_eq!(location(replayed).as_deref(), Some("/v1/things/abc"));
        // No such string field, or a plain reply: no header.
        let other = reply.written(Idempotent::Fresh(serde_json::json!({ "id": 7 })));
        assert_eq!(location(other), None);
        let plain = Reply::new(StatusCode::CREATED).written(Idempotent::Fresh(value));
        assert_eq!(location(plain), None);
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
