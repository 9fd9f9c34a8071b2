//! The OpenAPI 3.1 description, generated from the handlers' annotations, and the router that carries both.

use utoipa::{
    openapi::{
        header::HeaderBuilder,
        path::{Operation, ParameterBuilder, ParameterIn},
        schema::{ObjectBuilder, Schema, Type},
        security::{HttpAuthScheme, HttpBuilder, SecurityScheme},
        ContentBuilder, Ref, RefOr, Required, ResponseBuilder,
    },
    Modify, OpenApi,
};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{error::ProblemCode, routes, state::AppState};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "tenantry",
        description = "Multi-tenancy for PostgreSQL that holds even when application code is wrong.\n\n\
Authenticate with `Authorization: Bearer <token>`: a tenant API key (`tk_…`) or a person's token from the identity provider (a JWT, with `X-Tenant-Id: <tenant>` naming the tenant they act in) for tenant routes, the admin token for admin routes."
    ),
    // UsageRanking is a query parameter's type (`/v1/usage/top?by=`): named
    // there by reference, so it must be among the schemas.
    components(schemas(crate::error::Problem, tenantry_db::UsageRanking)),
    // Relative: the API is where this document is served from.
    servers((url = "/", description = "This server")),
    modifiers(&BearerAuth, &ProblemCodes),
    tags(
        (name = "tenants", description = "Tenant administration (admin token); POST also creates children with a tenant key"),
        (name = "tenant", description = "The caller's tenant"),
        (name = "resources", description = "Resources and sharing"),
        (name = "access", description = "Members, roles, permissions"),
        (name = "people", description = "People signed in with the identity provider: their tenants, invitations"),
        (name = "keys", description = "API keys"),
        (name = "audit", description = "Audit log"),
        (name = "usage", description = "Usage metrics"),
        (name = "system", description = "Health and metrics"),
    )
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        // One scheme per credential, not one `bearer` for all: a client
        // generated from the document then holds each token apart and its
        // types say which routes take which (found by a review generating
        // TypeScript and Python clients: with one scheme an admin route and a
        // tenant route looked alike, and a tenant key on an admin route was
        // seen only at run time, as 403).
        components.add_security_scheme(
            "apiKey",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "A tenant's API key (tk_…), or an impersonation token (timp_…: a support session \
                         acting as a member), on the tenant routes",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "adminToken",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "The operator's admin token (TENANTRY_ADMIN_TOKEN, or the one `tenantry serve` \
                         generated into its data directory), on the operator's routes",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "metricsToken",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "The scraper's token (TENANTRY_METRICS_TOKEN): reads /metrics and nothing else",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "person",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "A person's token from the configured identity provider (RS256/ES256 via JWKS, or HS256). \
                         On tenant routes the request names its tenant with the X-Tenant-Id header (or the token's \
                         tenant claim) and the person must be a member of it; otherwise the answer is the one for a \
                         tenant that does not exist.",
                    ))
                    .build(),
            ),
        );
    }
}

/// Appends the problem codes, generated from [`ProblemCode`], to the API description.
struct ProblemCodes;

impl Modify for ProblemCodes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let description = openapi.info.description.get_or_insert_with(String::new);
        description
            .push_str("\n\nEvery error is `application/problem+json` with a stable `code`:\n\n");
        description.push_str(&ProblemCode::markdown_list());
        description.push_str(
            "\nCodes may be added: a client must treat a code it does not know by the \
             problem's HTTP status (`status`, the same as the response's).\n",
        );
    }
}

/// The `Idempotency-Key` header on every write a tenant credential
/// or the admin token may make (POST, PUT, PATCH, DELETE offering `apiKey`
/// or `adminToken`) and on a person's creation of a tenant,
/// with the answers it adds: 400 for a malformed key, 409 while the first
/// request with the key is running,
/// 422 for a key reused with another request; a replay is marked
/// `Idempotent-Replayed: true`.
struct IdempotencyKeys;

/// Every operation of the document, with whether it writes (POST, PUT,
/// PATCH, DELETE).
fn operations(
    openapi: &mut utoipa::openapi::OpenApi,
) -> impl Iterator<Item = (bool, &mut Operation)> {
    openapi.paths.paths.values_mut().flat_map(|item| {
        [
            (false, item.get.as_mut()),
            (false, item.head.as_mut()),
            (true, item.post.as_mut()),
            (true, item.put.as_mut()),
            (true, item.patch.as_mut()),
            (true, item.delete.as_mut()),
        ]
        .into_iter()
        .filter_map(|(writes, operation)| operation.map(|o| (writes, o)))
    })
}

impl Modify for IdempotencyKeys {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for (writes, operation) in operations(openapi) {
            if writes && takes_idempotency_key(operation) {
                document_idempotency_key(operation);
            }
        }
    }
}

/// Whether the write takes an `Idempotency-Key`: every one a tenant key or
/// the admin token may call (its security offers `apiKey` or `adminToken`), except the tier
/// move, whose work spans many transactions (it refuses a key with 400),
/// and a person's creation of a tenant of their own (the key in the
/// person's namespace). Accepting an invitation (`person` alone, no tenant
/// yet) is single-use by its token already.
fn takes_idempotency_key(operation: &Operation) -> bool {
    let id = operation.operation_id.as_deref();
    ((offers(operation, "apiKey") || offers(operation, "adminToken")) && id != Some("move_tenant"))
        || id == Some("create_my_tenant")
}

/// Whether the operation declares a query parameter.
fn takes_query(operation: &Operation) -> bool {
    operation
        .parameters
        .iter()
        .flatten()
        .any(|p| matches!(p.parameter_in, ParameterIn::Query))
}

/// The operations (method, path template) that take a credential and declare
/// no query parameter: a request to one of them with a query is refused
/// (`invalid_query`), as the
/// routes with parameters refuse an unknown one (an HTTP review: `?zzz=1` was
/// 400 on a listing and ignored on a point read, so a newer client's
/// parameter failed on some routes only).
pub fn operations_without_query(
    openapi: &utoipa::openapi::OpenApi,
) -> std::collections::HashSet<(axum::http::Method, String)> {
    routes_where(openapi, |operation| {
        !takes_query(operation) && !is_public(operation)
    })
}

/// The operations (method, path template) that take no credential (their
/// security is empty, or offers an empty requirement): a precondition that
/// cannot hold is answered there at once, elsewhere after the credential.
pub fn public_operations(
    openapi: &utoipa::openapi::OpenApi,
) -> std::collections::HashSet<(axum::http::Method, String)> {
    routes_where(openapi, is_public)
}

