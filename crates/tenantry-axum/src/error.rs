//! Errors as `application/problem+json` (RFC 9457): one type for every handler, extractor and fallback of tenantry's API and of applications built on it, with a stable `code` per kind. The codes are listed once, in [`ProblemCode`]; the API description's list is generated from it. Which OpenAPI responses a route declares is the API's (`tenantry_api::error::responses`).

use axum::{
    extract::rejection::{JsonRejection, PathRejection, QueryRejection},
    http::{header, StatusCode},
    response::{IntoResponse, Response},
};
use serde::Serialize;
use tenantry_db::DbError;

/// The detail of a 503 for a misconfigured server (a privilege or a
/// permission the application's code needs and the database lacks): every
/// client would get it alike, and it names nothing of the schema.
const MISCONFIGURED: &str =
    "the server is misconfigured and cannot serve this request; its operator has been told";

/// Declares [`ProblemCode`] from one table: variant, code, HTTP status, title.
macro_rules! problem_codes {
    ($($variant:ident = ($code:literal, $status:ident, $title:literal),)*) => {
        /// Every kind of problem the API returns, with its HTTP status and title.
        /// Codes are stable: a retired code is never reused for another meaning.
        ///
        /// Each serializes as its code, in snake case.
        //  (The variant in snake case, pinned by a test: utoipa does not read
        //  a `serde(rename)` made by a macro.)
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
        #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
        #[serde(rename_all = "snake_case")]
        pub enum ProblemCode {
            $(
                #[doc = $title]
                $variant,
            )*
        }

        impl ProblemCode {
            /// Every code, in the order of the table (grouped by status).
            pub const ALL: &'static [ProblemCode] = &[$(ProblemCode::$variant),*];

            /// The stable machine-readable code, e.g. `not_found`.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(ProblemCode::$variant => $code,)*
                }
            }

            /// The HTTP status of this kind of problem.
            pub fn status(self) -> StatusCode {
                match self {
                    $(ProblemCode::$variant => StatusCode::$status,)*
                }
            }

            /// Short summary of this kind of problem.
            pub fn title(self) -> &'static str {
                match self {
                    $(ProblemCode::$variant => $title,)*
                }
            }
        }
    };
}

problem_codes! {
    InvalidJson = ("invalid_json", BAD_REQUEST, "Request body is not valid JSON for this route"),
    InvalidPath = ("invalid_path", BAD_REQUEST, "A path parameter is invalid"),
    InvalidQuery = ("invalid_query", BAD_REQUEST, "A query parameter is invalid"),
    InvalidCursor = ("invalid_cursor", BAD_REQUEST, "The pagination cursor is invalid"),
    InvalidHeader = ("invalid_header", BAD_REQUEST, "A request header is invalid"),
    Unauthorized = ("unauthorized", UNAUTHORIZED, "Missing or invalid credentials"),
    PermissionDenied = ("permission_denied", FORBIDDEN, "The credential lacks the permission this route needs"),
    TenantSuspended = ("tenant_suspended", FORBIDDEN, "The tenant is suspended"),
    WrongCredential = ("wrong_credential", FORBIDDEN, "This route needs another kind of credential"),
    Forbidden = ("forbidden", FORBIDDEN, "The operation is not allowed"),
    NotFound = ("not_found", NOT_FOUND, "Not found"),
    RouteNotFound = ("route_not_found", NOT_FOUND, "No such route"),
    MethodNotAllowed = ("method_not_allowed", METHOD_NOT_ALLOWED, "Method not allowed on this route"),
    Conflict = ("conflict", CONFLICT, "The request conflicts with the current state"),
    QuotaExceeded = ("quota_exceeded", CONFLICT, "A quota or limit would be exceeded"),
    PreconditionFailed = ("precondition_failed", PRECONDITION_FAILED, "A precondition of the request (If-Match) does not hold"),
    BodyTooLarge = ("body_too_large", PAYLOAD_TOO_LARGE, "Request body too large"),
    BodyTimeout = ("body_timeout", REQUEST_TIMEOUT, "The request body did not arrive in time"),
    UnsupportedMediaType = ("unsupported_media_type", UNSUPPORTED_MEDIA_TYPE, "Request body must be application/json"),
    ValidationFailed = ("validation_failed", UNPROCESSABLE_ENTITY, "The request is well-formed but invalid"),
    RateLimited = ("rate_limited", TOO_MANY_REQUESTS, "Too many requests for this tenant"),
    InternalError = ("internal_error", INTERNAL_SERVER_ERROR, "Internal error"),
    ServiceUnavailable = ("service_unavailable", SERVICE_UNAVAILABLE, "The database could not serve the request in time or is unavailable; retry later"),
    IdentityProviderUnavailable = ("identity_provider_unavailable", SERVICE_UNAVAILABLE, "The identity provider's keys cannot be fetched; retry later"),
    ShuttingDown = ("shutting_down", SERVICE_UNAVAILABLE, "The server is shutting down; retry, on another instance if there is one"),
}

