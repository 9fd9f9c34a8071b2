//! The OpenAPI 3.1 description, generated from the handlers' annotations, and the router that carries both.

use utoipa::{
    openapi::{
        header::HeaderBuilder,
        path::{Operation, ParameterBuilder, ParameterIn},
        schema::{ObjectBuilder, Type},
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
    components(schemas(crate::error::Problem)),
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
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("Tenant API key or admin token"))
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
    }
}

/// The `Idempotency-Key` header on every write a tenant credential
/// or the admin token may make (POST, PUT, PATCH, DELETE offering `bearer`),
/// with the answers it adds: 400 for a malformed key, 409 while the first
/// request with the key is running,
/// 422 for a key reused with another request; a replay is marked
/// `Idempotent-Replayed: true`.
struct IdempotencyKeys;

impl Modify for IdempotencyKeys {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for item in openapi.paths.paths.values_mut() {
            for operation in [
                item.post.as_mut(),
                item.put.as_mut(),
                item.patch.as_mut(),
                item.delete.as_mut(),
            ]
            .into_iter()
            .flatten()
            {
                if takes_idempotency_key(operation) {
                    document_idempotency_key(operation);
                }
            }
        }
    }
}

/// Whether the write takes an `Idempotency-Key`: every one a tenant key or
/// the admin token may call (its security offers `bearer`), except the tier
/// move, whose work spans many transactions (it refuses a key with 400).
/// Accepting an invitation (`person` alone, no tenant yet) is single-use by
/// its token already.
fn takes_idempotency_key(operation: &Operation) -> bool {
    let security = serde_json::to_value(&operation.security).unwrap_or_default();
    let offers_bearer = security
        .as_array()
        .is_some_and(|all| all.iter().any(|s| s.get("bearer").is_some()));
    offers_bearer && operation.operation_id.as_deref() != Some("move_tenant")
}

fn document_idempotency_key(operation: &mut Operation) {
    let key = ParameterBuilder::new()
        .name("Idempotency-Key")
        .parameter_in(ParameterIn::Header)
        .required(Required::False)
        .description(Some(
            "Makes a retry safe: the first response to this key (status and body) is stored in              the write's own transaction and, for 24 hours, a request with the same key, method,              path and body is answered with it (`Idempotent-Replayed: true`) without writing              again. 1 to 255 visible ASCII characters, kept per tenant. Errors are not stored.              A secret shown once (`key`, `token`) is blanked (`\"\"`) in a replay. Not taken              with the admin token (400).",
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
    let problem = |description: &str| {
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
        )
    };
    let responses = &mut operation.responses.responses;
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
        responses
            .entry(status.to_owned())
            .or_insert_with(|| problem(description));
    }
    for (status, response) in responses.iter_mut() {
        if let (true, RefOr::T(response)) = (status.starts_with('2'), response) {
            response.headers.insert(
                "Idempotent-Replayed".to_owned(),
                HeaderBuilder::new()
                    .schema(ObjectBuilder::new().schema_type(Type::String))
                    .description(Some(
                        "`true` when this is the stored response of an earlier request \
                         with the same Idempotency-Key",
                    ))
                    .build(),
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
    router
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
        .routes(routes!(routes::tenants::current_tenant))
        .routes(routes!(routes::tenants::children))
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
        .routes(routes!(routes::people::my_tenants))
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
    }
}