/// Whether the operation takes no credential: no security, an empty list,
/// or an empty requirement among them.
fn is_public(operation: &Operation) -> bool {
    serde_json::to_value(&operation.security)
        .unwrap_or_default()
        .as_array()
        .is_none_or(|all| {
            all.is_empty()
                || all
                    .iter()
                    .any(|s| s.as_object().is_some_and(|o| o.is_empty()))
        })
}

/// The (method, path template) of every operation for which `holds`.
fn routes_where(
    openapi: &utoipa::openapi::OpenApi,
    holds: impl Fn(&Operation) -> bool,
) -> std::collections::HashSet<(axum::http::Method, String)> {
    let mut routes = std::collections::HashSet::new();
    for (path, item) in &openapi.paths.paths {
        for (method, operation) in [
            (axum::http::Method::GET, item.get.as_ref()),
            (axum::http::Method::POST, item.post.as_ref()),
            (axum::http::Method::PUT, item.put.as_ref()),
            (axum::http::Method::PATCH, item.patch.as_ref()),
            (axum::http::Method::DELETE, item.delete.as_ref()),
        ] {
            if operation.is_some_and(&holds) {
                routes.insert((method, path.clone()));
            }
        }
    }
    routes
}

/// Whether one of the operation's security requirements is `scheme`.
fn offers(operation: &Operation, scheme: &str) -> bool {
    serde_json::to_value(&operation.security)
        .unwrap_or_default()
        .as_array()
        .is_some_and(|all| all.iter().any(|s| s.get(scheme).is_some()))
}

fn document_idempotency_key(operation: &mut Operation) {
    let key = ParameterBuilder::new()
        .name("Idempotency-Key")
        .parameter_in(ParameterIn::Header)
        .required(Required::False)
        .description(Some(
            "Makes a retry safe: the first response to this key (status and body) is stored in \
             the write's own transaction and, for 24 hours, a request with the same key, method, \
             path and body is answered with it (`Idempotent-Replayed: true`) without writing \
             again. 1 to 255 visible ASCII characters, kept per caller: per tenant for a tenant \
             key or a member, in the operator's own namespace for the admin token, in the \
             person's own for a signed-in person's creation of a tenant. Errors are not stored. \
             A secret shown once (`key`, `token`) is blanked (`\"\"`) in a replay. A stored \
             answer that named a tenant since purged is replayed as `410` without a body.",
        ))
        .schema(Some(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .min_length(Some(1))
                .max_length(Some(255))
                .pattern(Some("^[!-~]+$")),
        ))
        .build();
    operation.parameters.get_or_insert_with(Vec::new).push(key);
    for (status, description) in [
        ("400", "Malformed request or Idempotency-Key (`invalid_header`)"),
        (
            "409",
            "The first request with this Idempotency-Key is still running (`conflict`, field `Idempotency-Key`)",
        ),
        (
            "422",
            "The Idempotency-Key was used for another request in the last 24 hours (`validation_failed`, field `Idempotency-Key`)",
        ),
    ] {
        declare_problem(operation, status, description);
    }
    // The replay of an answer that named a tenant purged since: no body.
    operation
        .responses
        .responses
        .entry("410".to_owned())
        .or_insert_with(|| {
            RefOr::T(
                ResponseBuilder::new()
                    .description(
                        "A retry under this Idempotency-Key whose first answer named a tenant \
                         purged since: replayed without a body (`Idempotent-Replayed: true`)",
                    )
                    .header(
                        "Idempotent-Replayed",
                        header(
                            Type::String,
                            "`true`: the replay of the first request's answer",
                        ),
                    )
                    .build(),
            )
        });
    if let Some(RefOr::T(response)) = operation.responses.responses.get_mut("409") {
        response.headers.insert(
            "Retry-After".to_owned(),
            header(
                Type::Integer,
                "With field `Idempotency-Key` (the first request with the key still \
                 running): seconds to wait before sending the request again",
            ),
        );
    }
    for (status, response) in operation.responses.responses.iter_mut() {
        if let (true, RefOr::T(response)) = (status.starts_with('2'), response) {
            response.headers.insert(
                "Idempotent-Replayed".to_owned(),
                header(
                    Type::String,
                    "`true` when this is the stored response of an earlier request \
                     with the same Idempotency-Key",
                ),
            );
        }
    }
}

/// Every route with its OpenAPI operation. Writes read the `Idempotency-Key`
/// header ([`tenantry_axum::idempotency::middleware`]).
pub fn api_router() -> OpenApiRouter<AppState> {
    let mut router = api_routes().route_layer(axum::middleware::from_fn(
        tenantry_axum::idempotency::middleware,
    ));
    // Once the routes are in: the derive's modifiers run before they are.
    IdempotencyKeys.modify(router.get_openapi_mut());
    TenantRoutes.modify(router.get_openapi_mut());
    RetryAfter.modify(router.get_openapi_mut());
    PageItemsByReference.modify(router.get_openapi_mut());
    OptionalBodiesByReference.modify(router.get_openapi_mut());
    InternalErrors.modify(router.get_openapi_mut());
    FreeFormObjects.modify(router.get_openapi_mut());
    Patterns.modify(router.get_openapi_mut());
    OpenProblemCodes.modify(router.get_openapi_mut());
    EveryResponseDescribed.modify(router.get_openapi_mut());
    ShortSummaries.modify(router.get_openapi_mut());
    AnswersStateEveryField.modify(router.get_openapi_mut());
    // After it: the answers' settings keep their keys optional.
    SettingsOpenInAnswers.modify(router.get_openapi_mut());
    PublicProbes.modify(router.get_openapi_mut());
    // Last: every response the steps above declared carries it.
    RequestIds.modify(router.get_openapi_mut());
    router
}

/// A response a route declares with no words of its own (a status that is
/// all its route's problems) says what its status means, instead of an
/// empty description (Redocly then read the operation as having no 4XX
/// response; generated docstrings were empty: found by an outside review).
struct EveryResponseDescribed;

impl Modify for EveryResponseDescribed {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for (_, operation) in operations(openapi) {
            for (status, response) in operation.responses.responses.iter_mut() {
                if let RefOr::T(response) = response {
                    if response.description.trim().is_empty() {
                        let reason = status
                            .parse::<u16>()
                            .ok()
                            .and_then(|s| axum::http::StatusCode::from_u16(s).ok())
                            .and_then(|s| s.canonical_reason())
                            .unwrap_or("See the problem's code");
                        response.description =
                            if response.content.contains_key("application/problem+json") {
                                format!("{reason} (the problem's code says why)")
                            } else {
                                reason.to_owned()
                            };
                    }
                }
            }
        }
    }
}

/// A 500 `internal_error` problem on every operation: any of them can
/// answer one, and a client generated from the document parses only the
/// statuses it declares (it raises on the others instead of reading the
/// problem). Likewise 412 `precondition_failed`, for any request with
/// `If-Match` naming entity tags.
struct InternalErrors;