impl ProblemCode {
    /// The list of codes as Markdown (code, status, title), for the API description.
    pub fn markdown_list() -> String {
        ProblemCode::ALL
            .iter()
            .map(|c| {
                format!(
                    "- `{}` ({}): {}\n",
                    c.as_str(),
                    c.status().as_u16(),
                    c.title()
                )
            })
            .collect()
    }
}

impl std::fmt::Display for ProblemCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A problem's `code`: one of tenantry's kinds, or one of the application's
/// own ([`ApiError::with_code`]), written as its text either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Code {
    /// One of tenantry's.
    Tenantry(ProblemCode),
    /// The application's own (`invoice_already_paid`).
    Own(&'static str),
}

impl Code {
    /// The code as sent, e.g. `not_found`.
    pub fn as_str(self) -> &'static str {
        match self {
            Code::Tenantry(code) => code.as_str(),
            Code::Own(code) => code,
        }
    }
}

impl std::fmt::Display for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Code {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl PartialEq<ProblemCode> for Code {
    fn eq(&self, other: &ProblemCode) -> bool {
        *self == Code::Tenantry(*other)
    }
}

/// A problem details body.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Problem {
    /// URI identifying the problem kind: `urn:tenantry:problem:<code>`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Short summary of the kind.
    pub title: String,
    /// HTTP status.
    pub status: u16,
    /// What went wrong in this request.
    pub detail: String,
    /// Stable machine-readable code (see the list in the API description).
    /// Codes may be added: treat a code you do not know by the HTTP status.
    #[cfg_attr(feature = "openapi", schema(value_type = ProblemCode))]
    pub code: Code,
    /// The request field at fault, when known (e.g. `name`, `settings.max_resources`,
    /// `allowed_cidrs[0]`, a query parameter such as `limit`), whatever the status:
    /// a value of the wrong type (400 `invalid_json`, `invalid_query`) names it as a
    /// value out of bounds (422) does.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// The request's id, as in the `X-Request-Id` response header: quote it
    /// when reporting a problem. Present when the server gives requests ids
    /// (tenantry's server sets it on every problem).
    // (Set by crate::request_log::RequestIdLayer; this comment is the API
    // description, where a Rust link would show as written.)
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

/// The error every handler returns.
#[derive(Debug, Clone)]
pub struct ApiError {
    code: ProblemCode,
    detail: String,
    field: Option<String>,
    /// Whole seconds for `Retry-After` when they are known (a rate limit's
    /// wait); else [`RETRY_AFTER_SECS`].
    /// (u32: some 136 years, and the error stays small enough to return
    /// by value: clippy's result_large_err.)
    retry_after_secs: Option<u32>,
    /// A 401 for a credential that was sent and refused: its challenge says
    /// `error="invalid_token"` (RFC 6750, 3.1); without one, a bare `Bearer`.
    token_refused: bool,
    /// The unique key or constraint a 409 came from ([`tenantry_db::Conflict::constraint`]),
    /// for the application's own words; never sent to the client.
    constraint: Option<String>,
    /// Why a 503 was answered, when its code does not say it: the label of
    /// `tenantry_unavailable_total` (see [`ApiError::unavailable_cause`]).
    cause: Option<&'static str>,
    /// The application's own code for this case ([`ApiError::with_code`]).
    own_code: Option<&'static str>,
}

/// The answer for a path no route has, as problem+json: a router's
/// `.fallback(route_not_found)` (axum's own is an empty `404`).
pub async fn route_not_found() -> ApiError {
    ApiError::route_not_found()
}

/// The answer for a handler that panicked, as problem+json (for
/// `tower_http::catch_panic::CatchPanicLayer::custom`): without it the
/// connection is dropped with no answer at all. The request log's layer
/// ([`Tenantry::layer`](crate::Tenantry::layer)) answers a panic of the routes
/// it wraps with it, logged and recorded like any request; [`crate::serve::serve`]
/// answers a panic anywhere else in the router with it.
pub fn panicked(_: Box<dyn std::any::Any + Send>) -> axum::response::Response {
    axum::response::IntoResponse::into_response(ApiError::new(
        ProblemCode::InternalError,
        "internal error",
    ))
}

/// The answer for a route asked with a method it does not take, as
/// problem+json: a router's `.method_not_allowed_fallback(method_not_allowed)`
/// (axum's own is an empty `405`).
pub async fn method_not_allowed() -> ApiError {
    ApiError::new(
        ProblemCode::MethodNotAllowed,
        "this route does not accept that method",
    )
}

impl ApiError {
    /// An error of a kind, with what went wrong in this request.
    pub fn new(code: ProblemCode, detail: impl Into<String>) -> Self {
        Self {
            code,
            detail: detail.into(),
            field: None,
            retry_after_secs: None,
            token_refused: false,
            constraint: None,
            cause: None,
            own_code: None,
        }
    }

