//! The API's errors: the problem+json type and its codes come from `tenantry_axum::error` (one copy for the server and for applications built on it); this module adds the OpenAPI responses routes declare.

pub use tenantry_axum::error::{ApiError, Problem, ProblemCode};

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

    /// Problem responses of these statuses; a 401 also names its `WWW-Authenticate`
    /// header (every 429 and 503 gets its `Retry-After` from `openapi::RetryAfter`).
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
                let header = |description: &str| {
                    HeaderBuilder::new()
                        .schema(ObjectBuilder::new().schema_type(Type::String))
                        .description(Some(description))
                        .build()
                };
                if *status == 401 {
                    response = response.header("WWW-Authenticate", header("`Bearer`"));
                }
                (status.to_string(), RefOr::T(response.build()))
            })
            .collect()
    }

    const UNAVAILABLE: (u16, &str) = (
        503,
        "The database, or for a person's token the identity provider's keys, is unavailable; retry later",
    );

    /// 401, 403 and 429 of every tenant-key route, and 503 (the key is checked in the database).
    pub struct TenantAuth;
    impl IntoResponses for TenantAuth {
        fn responses() -> BTreeMap<String, RefOr<Response>> {
            problems(&[
                (
                    401,
                    "Missing, unknown, revoked or expired key, or a refused person's token (one body for all)",
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

    /// 401, 403 and 503 of the routes of a signed-in person that name no
    /// tenant (`/v1/me/...`, accepting an invitation): a person's token only.
    pub struct PersonAuth;
    impl IntoResponses for PersonAuth {
        fn responses() -> BTreeMap<String, RefOr<Response>> {
            problems(&[
                (
                    401,
                    "Missing, refused or expired person's token (one body for all)",
                ),
                (
                    403,
                    "Not a person's token: an API key, the admin token or an impersonation token (`wrong_credential`); or, creating a tenant, people may not create tenants here",
                ),
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
                (403, "A tenant's key or a person's token on an admin route"),
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

    /// 401, 403 and 503 of `/metrics`, which takes the admin token or the
    /// metrics token (or nothing, where the operator made it public).
    pub struct MetricsAuth;
    impl IntoResponses for MetricsAuth {
        fn responses() -> BTreeMap<String, RefOr<Response>> {
            problems(&[
                (
                    401,
                    "Missing or wrong token (no Authorization header is accepted only where metrics_public is set)",
                ),
                (403, "A tenant's key or a person's token"),
                UNAVAILABLE,
            ])
        }
    }

    /// 400, 408, 413, 415 and 422 of every route with a JSON body.
    pub struct JsonBody;
    impl IntoResponses for JsonBody {
        fn responses() -> BTreeMap<String, RefOr<Response>> {
            problems(&[
                (
                    400,
                    "Malformed JSON, unknown field, a value of the wrong type (`null` for a field that has none included), or invalid path parameter",
                ),
                (408, "The body did not arrive within `http_body_timeout_ms` of the headers (`body_timeout`); the connection closes"),
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
