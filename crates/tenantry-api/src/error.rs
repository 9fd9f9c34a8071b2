//! Errors as `application/problem+json` (RFC 9457): one type for every handler, extractor and fallback, with a stable `code` per kind. The codes are listed once, in [`CODES`].

use axum::{
    extract::rejection::{JsonRejection, PathRejection, QueryRejection},
    http::{header, StatusCode},
    response::{IntoResponse, Response},
};
use serde::Serialize;
use tenantry_db::DbError;
use utoipa::ToSchema;

/// Every problem code the API returns, with its HTTP status and title. Codes are
/// stable: a retired code is never reused for another meaning.
pub const CODES: &[(&str, u16, &str)] = &[
    (
        "invalid_json",
        400,
        "Request body is not valid JSON for this route",
    ),
    ("invalid_path", 400, "A path parameter is invalid"),
    ("invalid_query", 400, "A query parameter is invalid"),
    ("invalid_cursor", 400, "The pagination cursor is invalid"),
    ("unauthorized", 401, "Missing or invalid credentials"),
    (
        "permission_denied",
        403,
        "The credential lacks the permission this route needs",
    ),
    ("tenant_suspended", 403, "The tenant is suspended"),
    (
        "wrong_credential",
        403,
        "This route needs another kind of credential",
    ),
    ("forbidden", 403, "The operation is not allowed"),
    ("not_found", 404, "Not found"),
    ("route_not_found", 404, "No such route"),
    (
        "method_not_allowed",
        405,
        "Method not allowed on this route",
    ),
    (
        "conflict",
        409,
        "The request conflicts with the current state",
    ),
    (
        "quota_exceeded",
        409,
        "A quota of the tenant would be exceeded",
    ),
    ("body_too_large", 413, "Request body too large"),
    (
        "unsupported_media_type",
        415,
        "Request body must be application/json",
    ),
    (
        "validation_failed",
        422,
        "The request is well-formed but invalid",
    ),
    ("rate_limited", 429, "Too many requests for this tenant"),
    ("internal_error", 500, "Internal error"),
    (
        "service_unavailable",
        503,
        "The database is unavailable; retry later",
    ),
];

/// A problem details body.
#[derive(Debug, Clone, Serialize, ToSchema)]
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
    pub code: String,
    /// The request field at fault, when known (e.g. `name`, `settings.max_resources`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

/// The error every handler returns.
#[derive(Debug, Clone)]
pub struct ApiError {
    code: &'static str,
    detail: String,
    field: Option<String>,
}

impl ApiError {
    /// An error of a code from [`CODES`].
    pub fn new(code: &'static str, detail: impl Into<String>) -> Self {
        debug_assert!(
            CODES.iter().any(|(c, _, _)| *c == code),
            "unknown problem code {code}"
        );
        Self {
            code,
            detail: detail.into(),
            field: None,
        }
    }

    /// Names the field at fault.
    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    /// 401 with the one body every credential failure shares.
    pub fn unauthorized() -> Self {
        Self::new(
            "unauthorized",
            "a valid API key or admin token is required (Authorization: Bearer <token>)",
        )
    }

    /// 404 for objects, identical for missing and foreign ones.
    pub fn not_found(what: &str) -> Self {
        Self::new("not_found", format!("{what} not found"))
    }

    /// 422 naming a field.
    pub fn invalid(field: &str, detail: impl Into<String>) -> Self {
        Self::new("validation_failed", detail).with_field(field)
    }

    /// The code.
    pub fn code(&self) -> &'static str {
        self.code
    }

    /// The HTTP status of the code.
    pub fn status(&self) -> StatusCode {
        let status = CODES
            .iter()
            .find(|(c, _, _)| *c == self.code)
            .map(|(_, s, _)| *s)
            .unwrap_or(500);
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    /// The body.
    pub fn problem(&self) -> Problem {
        let status = self.status();
        let title = CODES
            .iter()
            .find(|(c, _, _)| *c == self.code)
            .map(|(_, _, t)| *t)
            .unwrap_or("Error");
        Problem {
            kind: format!("urn:tenantry:problem:{}", self.code),
            title: title.to_owned(),
            status: status.as_u16(),
            detail: self.detail.clone(),
            code: self.code.to_owned(),
            field: self.field.clone(),
        }
    }
}

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
                header::HeaderValue::from_static("Bearer"),
            );
        }
        response.extensions_mut().insert(self);
        response
    }
}