    /// 503 for a server that cannot serve the request as it is set up (a
    /// privilege or a permission missing): every client would get it alike,
    /// so no client is blamed, and its operator reads the log line that
    /// said why.
    pub(crate) fn misconfigured() -> Self {
        Self {
            cause: Some("misconfigured"),
            ..Self::new(ProblemCode::ServiceUnavailable, MISCONFIGURED)
        }
    }

    fn with_cause(mut self, cause: &'static str) -> Self {
        self.cause = Some(cause);
        self
    }

    /// Every cause [`ApiError::unavailable_cause`] names.
    pub const UNAVAILABLE_CAUSES: &'static [&'static str] = &[
        "database",
        "statement_timeout",
        "tenant_busy",
        "contention",
        "misconfigured",
        "identity_provider",
        "shutting_down",
    ];

    /// 404 `route_not_found` for a path no route has.
    pub fn route_not_found() -> Self {
        Self::new(ProblemCode::RouteNotFound, "no such route")
    }

    /// For a 503, why it was answered, as `tenantry_unavailable_total`
    /// counts it: `database` (out of reach, read-only, out of disk),
    /// `statement_timeout` (a statement over its timeout: a slow one, or one
    /// waiting for a row or table lock another transaction holds),
    /// `tenant_busy` (one tenant's, one person's or the
    /// credential checks' share of the pool taken: that tenant's load, not
    /// an outage), `contention` (rolled back by a concurrent transaction, or
    /// a lock not free in time, 55P03, after the retries), `misconfigured`,
    /// `identity_provider` or `shutting_down`. `None` for another status.
    pub fn unavailable_cause(&self) -> Option<&'static str> {
        (self.status() == StatusCode::SERVICE_UNAVAILABLE).then(|| {
            self.cause.unwrap_or(match self.code {
                ProblemCode::IdentityProviderUnavailable => "identity_provider",
                ProblemCode::ShuttingDown => "shutting_down",
                _ => "database",
            })
        })
    }

    /// The same error telling a client to retry after `secs` seconds (at
    /// least 1) in its `Retry-After` (every 429 and 503 has one, 1 s unless
    /// said otherwise; another status only when said).
    pub fn with_retry_after(mut self, secs: u64) -> Self {
        self.retry_after_secs = Some(u32::try_from(secs).unwrap_or(u32::MAX).max(1));
        self
    }

    /// 429 `rate_limited` whose `Retry-After` is `wait` rounded up to whole
    /// seconds (at least 1): a client that obeys it is let through next time.
    pub fn rate_limited(detail: impl Into<String>, wait: std::time::Duration) -> Self {
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        Self::new(ProblemCode::RateLimited, detail).with_retry_after(secs)
    }

    /// The same error (code, cause, field, `Retry-After`) saying `detail`.
    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = detail.into();
        self
    }

    /// The same error answered with a code of the application's own, for a
    /// case its clients tell apart (`invoice_already_paid`): the status,
    /// `type` and `title` stay those of `self`'s kind, which says how a
    /// client that does not know the code should treat it. Write it as
    /// tenantry writes its own: lower case ASCII words joined by `_`.
    ///
    /// ```
    /// use tenantry_axum::{ApiError, ProblemCode};
    ///
    /// let e = ApiError::new(ProblemCode::Conflict, "invoice 42 is paid already")
    ///     .with_code("invoice_already_paid");
    /// assert_eq!(e.problem().code.as_str(), "invoice_already_paid");
    /// assert_eq!(e.status().as_u16(), 409);
    /// ```
    pub fn with_code(mut self, code: &'static str) -> Self {
        debug_assert!(
            !code.is_empty()
                && code
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
            "a problem code is lower case ASCII words joined by _: {code:?}"
        );
        self.own_code = Some(code);
        self
    }

    /// The application's own code given with [`ApiError::with_code`].
    pub fn own_code(&self) -> Option<&'static str> {
        self.own_code
    }

    /// The code the body and the logs carry: the application's own when
    /// given, else the kind's.
    fn sent_code(&self) -> Code {
        self.own_code.map_or(Code::Tenantry(self.code), Code::Own)
    }

    /// Names the field at fault.
    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    /// 401 with the one body every credential failure shares, for a
    /// request that sent none. It names no kind of credential: an app built
    /// on this crate may take API keys only, or people's tokens only, and
    /// tenantry's own server lists its three in its OpenAPI document.
    pub fn unauthorized() -> Self {
        Self::new(
            ProblemCode::Unauthorized,
            "a valid credential is required: send it as Authorization: Bearer <credential>",
        )
    }

    /// [`unauthorized`](Self::unauthorized) for a credential that was sent
    /// and refused (junk, forged, revoked, expired: all alike): the same
    /// body, its challenge `Bearer error="invalid_token"`.
    pub fn invalid_token() -> Self {
        Self::unauthorized().with_token_refused()
    }

    /// The same error, its challenge saying the credential sent was refused
    /// (a 401 only).
    pub fn with_token_refused(mut self) -> Self {
        self.token_refused = true;
        self
    }

    /// 404 for objects, identical for missing and foreign ones.
    pub fn not_found(what: &str) -> Self {
        Self::new(ProblemCode::NotFound, format!("{what} not found"))
    }

    /// 422 naming a field.
    pub fn invalid(field: &str, detail: impl Into<String>) -> Self {
        Self::new(ProblemCode::ValidationFailed, detail).with_field(field)
    }

    /// The code.
    pub fn code(&self) -> ProblemCode {
        self.code
    }

    /// What went wrong in this request (the body's `detail`).
    pub fn detail(&self) -> &str {
        &self.detail
    }

    /// The field at fault, when one is named (the body's `field`).
    pub fn field(&self) -> Option<&str> {
        self.field.as_deref()
    }

    /// For a 409 from a row that would break a unique key or constraint of a
    /// table, that constraint's name (`projects_tenant_id_name_key`): map it
    /// to words and a field of your own. Not part of the response.
    pub fn constraint(&self) -> Option<&str> {
        self.constraint.as_deref()
    }

    /// The HTTP status of the code.
    pub fn status(&self) -> StatusCode {
        self.code.status()
    }

    /// The body.
    pub fn problem(&self) -> Problem {
        Problem {
            kind: format!("urn:tenantry:problem:{}", self.code),
            title: self.code.title().to_owned(),
            status: self.code.status().as_u16(),
            detail: self.detail.clone(),
            code: self.sent_code(),
            field: self.field.clone(),
            request_id: None,
        }
    }
}

