//! The OpenAPI 3.1 description, generated from the handlers' annotations, and the router that carries both.

use utoipa::{
    openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme},
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

/// Every route with its OpenAPI operation.
pub fn api_router() -> OpenApiRouter<AppState> {
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
        .routes(routes!(routes::tenants::create_tenant_key))
        .routes(routes!(routes::tenants::tenant_usage))
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
}

#[cfg(test)]
mod tests {
    use super::*;

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