impl Modify for InternalErrors {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for (writes, operation) in operations(openapi) {
            declare_problem(operation, "500", "The server failed (`internal_error`)");
            declare_problem(
                operation,
                "412",
                if writes {
                    "`If-Match` named entity tags (tenantry sends no `ETag`, so none matches), `If-None-Match: *` (the target exists) or `If-Unmodified-Since` already past: nothing was done (`precondition_failed`)"
                } else {
                    "`If-Match` named entity tags: tenantry sends no `ETag`, so none matches and nothing was done (`precondition_failed`)"
                },
            );
            if operation.request_body.is_none() {
                declare_problem(
                    operation,
                    "413",
                    "A body declared (`Content-Length`) larger than `body_limit_bytes` (`body_too_large`), refused before it is read; this operation reads none",
                );
            }
            if !takes_query(operation) && !is_public(operation) {
                declare_problem(
                    operation,
                    "400",
                    "A query parameter: this operation takes none (`invalid_query`)",
                );
            }
        }
    }
}

/// `additionalProperties: true` on every object schema that names no
/// properties and says nothing of others (a payload, `metadata`): JSON
/// Schema already reads such an object as free-form, but openapi-typescript
/// types it `Record<string, never>`, to which a client can add nothing.
/// Everywhere in the document: component schemas, request and response
/// bodies, parameters and headers, at any depth.
struct FreeFormObjects;

impl Modify for FreeFormObjects {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::schema::{AdditionalProperties, Schema, SchemaType};
        each_schema(openapi, &mut |schema| {
            if let Schema::Object(object) = schema {
                let is_object = match &object.schema_type {
                    SchemaType::Type(kind) => *kind == Type::Object,
                    SchemaType::Array(kinds) => kinds.contains(&Type::Object),
                    SchemaType::AnyValue => false,
                };
                if is_object
                    && object.properties.is_empty()
                    && object.additional_properties.is_none()
                {
                    object.additional_properties =
                        Some(Box::new(AdditionalProperties::FreeForm(true)));
                }
            }
        });
    }
}

/// A free-text field's pattern named by its marker (`pattern = "{name}"`)
/// written out ([`crate::patterns`]): utoipa takes a literal only, and the
/// five patterns were copied into nine fields.
struct Patterns;

impl Modify for Patterns {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::schema::Schema;
        each_schema(openapi, &mut |schema| {
            if let Schema::Object(object) = schema {
                if let Some(full) = object.pattern.as_deref().and_then(crate::patterns::expand) {
                    object.pattern = Some(full);
                }
            }
        });
    }
}

/// Calls `f` on every schema of the document and each schema inside it: the
/// components' and every operation's parameters, bodies, responses and
/// response headers.
fn each_schema(
    openapi: &mut utoipa::openapi::OpenApi,
    f: &mut dyn FnMut(&mut utoipa::openapi::schema::Schema),
) {
    if let Some(components) = openapi.components.as_mut() {
        for schema in components.schemas.values_mut() {
            each_nested(schema, f);
        }
    }
    for (_, operation) in operations(openapi) {
        for parameter in operation.parameters.iter_mut().flatten() {
            if let Some(schema) = parameter.schema.as_mut() {
                each_nested(schema, f);
            }
        }
        if let Some(body) = operation.request_body.as_mut() {
            for content in body.content.values_mut() {
                if let Some(schema) = content.schema.as_mut() {
                    each_nested(schema, f);
                }
            }
        }
        for response in operation.responses.responses.values_mut() {
            if let RefOr::T(response) = response {
                for content in response.content.values_mut() {
                    if let Some(schema) = content.schema.as_mut() {
                        each_nested(schema, f);
                    }
                }
                for header in response.headers.values_mut() {
                    each_nested(&mut header.schema, f);
                }
            }
        }
    }
}

/// [`each_schema`] on one schema (not a reference) and everything inside it.
fn each_nested(
    schema: &mut RefOr<utoipa::openapi::schema::Schema>,
    f: &mut dyn FnMut(&mut utoipa::openapi::schema::Schema),
) {
    if let RefOr::T(schema) = schema {
        each_nested_schema(schema, f);
    }
}

fn each_nested_schema(
    schema: &mut utoipa::openapi::schema::Schema,
    f: &mut dyn FnMut(&mut utoipa::openapi::schema::Schema),
) {
    use utoipa::openapi::schema::{AdditionalProperties, ArrayItems, Schema};
    f(schema);
    match schema {
        Schema::Object(object) => {
            for property in object.properties.values_mut() {
                each_nested(property, f);
            }
            if let Some(AdditionalProperties::RefOr(inner)) =
                object.additional_properties.as_deref_mut()
            {
                each_nested(inner, f);
            }
        }
        Schema::Array(array) => {
            if let ArrayItems::RefOrSchema(items) = &mut array.items {
                each_nested(items, f);
            }
            for prefix in array.prefix_items.iter_mut() {
                each_nested_schema(prefix, f);
            }
        }
        Schema::OneOf(one) => one.items.iter_mut().for_each(|s| each_nested(s, f)),
        Schema::AllOf(all) => all.items.iter_mut().for_each(|s| each_nested(s, f)),
        Schema::AnyOf(any) => any.items.iter_mut().for_each(|s| each_nested(s, f)),
        _ => {}
    }
}

/// `Problem.code` as `anyOf: [ProblemCode, string]`: the codes known today
/// stay an enumeration clients can match on, and a code added later still
/// parses (openapi-python-client raises `ValueError` on a value outside a
/// closed enum). A client treats a code it does not know by the problem's
/// HTTP status.
struct OpenProblemCodes;

impl Modify for OpenProblemCodes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::schema::{AnyOfBuilder, Schema};
        let Some(RefOr::T(Schema::Object(problem))) = openapi
            .components
            .as_mut()
            .and_then(|c| c.schemas.get_mut("Problem"))
        else {
            return;
        };
        // The field's own description (its doc comment in `Problem`).
        let description = match problem.properties.get("code") {
            Some(RefOr::Ref(code)) => Some(code.description.clone()),
            Some(RefOr::T(Schema::Object(code))) => code.description.clone(),
            Some(RefOr::T(Schema::AllOf(code))) => code.description.clone(),
            _ => None,
        }
        .filter(|d| !d.is_empty());
        let open = AnyOfBuilder::new()
            .item(Ref::from_schema_name("ProblemCode"))
            .item(ObjectBuilder::new().schema_type(Type::String))
            .description(description)
            .build();
        problem
            .properties
            .insert("code".to_owned(), RefOr::T(Schema::AnyOf(open)));
    }
}