/// `code: detail`, for logs and error chains (`?` into `anyhow`, `%e` in tracing).
impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.sent_code(), self.detail)
    }
}

impl std::error::Error for ApiError {}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = serde_json::to_vec(&self.problem()).unwrap_or_default();
        let mut response = (
            status,
            [(header::CONTENT_TYPE, "application/problem+json")],
            body,
        )
            .into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static(if self.token_refused {
                    "Bearer error=\"invalid_token\""
                } else {
                    "Bearer"
                }),
            );
        } else if self.code == ProblemCode::PermissionDenied {
            // RFC 6750 §3.1: a valid bearer credential (every credential here
            // is one) that lacks what the route needs.
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer error=\"insufficient_scope\""),
            );
        }
        if let Some(cause) = self.unavailable_cause() {
            metrics::counter!("tenantry_unavailable_total", "cause" => cause).increment(1);
        }
        if status == StatusCode::SERVICE_UNAVAILABLE
            || status == StatusCode::TOO_MANY_REQUESTS
            || self.retry_after_secs.is_some()
        {
            // Nothing was written, so the request may simply be sent again
            // (but for a write cancelled by shutting_down whose COMMIT was
            // already sent: docs/operations.md; an Idempotency-Key covers it).
            let value = match self.retry_after_secs {
                Some(secs) => header::HeaderValue::from(secs),
                None => header::HeaderValue::from_static(RETRY_AFTER_SECS),
            };
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        response.extensions_mut().insert(self);
        response
    }
}

/// How PostgreSQL words a statement cancelled by `statement_timeout` (57014;
/// the server's login gets untranslated messages, migration 0057).
const STATEMENT_TIMEOUT: &str = "canceling statement due to statement timeout";

