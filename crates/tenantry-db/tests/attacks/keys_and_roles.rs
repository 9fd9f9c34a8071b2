//! Roles and keys: no tenant grants in another, a role named like a builtin
//! grants nothing, and refused or wrong keys verify to nothing.

use serde_json::json;
use tokio_postgres::Client;

use crate::common::{count, create_tenant, exec, set_status, strings};
use crate::helpers::{
    begin_as, commit, create_key, create_role, denied, enter_signed, fails, key_id_of, rollback,
    signed_for, verified_tenant, world,
};

async fn validated_tenant(c: &Client, key: &str) -> Option<String> {
    c.query_one(
        "SELECT tenantry.validate_tenant_key($1)->>'tenant_id'",
        &[&key],
    )
    .await
    .unwrap()
    .get(0)
}

#[tokio::test]
async fn a_tenant_cannot_create_roles_or_grant_permissions_in_another_tenant() {
    let w = world().await;
    let b_role = create_role(&w.app, w.b, "b-role").await;
    begin_as(&w.app, w.a).await;
    exec(&w.app, "SAVEPOINT s").await;
    for sql in [
        format!("SELECT tenantry.create_tenant_role('{}', 'evil')", w.b),
        format!(
            "INSERT INTO tenantry.roles (tenant_id, name) VALUES ('{}', 'evil')",
            w.b
        ),
        format!(
            "INSERT INTO tenantry.role_permissions (tenant_id, role_id, permission_id) VALUES ('{}', '{b_role}', 12)",
            w.b
        ),
        format!("SELECT tenantry.assign_tenant_permission('{b_role}', 'keys.write')"),
        format!("SELECT tenantry.revoke_tenant_permission('{b_role}', 'keys.write')"),
        "UPDATE tenantry.permissions SET name = 'resources.read' WHERE permission_id = 12".to_owned(),
        "INSERT INTO tenantry.permissions VALUES (99, 'god.mode', 'x')".to_owned(),
    ] {
        let (code, message, _) =
            fails(&w.app, &format!("ROLLBACK TO SAVEPOINT s; {sql}")).await;
        assert!(
            ["TN403", "TN404", "42501"].contains(&code.as_str()),
            "{sql}: {code} {message}"
        );
    }
    rollback(&w.app).await;
    begin_as(&w.app, w.b).await;
    assert_eq!(
        count(&w.app, "SELECT count(*) FROM tenantry.role_permissions").await,
        0
    );
    assert_eq!(
        strings(&w.app, "SELECT name FROM tenantry.roles").await,
        ["b-role"]
    );
    commit(&w.app).await;
}

#[tokio::test]
async fn a_role_named_like_a_builtin_is_only_a_tenant_row_and_grants_nothing() {
    let w = world().await;
    let roles_before = count(&w.app, "SELECT count(*) FROM pg_roles").await;
    let mut ids = Vec::new();
    for name in [
        "tenantry_owner",
        "tenantry_admin",
        "postgres",
        "admin",
        "owner",
        "pg_read_all_data",
    ] {
        ids.push(create_role(&w.app, w.a, name).await);
    }
    assert_eq!(
        count(&w.app, "SELECT count(*) FROM pg_roles").await,
        roles_before,
        "no database role was created"
    );
    denied(&w.app, "SET ROLE tenantry_owner", "42501").await;
    // A key bound to such a role holds exactly the role's (empty) permissions.
    for role in ids {
        let key = create_key(&w.app, w.a, json!({ "role_id": role })).await;
        let perms: serde_json::Value = w
            .app
            .query_one("SELECT tenantry.verify_api_key($1)->'permissions'", &[&key])
            .await
            .unwrap()
            .get(0);
        assert_eq!(perms, json!([]), "role {role}");
    }
}

#[tokio::test]
async fn revoked_expired_deleted_and_suspended_tenants_keys_are_refused() {
    let w = world().await;
    let revoked = create_key(&w.app, w.a, json!({})).await;
    let revoked_id = key_id_of(&w.app, w.a, &revoked).await;
    begin_as(&w.app, w.a).await;
    exec(
        &w.app,
        &format!("SELECT tenantry.revoke_api_key('{revoked_id}')"),
    )
    .await;
    commit(&w.app).await;
    let expired = create_key(&w.app, w.a, json!({ "expires_at": "2000-01-01T00:00:00Z" })).await;
    let asleep = create_tenant(&w.admin, "asleep", None).await;
    let asleep_key = create_key(&w.app, asleep, json!({})).await;
    set_status(&w.admin, asleep, "suspended").await;
    let gone = create_tenant(&w.admin, "gone", None).await;
    let gone_key = create_key(&w.app, gone, json!({})).await;
    set_status(&w.admin, gone, "deleted").await;
    for key in [&revoked, &expired] {
        assert_eq!(verified_tenant(&w.app, key).await, None);
        assert_eq!(validated_tenant(&w.app, key).await, None);
    }
    for key in [&asleep_key, &gone_key] {
        assert_eq!(validated_tenant(&w.app, key).await, None);
        // verify_api_key names the status so that the server can refuse it.
        let status: Option<String> = w
            .app
            .query_one(
                "SELECT tenantry.verify_api_key($1)->>'tenant_status'",
                &[key],
            )
            .await
            .unwrap()
            .get(0);
        assert_ne!(status.as_deref(), Some("active"));
    }
    // A deleted tenant's context cannot be opened even with a valid signature.
    exec(&w.app, "BEGIN").await;
    let e = enter_signed(&w.app, &signed_for(gone))
        .await
        .expect_err("a deleted tenant");
    assert_eq!(e.code().map(|c| c.code()), Some("TN403"), "{e:?}");
    rollback(&w.app).await;
}

#[tokio::test]
async fn a_wrong_secret_and_an_unknown_prefix_both_verify_to_null() {
    let w = world().await;
    let key = create_key(&w.app, w.a, json!({})).await;
    let (head, secret) = key.split_at(16);
    let flipped: String = secret
        .chars()
        .map(|c| if c == '0' { '1' } else { '0' })
        .collect();
    for forged in [
        format!("{head}{flipped}"),
        format!("tk_000000000000_{secret}"),
        format!("{}X", &key[..key.len() - 1]),
        key.to_uppercase(),
        format!("{key} "),
        String::new(),
        "tk_' OR '1'='1".to_owned(),
    ] {
        assert_eq!(verified_tenant(&w.app, &forged).await, None, "{forged:?}");
        assert_eq!(validated_tenant(&w.app, &forged).await, None, "{forged:?}");
    }
    let hash_probe: Option<serde_json::Value> = w
        .app
        .query_one(
            "SELECT tenantry.verify_api_key_hash(substr($1, 4, 12), '\\x00'::bytea)",
            &[&key],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(hash_probe, None);
    assert_eq!(verified_tenant(&w.app, &key).await, Some(w.a.to_string()));
}