/// Declares that `operation` answers `status` with a problem for the reason
/// `description`; a status it declares already for reasons of its own gets
/// this one added to its description.
fn declare_problem(operation: &mut Operation, status: &str, description: &str) {
    match operation.responses.responses.get_mut(status) {
        Some(RefOr::T(existing)) if existing.description.trim().is_empty() => {
            existing.description = description.to_owned();
        }
        Some(RefOr::T(existing)) if !existing.description.contains(description) => {
            existing.description = format!("{}; or: {description}", existing.description);
        }
        Some(_) => {}
        None => {
            operation.responses.responses.insert(
                status.to_owned(),
                RefOr::T(
                    ResponseBuilder::new()
                        .description(description)
                        .content(
                            "application/problem+json",
                            ContentBuilder::new()
                                .schema(Some(Ref::from_schema_name("Problem")))
                                .build(),
                        )
                        .build(),
                ),
            );
        }
    }
}

/// What every tenant route (one a key and a person's token may call) takes
/// and can answer whatever it does: the `X-Tenant-Id` header, so that a
/// client generated from this document can name the tenant a person acts
/// in; 422 for an `X-Tenant-Id` that is missing (a person's token) or names
/// another tenant than a key's, 400 for one that is not a UUID or is sent
/// more than once (found by an outside review: the document said 422), 404
/// for a person who is not a member of the tenant named (exactly like a
/// tenant that does not exist).
struct TenantRoutes;

/// A UUID in its hyphenated form, as a JSON Schema pattern.
const UUID_PATTERN: &str =
    "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$";

fn document_tenant_header(operation: &mut Operation) {
    let header = ParameterBuilder::new()
        .name("X-Tenant-Id")
        .parameter_in(ParameterIn::Header)
        .required(Required::False)
        .description(Some(
            "The tenant this request acts in (its id, a UUID). With a person's token: required, unless the token \
             carries the configured tenant claim; the person must be a member of it. With a \
             tenant API key: optional, and when sent it must name the key's own tenant. The \
             admin token does not act in a tenant through it: routes that need a tenant refuse \
             that token (403 wrong_credential), and those that take it name the tenant in their \
             own tenant_id parameter or field.",
        ))
        // A string, not `format: uuid`: openapi-python-client then types the
        // parameter `UUID` and hands it to httpx unconverted, which refuses
        // it (header values must be str). A malformed id is answered 422;
        // the pattern says which strings are ids, so that a generator of
        // valid requests (schemathesis) sends ids (found by an outside
        // review: every tenant route "rejected a valid request").
        .schema(Some(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some(UUID_PATTERN)),
        ))
        .build();
    operation
        .parameters
        .get_or_insert_with(Vec::new)
        .push(header);
}

impl Modify for TenantRoutes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for (_, operation) in operations(openapi) {
            if offers(operation, "apiKey") && offers(operation, "person") {
                document_tenant_header(operation);
                declare_problem(
                    operation,
                    "404",
                    "A person's token names a tenant they are not a member of, or one that does not exist (`not_found`)",
                );
                declare_problem(
                    operation,
                    "422",
                    "`X-Tenant-Id` is missing with a person's token, or names another tenant than a key's (`validation_failed`, field `X-Tenant-Id`)",
                );
                declare_problem(
                    operation,
                    "400",
                    "`X-Tenant-Id` is not a UUID, or is sent more than once (`invalid_header`, field `X-Tenant-Id`)",
                );
            }
        }
    }
}

/// A page's items as a reference to their schema (`Page_Resource.items`:
/// `$ref: Resource`), not a copy of it: utoipa writes a generic's type
/// parameter inline (juhaku/utoipa#1586), and client generators then make a
/// second type for every item (`PageResourceItemsItem` beside `Resource`).
struct PageItemsByReference;

impl Modify for PageItemsByReference {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::schema::{ArrayItems, Schema};
        let Some(components) = openapi.components.as_mut() else {
            return;
        };
        let names: Vec<String> = components.schemas.keys().cloned().collect();
        for (name, schema) in components.schemas.iter_mut() {
            let Some(item) = name.strip_prefix("Page_") else {
                continue;
            };
            if !names.iter().any(|n| n == item) {
                continue;
            }
            if let RefOr::T(Schema::Object(page)) = schema {
                if let Some(RefOr::T(Schema::Array(items))) = page.properties.get_mut("items") {
                    items.items =
                        ArrayItems::RefOrSchema(Box::new(RefOr::Ref(Ref::from_schema_name(item))));
                }
            }
        }
    }
}

/// An optional request body (`request_body(content = Option<RotateBody>)`)
/// as a plain reference to its schema in a body that is not required, not
/// `oneOf: [null, RotateBody]`: the absent body is what `required: false`
/// says, and client generators turn the `null` arm into a value they then
/// fail to serialize (openapi-python-client's `Unset`).
struct OptionalBodiesByReference;

impl Modify for OptionalBodiesByReference {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{schema::Schema, Required};
        for (_, operation) in operations(openapi) {
            let Some(body) = operation.request_body.as_mut() else {
                continue;
            };
            let mut optional = false;
            for content in body.content.values_mut() {
                let Some(RefOr::T(Schema::OneOf(one))) = &content.schema else {
                    continue;
                };
                let refs: Vec<&RefOr<Schema>> = one
                    .items
                    .iter()
                    .filter(|i| matches!(i, RefOr::Ref(_)))
                    .collect();
                if one.items.len() == 2 && refs.len() == 1 {
                    let reference = refs[0].clone();
                    content.schema = Some(reference);
                    optional = true;
                }
            }
            if optional {
                body.required = Some(Required::False);
            }
        }
    }
}

/// `Retry-After` on every 429 and 503 the routes declare, wherever they
/// declare it (docs/security.md: every 429 and 503 carries it): clients and
/// fuzzers learn from the description when to send again.
struct RetryAfter;

impl Modify for RetryAfter {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for (_, operation) in operations(openapi) {
            for (status, response) in operation.responses.responses.iter_mut() {
                let description = match status.as_str() {
                    "429" => "Seconds until the rate limit lets a request through",
                    "503" => {
                        "Seconds to wait before sending the request again (nothing was written)"
                    }
                    _ => continue,
                };
                if let RefOr::T(response) = response {
                    response
                        .headers
                        .entry("Retry-After".to_owned())
                        .or_insert_with(|| header(Type::Integer, description));
                }
            }
        }
    }
}

/// Every field of a schema that only answers carry is `required`: serde
/// writes an absent value as `null` (nullable in the schema), never leaves
/// the field out, but utoipa listed `Option` fields as optional, so that
/// generated clients typed `next_cursor`, `parent_id` and the like
/// `string | null | undefined` (found by the review generating clients).
/// Not the schemas of request bodies and parameters, whose optional fields
/// may be left out, nor `Problem`, whose `field` and `request_id` are left
/// out when there is none.
struct AnswersStateEveryField;