/// `Retry-After` of every 503 (an outage or a collision with a concurrent
/// transaction) and of a 429 that does not know its wait
/// ([`ApiError::rate_limited`] does).
const RETRY_AFTER_SECS: &str = "1";

/// A driver error from a handler's own use of a row (`row.try_get`, …):
/// mapped as the library maps it ([`DbError`]).
impl From<tenantry_db::tokio_postgres::Error> for ApiError {
    fn from(err: tenantry_db::tokio_postgres::Error) -> Self {
        DbError::from(err).into()
    }
}

impl From<DbError> for ApiError {
    fn from(err: DbError) -> Self {
        let busy = err.busy_share();
        match err {
            DbError::NotFound(m) => Self::new(ProblemCode::NotFound, m),
            DbError::Conflict(c) => Self {
                constraint: c.constraint().map(str::to_owned),
                field: c.field().map(str::to_owned),
                // A request with the same Idempotency-Key still running: its
                // answer comes once that one ends (found by a failure review:
                // the 409 said "retry it later" and gave no Retry-After).
                retry_after_secs: (c.field() == Some("Idempotency-Key")).then_some(1),
                ..Self::new(ProblemCode::Conflict, c)
            },
            DbError::QuotaExceeded(m) => Self::new(ProblemCode::QuotaExceeded, m),
            DbError::PermissionDenied(m) => Self::new(ProblemCode::PermissionDenied, m),
            // A privilege the statement's role lacks (not a policy's refusal
            // of a row) is the server's misconfiguration, never the client's
            // doing: a table of the application's not adopted or not
            // granted, or a grant of tenantry's own revoked by hand. Every
            // client would get it alike, so it is the service that cannot
            // serve (503), said where the operator looks, and the client
            // learns no table's name (found by a DBA's review: a revoke on
            // tenantry's tables answered 403 "permission denied for table
            // roles"; a review of the Rust path had found it a bare 403).
            DbError::Forbidden(m) if m.starts_with("permission denied for ") => {
                tracing::error!(error = %m, "a statement lacks a privilege: a table of the application's not adopted (tenantry table adopt) or not granted, or a grant of tenantry's revoked; run `tenantry doctor`");
                Self::misconfigured()
            }
            DbError::Forbidden(m) => Self::new(ProblemCode::Forbidden, m),
            DbError::TenantSuspended(m) => Self::new(ProblemCode::TenantSuspended, m),
            DbError::Invalid { field, message } => {
                let e = Self::new(ProblemCode::ValidationFailed, message);
                match field {
                    Some(f) => e.with_field(f),
                    None => e,
                }
            }
            // A statement over statement_timeout: the database is up, and
            // the usual cause is a lock one transaction holds on a row of
            // its tenant's (a resilience review: one tenant's row locked by
            // hand counted as an outage and logged "database unavailable").
            DbError::Unavailable(m) if m.starts_with(STATEMENT_TIMEOUT) => {
                tracing::warn!(error = %m, "statement ran past statement_timeout (slow, or waiting for a lock another transaction holds)");
                Self::new(
                    ProblemCode::ServiceUnavailable,
                    "the database could not serve this request in time; retry later",
                )
                .with_cause("statement_timeout")
            }
            DbError::Unavailable(m) => {
                tracing::warn!(error = %m, "database unavailable");
                Self::new(
                    ProblemCode::ServiceUnavailable,
                    // Also a statement cancelled by its timeout, or one that
                    // waited too long for a lock: the database is up then.
                    "the database could not serve this request in time or is unavailable; retry later",
                )
            }
            DbError::TenantBusy(m) => {
                // One tenant's load, not an outage: an alert on the line
                // above must not fire for it (found by a contention review).
                tracing::warn!(error = %m, "tenant's share of the database pool is taken");
                Self::new(
                    ProblemCode::ServiceUnavailable,
                    match busy {
                        Some(tenantry_db::BusyShare::Credentials) => {
                            "too many checks of credentials are waiting for the database; retry later"
                        }
                        Some(tenantry_db::BusyShare::Person) => {
                            "too many of this person's requests are in flight; retry later"
                        }
                        _ => "too many of this tenant's requests are in flight; retry later",
                    },
                )
                .with_cause("tenant_busy")
            }
            DbError::Contention(m) => {
                tracing::warn!(error = %m, "transaction rolled back by a concurrent one");
                Self::new(
                    ProblemCode::ServiceUnavailable,
                    // (PostgreSQL's English words for lock_timeout, as
                    // the boot check wants lc_messages; a translated
                    // message is said as a collision.)
                    if m.contains("lock timeout") {
                        "the request waited too long for a lock another transaction holds and was rolled back; retry"
                    } else {
                        "the request collided with a concurrent one and was rolled back; retry"
                    },
                )
                .with_cause("contention")
            }
            DbError::Internal(m) => {
                tracing::error!(error = %m, "internal database error");
                Self::new(ProblemCode::InternalError, "internal error")
            }
        }
    }
}