impl From<DbError> for ApiError {
    fn from(err: DbError) -> Self {
        match err {
            DbError::NotFound(m) => Self::new("not_found", m),
            DbError::Conflict(m) => Self::new("conflict", m),
            DbError::Forbidden(m) => Self::new("forbidden", m),
            DbError::Invalid { field, message } => {
                let e = Self::new("validation_failed", message);
                match field {
                    Some(f) => e.with_field(f),
                    None => e,
                }
            }
            DbError::Unavailable(m) => {
                tracing::warn!(error = %m, "database unavailable");
                Self::new(
                    "service_unavailable",
                    "the database is unavailable; retry later",
                )
            }
            DbError::Internal(m) => {
                tracing::error!(error = %m, "internal database error");
                Self::new("internal_error", "internal error")
            }
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        match rejection.status() {
            StatusCode::PAYLOAD_TOO_LARGE => {
                Self::new("body_too_large", "request body exceeds the size limit")
            }
            StatusCode::UNSUPPORTED_MEDIA_TYPE => Self::new(
                "unsupported_media_type",
                "send the body with Content-Type: application/json",
            ),
            _ => {
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
                Self::new("invalid_json", detail)
            }
        }
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        Self::new("invalid_path", rejection.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        Self::new("invalid_query", rejection.body_text())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_is_unique_and_maps_to_its_status() {
        let mut seen = std::collections::HashSet::new();
        for (code, status, _) in CODES {
            assert!(seen.insert(code), "duplicate code {code}");
            assert_eq!(ApiError::new(code, "x").status().as_u16(), *status);
        }
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

/// OpenAPI error responses shared by many routes, declared once: each listed
/// status answers a [`Problem`] as `application/problem+json`.
pub mod responses {
    use std::collections::BTreeMap;

    use utoipa::{
        openapi::{
            header::HeaderBuilder, schema::Type, ContentBuilder, ObjectBuilder, Ref, RefOr,
            Response, ResponseBuilder,
        },
        IntoResponses,
    };

    /// Problem responses of these statuses; a 401 also names its `WWW-Authenticate` header.
    fn problems(statuses: &[(u16, &str)]) -> BTreeMap<String, RefOr<Response>> {
        statuses
            .iter()
            .map(|(status, description)| {
                let mut response = ResponseBuilder::new().description(*description).content(
                    "application/problem+json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("Problem")))
                        .build(),
                );
                if *status == 401 {
                    response = response.header(
                        "WWW-Authenticate",
                        HeaderBuilder::new()
                            .schema(ObjectBuilder::new().schema_type(Type::String))
                            .description(Some("`Bearer`"))
                            .build(),
                    );
                }
                (status.to_string(), RefOr::T(response.build()))
            })
            .collect()
    }

    const UNAVAILABLE: (u16, &str) = (503, "The database is unavailable; retry later");

    /// 401, 403 and 429 of every tenant-key route, and 503 (the key is checked in the database).
    pub struct TenantAuth;
    impl IntoResponses for TenantAuth {
        fn responses() -> BTreeMap<String, RefOr<Response>> {
            problems(&[
                (
                    401,
                    "Missing, unknown, revoked or expired key (one body for all)",
                ),
                (
                    403,
                    "Permission denied, tenant suspended, or admin token on a tenant route",
                ),
                (429, "Tenant rate limit exceeded"),
                UNAVAILABLE,
            ])
        }
    }

    /// 401 and 403 of every admin route, and 503 (every admin route uses the database).
    pub struct AdminAuth;
    impl IntoResponses for AdminAuth {
        fn responses() -> BTreeMap<String, RefOr<Response>> {
            problems(&[
                (401, "Missing or wrong admin token"),
                (403, "Tenant key on an admin route"),
                UNAVAILABLE,
            ])
        }
    }

    /// 401, 403, 429 and 503 of a route that takes the admin token or a tenant key.
    pub struct AnyAuth;
    impl IntoResponses for AnyAuth {
        fn responses() -> BTreeMap<String, RefOr<Response>> {
            problems(&[
                (401, "Missing or invalid token or key (one body for all)"),
                (
                    403,
                    "Permission denied, tenant suspended, or not allowed for a tenant key",
                ),
                (429, "Tenant rate limit exceeded (tenant key)"),
                UNAVAILABLE,
            ])
        }
    }

    /// 400, 413, 415 and 422 of every route with a JSON body.
    pub struct JsonBody;
    impl IntoResponses for JsonBody {
        fn responses() -> BTreeMap<String, RefOr<Response>> {
            problems(&[
                (
                    400,
                    "Malformed JSON, unknown field, or invalid path parameter",
                ),
                (413, "Body over the size limit"),
                (415, "Body is not application/json"),
                (422, "Invalid value; `field` names it"),
            ])
        }
    }

    /// 400 and 422 of routes with path or query parameters.
    pub struct Params;
    impl IntoResponses for Params {
        fn responses() -> BTreeMap<String, RefOr<Response>> {
            problems(&[
                (400, "Invalid path or query parameter, or cursor"),
                (422, "Invalid parameter value; `field` names it"),
            ])
        }
    }

    /// 404 of routes that address one object (missing and foreign look the same).
    pub struct NotFound;
    impl IntoResponses for NotFound {
        fn responses() -> BTreeMap<String, RefOr<Response>> {
            problems(&[(404, "Not found (also for another tenant's object)")])
        }
    }
}