impl Modify for AnswersStateEveryField {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let document = serde_json::to_value(&*openapi).unwrap_or_default();
        let schemas = &document["components"]["schemas"];
        // The schemas a request names, and every schema they name.
        let mut asked = std::collections::BTreeSet::new();
        let mut pending = Vec::new();
        for item in document["paths"]
            .as_object()
            .into_iter()
            .flat_map(|p| p.values())
        {
            for operation in item.as_object().into_iter().flat_map(|o| o.values()) {
                collect_refs(&operation["requestBody"], &mut pending);
                collect_refs(&operation["parameters"], &mut pending);
            }
        }
        while let Some(reference) = pending.pop() {
            let Some(name) = reference.strip_prefix("#/components/schemas/") else {
                continue;
            };
            if asked.insert(name.to_owned()) {
                collect_refs(&schemas[name], &mut pending);
            }
        }
        let Some(components) = openapi.components.as_mut() else {
            return;
        };
        for (name, schema) in components.schemas.iter_mut() {
            if asked.contains(name) || name == "Problem" {
                continue;
            }
            if let RefOr::T(Schema::Object(object)) = schema {
                for property in object.properties.keys() {
                    if !object.required.contains(property) {
                        object.required.push(property.clone());
                    }
                }
            }
        }
    }
}

/// A tenant's settings in an answer (`Tenant.settings`) are
/// `TenantSettingsView`: `TenantSettings` without `additionalProperties:
/// false`, which a request keeps (a misspelt key is refused) but an answer
/// must not declare: a client generated with it (pydantic's
/// `extra='forbid'`) would fail on every tenant once a release adds a setting
/// (found by an outside review generating clients).
struct SettingsOpenInAnswers;

impl Modify for SettingsOpenInAnswers {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let Some(components) = openapi.components.as_mut() else {
            return;
        };
        let Some(RefOr::T(Schema::Object(settings))) = components.schemas.get("TenantSettings")
        else {
            return;
        };
        let mut view = settings.clone();
        view.additional_properties = None;
        view.description = Some(
            "A tenant's settings as answers show them: the keys of TenantSettings that are set. \
             A later release may add keys: keep the ones you do not know."
                .into(),
        );
        components
            .schemas
            .insert("TenantSettingsView".into(), RefOr::T(Schema::Object(view)));
        if let Some(RefOr::T(Schema::Object(tenant))) = components.schemas.get_mut("Tenant") {
            if let Some(settings) = tenant.properties.get_mut("settings") {
                *settings =
                    RefOr::Ref(utoipa::openapi::Ref::from_schema_name("TenantSettingsView"));
            }
        }
    }
}

/// The probes (`/healthz`, `/readyz`) take no credential and say so with an
/// empty list of requirements (`security: []`): with no `security` at all
/// Redocly's default rules failed the document (an outside-tools review), and
/// `[{}]` made openapi-python-client demand an authenticated client for them.
struct PublicProbes;

impl Modify for PublicProbes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for path in ["/healthz", "/readyz"] {
            if let Some(get) = get_operation(openapi, path) {
                get.security = Some(Vec::new());
            }
        }
    }
}

/// Where the operator set `metrics_public`: the document offers `/metrics`
/// without a credential too (an empty requirement beside the tokens), as
/// that server answers it.
pub fn offer_metrics_without_credential(openapi: &mut utoipa::openapi::OpenApi) {
    if let Some(get) = get_operation(openapi, "/metrics") {
        get.security
            .get_or_insert_with(Vec::new)
            .push(utoipa::openapi::security::SecurityRequirement::default());
    }
}

/// The GET operation of `path`, if the document has one.
fn get_operation<'a>(
    openapi: &'a mut utoipa::openapi::OpenApi,
    path: &str,
) -> Option<&'a mut Operation> {
    openapi
        .paths
        .paths
        .get_mut(path)
        .and_then(|item| item.get.as_mut())
}

/// A response header of one JSON type, described.
fn header(kind: Type, description: &str) -> utoipa::openapi::header::Header {
    HeaderBuilder::new()
        .schema(ObjectBuilder::new().schema_type(kind))
        .description(Some(description))
        .build()
}

/// Every `$ref` inside `value`.
fn collect_refs(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("$ref", serde_json::Value::String(r)) => out.push(r.clone()),
                    _ => collect_refs(v, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| collect_refs(v, out)),
        _ => {}
    }
}

/// An operation's summary is the first sentence of its route's doc comment,
/// the rest its description: utoipa made the whole first paragraph the
/// summary, up to 500 characters that Swagger UI and generated docstrings
/// showed as one line, and no operation had a description (found by the
/// review generating clients).
struct ShortSummaries;

impl Modify for ShortSummaries {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for (_, operation) in operations(openapi) {
            let Some(summary) = operation.summary.take() else {
                continue;
            };
            let text = summary.split_whitespace().collect::<Vec<_>>().join(" ");
            let (first, rest) = first_sentence(&text);
            operation.summary = Some(first.to_owned());
            if !rest.is_empty() {
                let description = match operation.description.take() {
                    Some(more) if !more.is_empty() => format!("{rest}\n\n{more}"),
                    _ => rest.to_owned(),
                };
                operation.description = Some(description);
            }
        }
    }
}

/// The first sentence of `text` and what follows it: the first `. ` outside
/// backticks and parentheses that does not end an abbreviation (`e.g.`).
fn first_sentence(text: &str) -> (&str, &str) {
    let (mut code, mut depth) = (false, 0_i32);
    for (i, c) in text.char_indices() {
        match c {
            '`' => code = !code,
            '(' if !code => depth += 1,
            ')' if !code => depth -= 1,
            '.' if !code && depth == 0 && text[i + 1..].starts_with(' ') => {
                let before = &text[..i];
                if !(before.ends_with("e.g") || before.ends_with("i.e") || before.ends_with("etc"))
                {
                    return (&text[..=i], text[i + 1..].trim_start());
                }
            }
            _ => {}
        }
    }
    (text, "")
}

/// `X-Request-Id` on every response of every operation: the request's id
/// (the caller's own when it sent a well-formed one), which problem bodies
/// repeat as `request_id` and the logs and request log carry (an outside
/// review generating clients found it undeclared).
struct RequestIds;

impl Modify for RequestIds {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for (_, operation) in operations(openapi) {
            for response in operation.responses.responses.values_mut() {
                if let RefOr::T(response) = response {
                    response
                        .headers
                        .entry("X-Request-Id".to_owned())
                        .or_insert_with(|| {
                            header(
                                Type::String,
                                "The request's id: the one the request sent as X-Request-Id \
                                 (1 to 128 characters of A-Z a-z 0-9 . _ : -), else a UUID \
                                 the server made; quote it to the operator",
                            )
                        });
                }
            }
        }
    }
}