/// A body that is not the JSON a route takes (`extract::Json` checks size and
/// content type itself, before parsing).
impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        // serde's message names the field and the problem ("unknown field `x`", "missing field `name`").
        let detail = match &rejection {
            JsonRejection::JsonDataError(e) => std::error::Error::source(e)
                .map(ToString::to_string)
                .unwrap_or_else(|| e.body_text()),
            JsonRejection::JsonSyntaxError(e) => std::error::Error::source(e)
                .map(ToString::to_string)
                .unwrap_or_else(|| e.body_text()),
            other => other.body_text(),
        };
        // A syntax error is the body's, whatever value it was in.
        let field = match &rejection {
            JsonRejection::JsonDataError(_) => serde_field(&rejection),
            _ => None,
        };
        Self {
            field,
            ..Self::new(ProblemCode::InvalidJson, detail)
        }
    }
}

/// The field a body's or a query's parse error is about, named as tenantry's
/// 422s name fields (`name`, `settings.max_resources`): the path
/// serde_path_to_error found, with the field of a "missing field" message
/// under it. None for an error of the whole body
/// (not JSON at all) or in another form. A client maps `field` to its form's
/// inputs whatever the status (found by a review generating clients: a
/// value of the wrong type was a 400 naming its field in the detail only).
fn serde_field(rejection: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut error = Some(rejection);
    let (path, message) = loop {
        let e = error?;
        if let Some(p) = e.downcast_ref::<serde_path_to_error::Error<serde_json::Error>>() {
            break (p.path().to_string(), p.inner().to_string());
        }
        if let Some(p) = e.downcast_ref::<serde_path_to_error::Error<serde::de::value::Error>>() {
            break (p.path().to_string(), p.inner().to_string());
        }
        error = e.source();
    };
    // A missing field's path is its parent's (an unknown one's is its own).
    let named = message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.split_once('`'))
        .map(|(name, _)| name);
    let path = (path != ".").then_some(path);
    match (path, named) {
        (Some(path), Some(name)) => Some(format!("{path}.{name}")),
        (Some(path), None) => Some(path),
        (None, Some(name)) => Some(name.to_owned()),
        (None, None) => None,
    }
}

impl From<PathRejection> for ApiError {
    /// A path segment that is not what the route takes (`/v1/resources/nope`)
    /// names the parameter and what it needs, with the value shortened (it
    /// is the caller's own, and may be long).
    fn from(rejection: PathRejection) -> Self {
        use axum::extract::path::ErrorKind;
        let PathRejection::FailedToDeserializePathParams(e) = &rejection else {
            return Self::new(ProblemCode::InvalidPath, rejection.body_text());
        };
        let names_uuid = |expected: &str| expected.ends_with("Id") || expected.ends_with("Uuid");
        let (key, value, uuid) = match e.kind() {
            ErrorKind::ParseErrorAtKey {
                key,
                value,
                expected_type,
            } => (Some(key), value, names_uuid(expected_type)),
            ErrorKind::DeserializeError {
                key,
                value,
                message,
            } => (
                Some(key),
                value,
                message.to_ascii_lowercase().contains("uuid"),
            ),
            ErrorKind::ParseError {
                value,
                expected_type,
            }
            | ErrorKind::ParseErrorAtIndex {
                value,
                expected_type,
                ..
            } => (None, value, names_uuid(expected_type)),
            _ => return Self::new(ProblemCode::InvalidPath, rejection.body_text()),
        };
        let mut shown: String = value.chars().take(64).collect();
        if value.chars().count() > 64 {
            shown.push('…');
        }
        let what = if uuid { " (a uuid)" } else { "" };
        match key {
            Some(key) => Self::new(
                ProblemCode::InvalidPath,
                format!("{shown:?} is not a valid {key}{what}"),
            )
            .with_field(key.clone()),
            None => Self::new(
                ProblemCode::InvalidPath,
                format!("{shown:?} is not valid here{what}"),
            ),
        }
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        Self {
            field: serde_field(&rejection),
            ..Self::new(
                ProblemCode::InvalidQuery,
                integer_parse_in_words(&query_rejection_in_words(&rejection.body_text())),
            )
        }
    }
}

/// axum's "Failed to deserialize query string: ..." as "query string: ...",
/// in the words of the API's other refusals (a review of the Rust path).
fn query_rejection_in_words(text: &str) -> String {
    match text.strip_prefix("Failed to deserialize query string: ") {
        Some(rest) => format!("query string: {rest}"),
        None => text.to_owned(),
    }
}

/// A query parameter's integer parse error in words: Rust's own ("invalid
/// digit found in string" for `limit=-1`, where `limit=0` is told its
/// bounds) said as what the value must be (a new user's review).
fn integer_parse_in_words(text: &str) -> String {
    [
        (
            "invalid digit found in string",
            "must be a whole number (digits only)",
        ),
        ("number too large to fit in target type", "is too large"),
        ("number too small to fit in target type", "is too small"),
        ("cannot parse integer from empty string", "is empty"),
    ]
    .iter()
    .fold(text.to_owned(), |text, (rust, words)| {
        text.replace(rust, words)
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_query_strings_refusal_is_said_without_axums_words() {
        assert_eq!(
            query_rejection_in_words(
                "Failed to deserialize query string: unknown field `foo`, expected `limit`"
            ),
            "query string: unknown field `foo`, expected `limit`"
        );
        assert_eq!(
            query_rejection_in_words("limit: is empty"),
            "limit: is empty"
        );
    }

    #[test]
    fn an_integer_query_parameter_that_does_not_parse_is_told_what_it_must_be() {
        assert_eq!(
            integer_parse_in_words(
                "Failed to deserialize query string: limit: invalid digit found in string"
            ),
            "Failed to deserialize query string: limit: must be a whole number (digits only)"
        );
        assert_eq!(
            integer_parse_in_words("limit: number too large to fit in target type"),
            "limit: is too large"
        );
    }

    #[test]
    fn every_code_is_unique_and_serializes_as_its_string() {
        let mut seen = std::collections::HashSet::new();
        for code in ProblemCode::ALL {
            assert!(seen.insert(code.as_str()), "duplicate code {code}");
            assert_eq!(serde_json::to_value(code).unwrap(), code.as_str());
            assert_eq!(ApiError::new(*code, "x").status(), code.status());
        }
    }

    #[test]
    fn codes_and_statuses_stay_what_clients_depend_on() {
        let pinned: Vec<(&str, u16)> = ProblemCode::ALL
            .iter()
            .map(|c| (c.as_str(), c.status().as_u16()))
            .collect();
        assert_eq!(
            pinned,
            [
                ("invalid_json", 400),
                ("invalid_path", 400),
                ("invalid_query", 400),
                ("invalid_cursor", 400),
                ("invalid_header", 400),
                ("unauthorized", 401),
                ("permission_denied", 403),
                ("tenant_suspended", 403),
                ("wrong_credential", 403),
                ("forbidden", 403),
                ("not_found", 404),
                ("route_not_found", 404),
                ("method_not_allowed", 405),
                ("conflict", 409),
                ("quota_exceeded", 409),
                ("precondition_failed", 412),
                ("body_too_large", 413),
                ("body_timeout", 408),
                ("unsupported_media_type", 415),
                ("validation_failed", 422),
                ("rate_limited", 429),
                ("internal_error", 500),
                ("service_unavailable", 503),
                ("identity_provider_unavailable", 503),
                ("shutting_down", 503),
            ]
        );
    }

    #[test]
    fn an_applications_own_code_is_sent_with_its_kinds_status_type_and_title() {
        let e = ApiError::new(ProblemCode::Conflict, "invoice 42 is paid already")
            .with_code("invoice_already_paid")
            .with_field("invoice_id");
        let body = serde_json::to_value(e.problem()).unwrap();
        assert_eq!(body["code"], "invoice_already_paid");
        assert_eq!(body["status"], 409);
        assert_eq!(body["type"], "urn:tenantry:problem:conflict");
        assert_eq!(body["title"], ProblemCode::Conflict.title());
        assert_eq!(body["field"], "invoice_id");
        assert_eq!(e.code(), ProblemCode::Conflict);
        assert_eq!(e.own_code(), Some("invoice_already_paid"));
        assert_eq!(
            e.to_string(),
            "invoice_already_paid: invoice 42 is paid already"
        );
        let response = e.into_response();
        assert_eq!(response.status(), StatusCode::CONFLICT);
        // Without one, the kind's code as before.
        let plain = ApiError::new(ProblemCode::Conflict, "taken");
        assert_eq!(plain.problem().code, ProblemCode::Conflict);
        assert_eq!(
            serde_json::to_value(plain.problem()).unwrap()["code"],
            "conflict"
        );
    }

    #[test]
    fn a_quota_refused_by_the_database_is_quota_exceeded() {
        let e = ApiError::from(DbError::QuotaExceeded("at most 2 resources".into()));
        assert_eq!(e.code(), ProblemCode::QuotaExceeded);
        assert_eq!(e.status(), StatusCode::CONFLICT);
        assert_eq!(e.problem().detail, "at most 2 resources");
    }

    #[test]
    fn a_deadlock_or_serialization_failure_is_503_with_retry_after_never_500() {
        let e = ApiError::from(DbError::Contention(
            "deadlock detected on relation secret_table".into(),
        ));
        assert_eq!(e.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(!e.problem().detail.contains("secret_table"));
        let response = e.into_response();
        assert_eq!(
            response.headers().get(header::RETRY_AFTER).unwrap(),
            RETRY_AFTER_SECS
        );
    }

    #[test]
    fn every_503_names_its_cause_and_a_tenants_load_is_told_from_an_outage() {
        let causes = [
            (
                DbError::Unavailable("connection refused".into()),
                "database",
            ),
            (
                DbError::Unavailable("canceling statement due to statement timeout".into()),
                "statement_timeout",
            ),
            (
                DbError::Unavailable("canceling statement due to user request".into()),
                "database",
            ),
            (DbError::TenantBusy("tenant t has 4".into()), "tenant_busy"),
            (
                DbError::Contention("deadlock detected".into()),
                "contention",
            ),
            (
                DbError::Forbidden("permission denied for table invoices".into()),
                "misconfigured",
            ),
        ];
        for (db, cause) in causes {
            let e = ApiError::from(db);
            assert_eq!(e.status(), StatusCode::SERVICE_UNAVAILABLE, "{e}");
            assert_eq!(e.unavailable_cause(), Some(cause), "{e}");
            assert!(ApiError::UNAVAILABLE_CAUSES.contains(&cause));
        }
        for (code, cause) in [
            (
                ProblemCode::IdentityProviderUnavailable,
                "identity_provider",
            ),
            (ProblemCode::ShuttingDown, "shutting_down"),
            (ProblemCode::ServiceUnavailable, "database"),
        ] {
            assert_eq!(ApiError::new(code, "x").unavailable_cause(), Some(cause));
            assert!(ApiError::UNAVAILABLE_CAUSES.contains(&cause));
        }
        assert_eq!(
            ApiError::misconfigured().unavailable_cause(),
            Some("misconfigured")
        );
        assert_eq!(ApiError::not_found("resource").unavailable_cause(), None);
        assert_eq!(
            ApiError::from(DbError::Forbidden("not yours".into())).unavailable_cause(),
            None
        );
    }

    #[test]
    fn a_rate_limits_retry_after_is_its_wait_rounded_up_to_whole_seconds_and_at_least_one() {
        for (wait, shown) in [
            (Duration::from_millis(99_250), "100"),
            (Duration::from_secs(100), "100"),
            (Duration::from_millis(1), "1"),
            (Duration::ZERO, "1"),
        ] {
            let response = ApiError::rate_limited("slow down", wait).into_response();
            assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
            assert_eq!(
                response.headers().get(header::RETRY_AFTER).unwrap(),
                shown,
                "{wait:?}"
            );
        }
    }

    #[test]
    fn a_tenant_past_its_pool_share_gets_a_503_that_says_so_with_retry_after() {
        let e = ApiError::from(DbError::TenantBusy("tenant t has 4 transactions".into()));
        assert_eq!(e.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(e.problem().detail.contains("this tenant's requests"));
        let response = e.into_response();
        assert!(response.headers().contains_key(header::RETRY_AFTER));
    }

    #[test]
    fn a_tenant_the_database_finds_suspended_is_the_403_tenant_suspended_of_every_route() {
        let e = ApiError::from(DbError::TenantSuspended("tenant t is suspended".into()));
        assert_eq!(e.status(), StatusCode::FORBIDDEN);
        assert_eq!(e.problem().code, ProblemCode::TenantSuspended);
    }

    #[test]
    fn internal_database_errors_do_not_leak_details() {
        let e = ApiError::from(DbError::Internal(
            "relation secret_table does not exist".into(),
        ));
        assert_eq!(e.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!e.problem().detail.contains("secret_table"));
    }
}