fn api_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(routes::system::healthz))
        .routes(routes!(routes::system::readyz))
        .routes(routes!(routes::system::metrics))
        .routes(routes!(
            routes::tenants::create_tenant,
            routes::tenants::list_tenants
        ))
        .routes(routes!(
            routes::tenants::get_tenant,
            routes::tenants::patch_tenant,
            routes::tenants::delete_tenant
        ))
        .routes(routes!(routes::tenants::suspend_tenant))
        .routes(routes!(routes::tenants::purge_tenant))
        .routes(routes!(
            routes::tenants::move_tenant,
            routes::tenants::abort_tenant_move
        ))
        .routes(routes!(routes::tenants::activate_tenant))
        .routes(routes!(
            routes::tenants::create_tenant_key,
            routes::tenants::list_tenant_keys
        ))
        .routes(routes!(routes::tenants::revoke_tenant_key))
        .routes(routes!(routes::tenants::rotate_tenant_key))
        .routes(routes!(routes::tenants::list_tenant_roles))
        .routes(routes!(routes::tenants::list_tenant_members))
        .routes(routes!(routes::tenants::tenant_tables))
        .routes(routes!(routes::usage::top))
        .routes(routes!(routes::tenants::tenant_usage))
        .routes(routes!(routes::stats::tenant_stats))
        .routes(routes!(routes::audit::admin_audit))
        .routes(routes!(routes::audit::operator_audit))
        .routes(routes!(routes::tenants::current_tenant))
        .routes(routes!(routes::tenants::children))
        .routes(routes!(routes::tenants::child))
        .routes(routes!(
            routes::resources::create_resource,
            routes::resources::list_resources
        ))
        .routes(routes!(
            routes::resources::get_resource,
            routes::resources::patch_resource,
            routes::resources::delete_resource
        ))
        .routes(routes!(
            routes::resources::share_resource,
            routes::resources::list_shares
        ))
        .routes(routes!(routes::resources::unshare_resource))
        .routes(routes!(routes::resources::list_outgoing_shares))
        .routes(routes!(
            routes::access::list_members,
            routes::access::add_member
        ))
        .routes(routes!(routes::access::assign_role))
        .routes(routes!(
            routes::access::list_roles,
            routes::access::create_role
        ))
        .routes(routes!(
            routes::access::grant_permission,
            routes::access::revoke_permission
        ))
        .routes(routes!(routes::access::list_permissions))
        .routes(routes!(routes::keys::list_keys, routes::keys::create_key))
        .routes(routes!(routes::keys::revoke_key))
        .routes(routes!(routes::keys::rotate_key))
        .routes(routes!(routes::audit::tenant_audit))
        .routes(routes!(routes::usage::metrics))
        .routes(routes!(routes::usage::resources))
        .routes(routes!(
            routes::people::my_tenants,
            routes::people::create_my_tenant
        ))
        .routes(routes!(routes::people::accept_invitation))
        .routes(routes!(
            routes::people::create_invitation,
            routes::people::list_invitations
        ))
        .routes(routes!(routes::people::revoke_invitation))
        .routes(routes!(routes::people::set_member_roles))
        .routes(routes!(routes::people::remove_member))
        .routes(routes!(routes::people::transfer_ownership))
        .routes(routes!(
            routes::people::start_impersonation,
            routes::people::list_impersonations
        ))
        .routes(routes!(routes::people::end_impersonation))
        .routes(routes!(routes::usage::keys))
        .routes(routes!(routes::usage::tables))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_write_documents_the_idempotency_key_but_the_tier_move_and_accepting_an_invitation() {
        let (_, openapi) = api_router().split_for_parts();
        let json = serde_json::to_value(&openapi).unwrap();
        let documents = |path: &str, method: &str| {
            let op = &json["paths"][path][method];
            assert!(op.is_object(), "{method} {path} missing");
            let header = op["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|p| p["name"] == "Idempotency-Key" && p["in"] == "header");
            if header {
                for status in ["409", "422"] {
                    assert!(
                        op["responses"][status].is_object(),
                        "{method} {path} {status}"
                    );
                }
            }
            header
        };
        for (path, method) in [
            ("/v1/resources", "post"),
            ("/v1/resources/{id}", "patch"),
            ("/v1/resources/{id}", "delete"),
            ("/v1/keys", "post"),
            ("/v1/roles/{role_id}/permissions/{permission}", "put"),
            ("/v1/tenants", "post"),
            ("/v1/tenants/{tenant_id}/suspend", "post"),
            ("/v1/tenants/{tenant_id}/keys", "post"),
            ("/v1/tenants/{tenant_id}", "delete"),
            ("/v1/tenants/{tenant_id}/purge", "post"),
            ("/v1/me/tenants", "post"),
        ] {
            assert!(documents(path, method), "{method} {path} lacks the header");
        }
        for (path, method) in [
            ("/v1/tenants/{tenant_id}/move", "post"),
            ("/v1/invitations/accept", "post"),
            ("/v1/resources", "get"),
        ] {
            assert!(
                !documents(path, method),
                "{method} {path} documents the header"
            );
        }
    }

    #[test]
    fn the_document_holds_what_client_generators_need_resolvable_refs_unique_ids_and_retry_after() {
        let (_, openapi) = api_router().split_for_parts();
        let json = serde_json::to_value(&openapi).unwrap();
        let schemas = json["components"]["schemas"].as_object().unwrap();
        let mut found = Vec::new();
        super::collect_refs(&json, &mut found);
        assert!(found.len() > 100, "{}", found.len());
        for r in &found {
            let name = r
                .strip_prefix("#/components/schemas/")
                .unwrap_or_else(|| panic!("a reference outside the schemas: {r}"));
            assert!(schemas.contains_key(name), "{r} names no schema");
        }
        let mut ids = std::collections::BTreeMap::new();
        // Summaries are one short sentence (the rest is the description).
        let mut long = Vec::new();
        for (path, item) in json["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                let Some(id) = op["operationId"].as_str() else {
                    panic!("{method} {path} has no operationId");
                };
                // Every route names the credentials it takes (an empty
                // requirement among them when one is optional); the two
                // probes, which take none, declare an empty list: `[{}]`
                // made openapi-python-client demand an authenticated client
                // for them, and none at all failed Redocly's rules.
                if ["healthz", "readyz"].contains(&id) {
                    assert_eq!(
                        op["security"],
                        serde_json::json!([]),
                        "{method} {path}: {op}"
                    );
                } else {
                    assert!(
                        op["security"].as_array().is_some_and(|s| !s.is_empty()),
                        "{method} {path} declares no security"
                    );
                }
                let summary = op["summary"].as_str().unwrap_or_default();
                if summary.is_empty() || summary.len() > 160 {
                    long.push(format!("{method} {path}: {summary}"));
                }
                // A generated client's method is named after it: one word
                // (`tables`, `keys`) says nothing beside the others.
                assert!(
                    id.contains('_') || ["healthz", "readyz", "metrics"].contains(&id),
                    "{method} {path}: operationId {id} is one bare word"
                );
                if let Some(other) = ids.insert(id.to_owned(), format!("{method} {path}")) {
                    panic!("operationId {id} twice: {other} and {method} {path}");
                }
                for (status, response) in op["responses"].as_object().unwrap() {
                    assert!(
                        response["headers"]["X-Request-Id"].is_object(),
                        "{method} {path} {status} lacks X-Request-Id"
                    );
                    if status == "429" || status == "503" {
                        assert!(
                            response["headers"]["Retry-After"].is_object(),
                            "{method} {path} {status} lacks Retry-After"
                        );
                    }
                }
                for p in op["parameters"].as_array().into_iter().flatten() {
                    let text = p["description"].as_str().unwrap_or_default();
                    assert!(
                        !text.contains("   "),
                        "{method} {path} {}: {text}",
                        p["name"]
                    );
                }
            }
        }
        assert!(
            long.is_empty(),
            "{} summaries empty or over 160 characters:\n{}",
            long.len(),
            long.join("\n")
        );
        // Answers name every field (null when absent); requests may leave
        // optional ones out.
        let required = |schema: &str| -> Vec<&str> {
            schemas[schema]["required"]
                .as_array()
                .map(|r| r.iter().filter_map(|v| v.as_str()).collect())
                .unwrap_or_default()
        };
        for (schema, field) in [
            ("Tenant", "parent_id"),
            ("Page_Resource", "next_cursor"),
            ("ApiKeyInfo", "expires_at"),
            ("Resource", "created_by"),
        ] {
            assert!(
                required(schema).contains(&field),
                "{schema}.{field}: {:?}",
                required(schema)
            );
        }
        assert!(!required("NewTenantBody").contains(&"parent_id"));
        assert!(!required("Problem").contains(&"field"));
        // Settings refuse unknown keys in a request, but an answer's may
        // gain keys in a later release: its schema stays open, keys optional.
        assert_eq!(
            schemas["TenantSettings"]["additionalProperties"],
            serde_json::json!(false)
        );
        assert_eq!(
            schemas["Tenant"]["properties"]["settings"]["$ref"],
            "#/components/schemas/TenantSettingsView"
        );
        assert!(schemas["TenantSettingsView"]["additionalProperties"].is_null());
        assert!(required("TenantSettingsView").is_empty());
        assert_eq!(
            schemas["TenantSettingsView"]["properties"],
            schemas["TenantSettings"]["properties"]
        );
        // Swagger UI's "Try it out" and generated docs start from an example
        // of the main bodies, each one the route accepts.
        fn accepted<T: serde::de::DeserializeOwned>(
            schemas: &serde_json::Map<String, serde_json::Value>,
            name: &str,
        ) {
            let example = schemas[name]["example"].clone();
            assert!(example.is_object(), "{name} has no example");
            serde_json::from_value::<T>(example.clone())
                .unwrap_or_else(|e| panic!("{name}'s example {example} is refused: {e}"));
        }
        accepted::<routes::tenants::NewTenantBody>(schemas, "NewTenantBody");
        accepted::<routes::tenants::TenantPatch>(schemas, "TenantPatch");
        accepted::<routes::resources::NewResourceBody>(schemas, "NewResourceBody");
        accepted::<routes::resources::ResourcePatch>(schemas, "ResourcePatch");
        accepted::<routes::resources::NewShareBody>(schemas, "NewShareBody");
        accepted::<routes::keys::NewKeyBody>(schemas, "NewKeyBody");
        accepted::<routes::access::NewRoleBody>(schemas, "NewRoleBody");
        accepted::<routes::access::NewMemberBody>(schemas, "NewMemberBody");
        accepted::<routes::people::NewInvitationBody>(schemas, "NewInvitationBody");
        // Values clients type as enumerations.
        for (schema, field) in [
            ("Invitation", "status"),
            ("MyTenant", "status"),
            ("TopTenant", "status"),
        ] {
            let property = &schemas[schema]["properties"][field];
            let listed = property["enum"].is_array()
                || property["$ref"].as_str() == Some("#/components/schemas/TenantStatus");
            assert!(listed, "{schema}.{field}: {property}");
        }
        assert_eq!(
            schemas["TenantSettings"]["properties"]["rate_limit_burst"]["format"],
            "int64"
        );
        // The counts' upper bound is int64's: a `maximum` of 2^63 - 1 would be
        // written as a float (9223372036854776000), which admits 2^63, a value
        // the server refuses (found by an outside review).
        for count in [
            "max_resources",
            "max_storage_bytes",
            "max_children",
            "max_api_keys",
        ] {
            let property = &schemas["TenantSettings"]["properties"][count];
            assert_eq!(property["format"], "int64", "{count}: {property}");
            assert!(property.get("maximum").is_none(), "{count}: {property}");
        }
        assert_eq!(json["servers"][0]["url"], "/");
        // A page refers to its items' schema instead of copying it.
        let pages: Vec<&String> = schemas.keys().filter(|k| k.starts_with("Page_")).collect();
        assert!(pages.len() >= 10, "{pages:?}");
        for page in pages {
            let item = page.trim_start_matches("Page_");
            assert_eq!(
                schemas[page]["properties"]["items"]["items"]["$ref"],
                format!("#/components/schemas/{item}"),
                "{page}"
            );
        }
    }

    #[test]
    fn the_description_lists_every_problem_code_and_the_problem_schema_enumerates_them() {
        let (_, openapi) = api_router().split_for_parts();
        let description = openapi.info.description.as_deref().unwrap_or_default();
        let json = serde_json::to_value(&openapi).unwrap();
        let schemas = &json["components"]["schemas"];
        let listed = schemas["ProblemCode"]["enum"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        for code in ProblemCode::ALL {
            let line = format!("- `{code}` ({})", code.status().as_u16());
            assert!(
                description.contains(&line),
                "{line} missing from the description"
            );
            assert!(
                listed.contains(&code.as_str().into()),
                "{code} missing from the schema"
            );
        }
        assert_eq!(listed.len(), ProblemCode::ALL.len());
        // `Problem.code` takes a code added later: the enumeration or any string.
        let code = &schemas["Problem"]["properties"]["code"];
        assert_eq!(
            code["anyOf"],
            serde_json::json!([
                { "$ref": "#/components/schemas/ProblemCode" },
                { "type": "string" },
            ]),
            "{code}"
        );
        assert!(
            code["description"]
                .as_str()
                .is_some_and(|d| d.contains("do not know by the HTTP status")),
            "{code}"
        );
        assert!(
            description.contains("a code it does not know by the problem's HTTP status"),
            "{description}"
        );
    }

    /// Every schema anywhere under `value` (an object with a `type`), with
    /// where it is.
    fn typed_schemas<'a>(
        value: &'a serde_json::Value,
        at: String,
        out: &mut Vec<(String, &'a serde_json::Value)>,
    ) {
        match value {
            serde_json::Value::Object(map) => {
                if map
                    .get("type")
                    .is_some_and(|t| t.is_string() || t.is_array())
                {
                    out.push((at.clone(), value));
                }
                for (k, v) in map {
                    typed_schemas(v, format!("{at}/{k}"), out);
                }
            }
            serde_json::Value::Array(items) => {
                for (i, v) in items.iter().enumerate() {
                    typed_schemas(v, format!("{at}/{i}"), out);
                }
            }
            _ => {}
        }
    }

    #[test]
    fn no_object_schema_in_the_document_is_closed_and_empty() {
        let (_, openapi) = api_router().split_for_parts();
        let json = serde_json::to_value(&openapi).unwrap();
        let mut schemas = Vec::new();
        typed_schemas(&json, String::new(), &mut schemas);
        let is_object = |t: &serde_json::Value| {
            t == "object"
                || t.as_array()
                    .is_some_and(|ts| ts.iter().any(|t| t == "object"))
        };
        let mut free_form = 0;
        for (at, schema) in schemas {
            if !is_object(&schema["type"]) {
                continue;
            }
            let named = schema["properties"]
                .as_object()
                .is_some_and(|p| !p.is_empty());
            if named {
                continue;
            }
            // openapi-typescript types an object with neither as `Record<string, never>`.
            assert!(
                schema.get("additionalProperties").is_some(),
                "{at}: {schema}"
            );
            free_form += 1;
        }
        // The resource payloads (new, patch) and the tenant's metadata at least.
        assert!(free_form >= 3, "{free_form}");
        let schemas = &json["components"]["schemas"];
        for data in [
            &schemas["NewResourceBody"]["properties"]["data"],
            &schemas["ResourcePatch"]["properties"]["data"],
            &schemas["TenantSettings"]["properties"]["metadata"],
        ] {
            assert_eq!(data["additionalProperties"], true, "{data}");
        }
    }

    /// Spectral's `oas` rules (`operation-description`) and generated
    /// clients' docs want more than the summary line: every operation says
    /// what it answers and when it refuses (an outside-tools review).
    #[test]
    fn every_operation_has_a_description_beyond_its_summary() {
        let (_, openapi) = api_router().split_for_parts();
        let json = serde_json::to_value(&openapi).unwrap();
        let mut bare = Vec::new();
        for (path, item) in json["paths"].as_object().unwrap() {
            for (method, operation) in item.as_object().unwrap() {
                let described = operation["description"]
                    .as_str()
                    .is_some_and(|d| d.split_whitespace().count() >= 5);
                if !described {
                    bare.push(format!("{method} {path}"));
                }
            }
        }
        assert!(
            bare.is_empty(),
            "operations without a description: {bare:?}"
        );
    }

    #[test]
    fn every_operation_declares_a_500_problem() {
        let (_, openapi) = api_router().split_for_parts();
        let json = serde_json::to_value(&openapi).unwrap();
        let mut count = 0;
        for (path, item) in json["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                let response = &op["responses"]["500"];
                assert_eq!(
                    response["content"]["application/problem+json"]["schema"]["$ref"],
                    "#/components/schemas/Problem",
                    "{method} {path}: {response}"
                );
                assert!(
                    response["description"]
                        .as_str()
                        .is_some_and(|d| d.contains("internal_error")),
                    "{method} {path}: {response}"
                );
                count += 1;
            }
        }
        assert!(count > 50, "{count}");
    }

    /// Whether a property's schema admits `null` (`type` with "null", or a
    /// `null` arm).
    fn nullable(property: &serde_json::Value) -> bool {
        let null = serde_json::Value::from("null");
        property["type"] == null
            || property["type"]
                .as_array()
                .is_some_and(|types| types.contains(&null))
            || ["oneOf", "anyOf"].iter().any(|arms| {
                property[*arms]
                    .as_array()
                    .is_some_and(|arms| arms.iter().any(nullable))
            })
    }

    #[test]
    fn patch_fields_that_refuse_null_are_not_typed_nullable() {
        let (_, openapi) = api_router().split_for_parts();
        let json = serde_json::to_value(&openapi).unwrap();
        let schemas = &json["components"]["schemas"];
        for (schema, field) in [
            ("ResourcePatch", "name"),
            ("ResourcePatch", "data"),
            ("TenantPatch", "name"),
            ("TenantPatch", "settings"),
            ("TenantPatch", "isolation"),
        ] {
            let property = &schemas[schema]["properties"][field];
            assert!(property.is_object(), "{schema}.{field} missing");
            assert!(!nullable(property), "{schema}.{field}: {property}");
        }
        // `null` makes the tenant a root.
        assert!(nullable(&schemas["TenantPatch"]["properties"]["parent_id"]));
        for schema in ["ResourcePatch", "TenantPatch"] {
            assert!(
                schemas[schema]["required"]
                    .as_array()
                    .is_none_or(|r| r.is_empty()),
                "{schema}: every field may be left out"
            );
        }
    }

    #[test]
    fn every_response_says_what_it_means() {
        let (_, openapi) = api_router().split_for_parts();
        let json = serde_json::to_value(&openapi).unwrap();
        for (path, item) in json["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                for (status, response) in op["responses"].as_object().unwrap() {
                    let d = response["description"].as_str().unwrap_or_default();
                    assert!(
                        !d.trim().is_empty() && !d.starts_with(';'),
                        "{method} {path} {status}: {d:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn tenant_routes_say_a_tenant_header_that_is_not_a_uuid_is_422() {
        let (_, openapi) = api_router().split_for_parts();
        let json = serde_json::to_value(&openapi).unwrap();
        let op = &json["paths"]["/v1/resources"]["get"];
        let header = op["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "X-Tenant-Id")
            .unwrap();
        // A string with a UUID's pattern (see `document_tenant_header`).
        assert_eq!(
            header["schema"],
            serde_json::json!({ "type": "string", "pattern": super::UUID_PATTERN })
        );
        let reason = op["responses"]["400"]["description"].as_str().unwrap();
        assert!(reason.contains("is not a UUID"), "{reason}");
        let reason = op["responses"]["422"]["description"].as_str().unwrap();
        assert!(!reason.contains("UUID"), "{reason}");
    }
}
