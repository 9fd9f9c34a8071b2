//! API keys: the guide's key functions, and `validate_tenant_key` without a
//! context (flaw 8).

use serde_json::{json, Value};
use tenantry_db::testing::TestDatabase;
use tokio_postgres::Client;
use uuid::Uuid;

use crate::common::{count, create_tenant, set_status};
use crate::helpers::{
    admin, app, clear_context, denied, expect_sqlstate, set_context, verified_tenant,
};

/// Tenant id a key validates to (NULL when refused).
async fn validated_tenant(c: &Client, key: &str) -> Option<String> {
    c.query_one("SELECT validate_tenant_key($1)->>'tenant_id'", &[&key])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn guide_key_functions_answer_by_their_names() {
    let tdb = TestDatabase::new().await;
    let admin = admin(&tdb).await;
    let app = app(&tdb).await;
    let a = create_tenant(&admin, "a", None).await;
    set_context(&app, a).await;

    let k1: String = app
        .query_one(
            "SELECT create_api_key($1, $2)",
            &[&"ci", &json!({"env": "prod"})],
        )
        .await
        .unwrap()
        .get(0);
    assert!(k1.starts_with("tk_") && k1.len() == 80, "{k1}");
    let id = app
        .query_one("SELECT verify_api_key($1)", &[&k1])
        .await
        .unwrap()
        .get::<_, Option<Value>>(0)
        .expect("a fresh key verifies");
    assert_eq!(id["tenant_id"], json!(a.to_string()));
    assert_eq!(id["metadata"]["env"], json!("prod"));
    let k1_id: Uuid = id["key_id"].as_str().unwrap().parse().unwrap();

    let k2: String = app
        .query_one("SELECT create_tenant_api_key($1, $2)", &[&a, &"tenant key"])
        .await
        .unwrap()
        .get(0);
    let v = app
        .query_one("SELECT validate_tenant_key($1)", &[&k2])
        .await
        .unwrap()
        .get::<_, Option<Value>>(0)
        .expect("a tenant key validates");
    assert_eq!(v["tenant_id"], json!(a.to_string()));
    assert_eq!(v["type"], json!("tenant_key"));

    // Rotation: both keys work during the grace period; a key rotates once.
    let k3: String = app
        .query_one("SELECT rotate_api_key($1, interval '1 hour')", &[&k1_id])
        .await
        .unwrap()
        .get(0);
    assert_ne!(k3, k1);
    assert_eq!(verified_tenant(&app, &k1).await, Some(a.to_string()));
    assert_eq!(verified_tenant(&app, &k3).await, Some(a.to_string()));
    expect_sqlstate(
        app.query_one("SELECT rotate_api_key($1, interval '1 hour')", &[&k1_id])
            .await,
        "TN409",
        "rotating a key twice",
    );

    // Revocation is immediate and idempotent.
    let k3_id: Uuid = app
        .query_one("SELECT (verify_api_key($1)->>'key_id')::uuid", &[&k3])
        .await
        .unwrap()
        .get(0);
    app.execute("SELECT revoke_api_key($1)", &[&k3_id])
        .await
        .unwrap();
    assert_eq!(verified_tenant(&app, &k3).await, None);
    app.execute("SELECT revoke_api_key($1)", &[&k3_id])
        .await
        .unwrap();
    assert_eq!(
        count(
            &app,
            "SELECT count(*) FROM api_keys WHERE revoked_at IS NOT NULL"
        )
        .await,
        1
    );
    assert_eq!(count(&app, "SELECT count(*) FROM api_keys").await, 3);

    // A grace of zero ends the old key at once.
    let k2_id: Uuid = v["key_id"].as_str().unwrap().parse().unwrap();
    let k4: String = app
        .query_one("SELECT rotate_api_key($1, interval '0')", &[&k2_id])
        .await
        .unwrap()
        .get(0);
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    assert_eq!(verified_tenant(&app, &k2).await, None);
    assert_eq!(verified_tenant(&app, &k4).await, Some(a.to_string()));
}

// -----------------------------------------------------------------------------
// Flaw 8: validate_tenant_key needed the context before knowing the tenant.
// -----------------------------------------------------------------------------

#[tokio::test]
async fn validate_tenant_key_identifies_the_tenant_without_context_and_refuses_foreign_revoked_and_suspended_keys(
) {
    let tdb = TestDatabase::new().await;
    let admin = admin(&tdb).await;
    let app = app(&tdb).await;
    let a = create_tenant(&admin, "a", None).await;
    let b = create_tenant(&admin, "b", None).await;
    let s = create_tenant(&admin, "s", None).await;
    let mut keys = Vec::new();
    for t in [a, b, s] {
        set_context(&app, t).await;
        let k: String = app
            .query_one("SELECT create_tenant_api_key($1, 'key')", &[&t])
            .await
            .unwrap()
            .get(0);
        keys.push(k);
    }
    let (ka, kb, ks) = (keys[0].clone(), keys[1].clone(), keys[2].clone());

    // No context: the key names its tenant.
    clear_context(&app).await;
    assert_eq!(validated_tenant(&app, &ka).await, Some(a.to_string()));
    assert_eq!(validated_tenant(&app, &kb).await, Some(b.to_string()));
    let ctx: Option<Uuid> = app
        .query_one("SELECT current_tenant_id()", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(ctx, None, "validation sets no context");

    // With a context: own key yes, another tenant's key no.
    set_context(&app, a).await;
    assert_eq!(validated_tenant(&app, &ka).await, Some(a.to_string()));
    assert_eq!(validated_tenant(&app, &kb).await, None);
    set_context(&app, b).await;
    assert_eq!(validated_tenant(&app, &ka).await, None);

    // Forged and tampered keys.
    clear_context(&app).await;
    let mut tampered = kb.clone();
    let last = tampered.pop().unwrap();
    tampered.push(if last == '0' { '1' } else { '0' });
    let other_prefix = format!("tk_{}{}", "0".repeat(12), &kb[15..]);
    for bad in [tampered.as_str(), other_prefix.as_str(), "garbage", ""] {
        assert_eq!(validated_tenant(&app, bad).await, None, "{bad}");
        assert_eq!(verified_tenant(&app, bad).await, None, "{bad}");
    }

    // Suspended tenant: verify reports it, validate refuses it.
    set_status(&admin, s, "suspended").await;
    assert_eq!(validated_tenant(&app, &ks).await, None);
    let status: Option<String> = app
        .query_one("SELECT verify_api_key($1)->>'tenant_status'", &[&ks])
        .await
        .unwrap()
        .get(0);
    assert_eq!(status.as_deref(), Some("suspended"));

    // Another tenant's key can be neither created, revoked nor rotated.
    let kb_id: Uuid = app
        .query_one("SELECT (verify_api_key($1)->>'key_id')::uuid", &[&kb])
        .await
        .unwrap()
        .get(0);
    set_context(&app, a).await;
    expect_sqlstate(
        app.query_one("SELECT create_tenant_api_key($1, 'x')", &[&b])
            .await,
        "TN404",
        "key for another tenant",
    );
    expect_sqlstate(
        app.execute("SELECT revoke_api_key($1)", &[&kb_id]).await,
        "TN404",
        "revoking another tenant's key",
    );
    expect_sqlstate(
        app.query_one("SELECT rotate_api_key($1, interval '1 hour')", &[&kb_id])
            .await,
        "TN404",
        "rotating another tenant's key",
    );
    assert_eq!(
        validated_tenant(&app, &kb).await,
        None,
        "foreign under context a"
    );
    clear_context(&app).await;
    assert_eq!(validated_tenant(&app, &kb).await, Some(b.to_string()));

    // Revoked: refused at once.
    set_context(&app, a).await;
    let ka_id: Uuid = app
        .query_one("SELECT key_id FROM api_keys", &[])
        .await
        .unwrap()
        .get(0);
    app.execute("SELECT revoke_api_key($1)", &[&ka_id])
        .await
        .unwrap();
    clear_context(&app).await;
    assert_eq!(validated_tenant(&app, &ka).await, None);
    assert_eq!(verified_tenant(&app, &ka).await, None);

    // The hash is not readable; the key table is not writable.
    set_context(&app, a).await;
    assert_eq!(count(&app, "SELECT count(prefix) FROM api_keys").await, 1);
    for sql in [
        "SELECT key_hash FROM api_keys",
        "SELECT * FROM api_keys",
        "SELECT k FROM api_keys k",
        "SELECT count(*) FROM api_keys WHERE key_hash IS NOT NULL",
        "UPDATE api_keys SET revoked_at = NULL",
        "DELETE FROM api_keys",
        "INSERT INTO api_keys (prefix, key_hash) VALUES ('000000000000', sha256('x'))",
    ] {
        denied(&app, sql, "42501").await;
    }

    // Only the SHA-256 is stored.
    let su = tdb.superuser_client().await;
    let secret = &kb[16..];
    let leaked: i64 = su
        .query_one(
            "SELECT count(*) FROM tenantry.api_keys k WHERE strpos(row_to_json(k)::text, $1) > 0",
            &[&secret],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(leaked, 0);
    let hashed: i64 = su
        .query_one(
            "SELECT count(*) FROM tenantry.api_keys WHERE key_hash = sha256(convert_to($1, 'UTF8'))",
            &[&kb],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(hashed, 1);
}

/// A database with one tenant and a key of it made through the SQL API:
/// the database, an app-role client without a context, the key.
async fn a_tenants_key() -> (TestDatabase, tokio_postgres::Client, String) {
    let tdb = TestDatabase::new().await;
    let admin = admin(&tdb).await;
    let app = app(&tdb).await;
    let a = create_tenant(&admin, "a", None).await;
    set_context(&app, a).await;
    let key: String = app
        .query_one("SELECT create_api_key('k', '{}')", &[])
        .await
        .unwrap()
        .get(0);
    clear_context(&app).await;
    (tdb, app, key)
}

/// The key's `last_used_at`, read as the superuser.
async fn last_used(tdb: &TestDatabase, key_id: Uuid) -> Option<chrono::DateTime<chrono::Utc>> {
    tdb.superuser_client()
        .await
        .query_one(
            "SELECT last_used_at FROM tenantry.api_keys WHERE key_id = $1",
            &[&key_id],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn verification_records_last_use_at_most_once_a_minute() {
    let (tdb, app, key) = a_tenants_key().await;
    let key_id = |v: Value| -> Uuid { v["key_id"].as_str().unwrap().parse().unwrap() };
    let verify = "SELECT verify_api_key($1)";
    let id = key_id(app.query_one(verify, &[&key]).await.unwrap().get(0));
    let first = last_used(&tdb, id)
        .await
        .expect("the first verification records its use");

    // Each verification its own transaction, as the server runs them.
    app.query_one(verify, &[&key]).await.unwrap();
    assert_eq!(
        last_used(&tdb, id).await,
        Some(first),
        "a second verification within the minute writes nothing"
    );

    let su = tdb.superuser_client().await;
    su.execute(
        "UPDATE tenantry.api_keys SET last_used_at = now() - interval '61 seconds' WHERE key_id = $1",
        &[&id],
    )
    .await
    .unwrap();
    app.query_one(verify, &[&key]).await.unwrap();
    let later = last_used(&tdb, id).await.unwrap();
    assert!(
        later >= first,
        "a use more than a minute later is recorded: {later} < {first}"
    );
}

#[tokio::test]
async fn a_member_bound_key_holds_each_permission_of_its_members_roles_once_in_name_order() {
    let tdb = TestDatabase::new().await;
    let admin = admin(&tdb).await;
    let app = app(&tdb).await;
    let a = create_tenant(&admin, "a", None).await;
    set_context(&app, a).await;
    // The first member owns the tenant, and a key acting as the owner holds
    // every permission: the member below comes second.
    app.execute(
        "INSERT INTO tenant_members (tenant_id, email) VALUES ($1, 'owner@example.com')",
        &[&a],
    )
    .await
    .unwrap();
    let user: Uuid = app
        .query_one(
            "INSERT INTO tenant_members (tenant_id, email) VALUES ($1, 'm@example.com') RETURNING user_id",
            &[&a],
        )
        .await
        .unwrap()
        .get(0);
    for (role, permissions) in [
        ("writer", ["resources.write", "resources.read"]),
        ("reader", ["resources.read", "usage.read"]),
    ] {
        let r: Uuid = app
            .query_one("SELECT create_tenant_role($1, $2)", &[&a, &role])
            .await
            .unwrap()
            .get(0);
        for p in permissions {
            app.execute("SELECT assign_tenant_permission($1, $2)", &[&r, &p])
                .await
                .unwrap();
        }
        app.execute("SELECT assign_member_role($1, $2)", &[&user, &r])
            .await
            .unwrap();
    }
    let member_key: String = app
        .query_one(
            "SELECT create_api_key('m', jsonb_build_object('user_id', $1::uuid))",
            &[&user],
        )
        .await
        .unwrap()
        .get(0);
    let lonely: Uuid = app
        .query_one(
            "INSERT INTO tenant_members (tenant_id, email) VALUES ($1, 'l@example.com') RETURNING user_id",
            &[&a],
        )
        .await
        .unwrap()
        .get(0);
    let lonely_key: String = app
        .query_one(
            "SELECT create_api_key('l', jsonb_build_object('user_id', $1::uuid))",
            &[&lonely],
        )
        .await
        .unwrap()
        .get(0);
    clear_context(&app).await;
    let permissions = |k: String| {
        let app = &app;
        async move {
            app.query_one("SELECT verify_api_key($1)->'permissions'", &[&k])
                .await
                .unwrap()
                .get::<_, Value>(0)
        }
    };
    assert_eq!(
        permissions(member_key).await,
        json!(["resources.read", "resources.write", "usage.read"])
    );
    assert_eq!(
        permissions(lonely_key).await,
        json!([]),
        "a member without roles holds nothing"
    );
}

#[tokio::test]
async fn key_verification_calls_no_sql_function_that_is_planned_on_every_call() {
    let tdb = TestDatabase::new().await;
    let su = tdb.superuser_client().await;
    // SQL functions the planner can inline: no SECURITY DEFINER, no SET, and
    // (for identity_permissions, used in FROM) set-returning.
    let rows = su
        .query(
            "SELECT p.proname::text, p.prosecdef, p.proconfig IS NOT NULL, p.proretset
             FROM pg_proc p
             WHERE p.pronamespace = 'tenantry'::regnamespace
               AND p.proname IN ('verify_api_key', 'identity_permissions')
             ORDER BY 1",
            &[],
        )
        .await
        .unwrap();
    let found: Vec<(String, bool, bool, bool)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    assert_eq!(
        found,
        vec![
            ("identity_permissions".to_owned(), false, false, true),
            ("verify_api_key".to_owned(), false, false, false),
        ],
        "(name, security definer, SET clause, set-returning)"
    );
}

#[tokio::test]
async fn an_operator_creates_a_key_for_the_tenant_it_names_without_a_context_and_the_server_cannot()
{
    let tdb = TestDatabase::new().await;
    let admin = admin(&tdb).await;
    let app = app(&tdb).await;
    let a = create_tenant(&admin, "a", None).await;

    // The guide's call, from psql, as an operator with no tenant context.
    clear_context(&app).await;
    let key: String = app
        .query_one("SELECT create_tenant_api_key($1, 'operator key')", &[&a])
        .await
        .unwrap()
        .get(0);
    assert_eq!(validated_tenant(&app, &key).await, Some(a.to_string()));
    // The call acted in the tenant's context and gave it back.
    let ctx: Option<Uuid> = app
        .query_one("SELECT current_tenant_id()", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(ctx, None);
    let su = tdb.superuser_client().await;
    let created_by: String = su
        .query_one(
            "SELECT created_by FROM tenantry.api_keys WHERE tenant_id = $1",
            &[&a],
        )
        .await
        .unwrap()
        .get(0);
    assert!(created_by.starts_with("operator:"), "{created_by}");
    // An unknown tenant: not found, nothing made.
    denied(
        &app,
        &format!("SELECT create_tenant_api_key('{}', 'x')", Uuid::new_v4()),
        "TN404",
    )
    .await;

    // The server's login is no operator: without a proven context it names
    // no tenant, whichever role it switched to.
    let server = tdb.server_client().await;
    for role in ["tenantry_app", "tenantry_admin"] {
        server
            .batch_execute(&format!("SET ROLE {role}"))
            .await
            .unwrap();
        let sql = format!("SELECT tenantry.create_tenant_api_key('{a}', 'x')");
        let e = server.query_one(&sql, &[]).await.unwrap_err();
        let code = e.code().map(|c| c.code().to_owned()).unwrap_or_default();
        assert!(code == "TN403" || code == "42501", "{role}: {e}");
    }
    assert_eq!(
        count(
            &su,
            &format!("SELECT count(*) FROM tenantry.api_keys WHERE tenant_id = '{a}'")
        )
        .await,
        1
    );
}

/// A session holding a key's row (a DBA's `SELECT … FOR UPDATE`, a long
/// transaction that changed the key) made every verification of that key
/// wait for it, up to the statement timeout, in the lane of credential
/// checks that every tenant's uncached keys share: one tenant's key held
/// the others' requests (found by a review of database failures). The
/// verification answers at once and leaves the use to be recorded later.
#[tokio::test]
async fn verification_never_waits_for_a_lock_on_the_keys_row_to_record_its_use() {
    let (tdb, app, key) = a_tenants_key().await;
    let verify = "SELECT verify_api_key($1)";
    let identity: Value = app.query_one(verify, &[&key]).await.unwrap().get(0);
    let id: Uuid = identity["key_id"].as_str().unwrap().parse().unwrap();
    let mut holder = tdb.superuser_client().await;
    holder
        .execute(
            "UPDATE tenantry.api_keys SET last_used_at = now() - interval '61 seconds' WHERE key_id = $1",
            &[&id],
        )
        .await
        .unwrap();
    let held = holder.transaction().await.unwrap();
    held.execute(
        "SELECT 1 FROM tenantry.api_keys WHERE key_id = $1 FOR UPDATE",
        &[&id],
    )
    .await
    .unwrap();

    let answered = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        app.query_one(verify, &[&key]),
    )
    .await
    .expect("the verification waited for the lock on the key's row")
    .unwrap();
    let identity: Value = answered.get(0);
    assert_eq!(identity["key_id"].as_str(), Some(id.to_string().as_str()));
    let before = last_used(&tdb, id).await.unwrap();

    held.rollback().await.unwrap();
    app.query_one(verify, &[&key]).await.unwrap();
    let after = last_used(&tdb, id).await.unwrap();
    assert!(
        after > before,
        "the next verification that finds the row free records the use: {after} <= {before}"
    );
}

/// Revoked keys are kept until their tenant is purged; docs/security.md
/// ("Revoked keys are kept") gives operators a DELETE to prune them. It
/// removes the revoked key and its lookup row, and leaves the live key
/// verifying and the tenant's count of live keys as it was.
#[tokio::test]
async fn an_operator_prunes_revoked_keys_with_the_documented_delete_and_live_keys_go_on() {
    let (tdb, app, live) = a_tenants_key().await;
    let tenant = verified_tenant(&app, &live).await.expect("a live key");
    let tenant: Uuid = tenant.parse().unwrap();
    set_context(&app, tenant).await;
    let gone: String = app
        .query_one("SELECT create_api_key('gone', '{}')", &[])
        .await
        .unwrap()
        .get(0);
    clear_context(&app).await;
    let gone_id: Uuid = app
        .query_one("SELECT (verify_api_key($1)->>'key_id')::uuid", &[&gone])
        .await
        .unwrap()
        .get(0);
    set_context(&app, tenant).await;
    app.execute("SELECT revoke_api_key($1)", &[&gone_id])
        .await
        .unwrap();
    clear_context(&app).await;
    let su = tdb.superuser_client().await;
    let live_keys = "SELECT api_keys FROM tenantry.tenant_limit_usage WHERE tenant_id = $1";
    let before: i64 = su.query_one(live_keys, &[&tenant]).await.unwrap().get(0);

    // The documented statement, with a cut-off that includes the key just revoked.
    let pruned = su
        .execute(
            "DELETE FROM tenantry.api_keys WHERE revoked_at < now() + interval '1 minute'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(pruned, 1);
    let lookups: i64 = su
        .query_one(
            "SELECT count(*) FROM tenantry.api_key_lookup WHERE key_id = $1",
            &[&gone_id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(lookups, 0);
    assert_eq!(verified_tenant(&app, &gone).await, None);
    assert_eq!(verified_tenant(&app, &live).await, Some(tenant.to_string()));
    let after: i64 = su.query_one(live_keys, &[&tenant]).await.unwrap().get(0);
    assert_eq!(after, before, "live keys counted as before");
}

/// Addresses a key is limited to are kept with an IPv4-mapped IPv6 network
/// as the IPv4 network it stands for, as the server sees its clients; and a
/// key admitting only IPv6 clients (`::/0`) makes no key admitting every
/// IPv4 client through the mapped range (`::ffff:0:0/96`, within `::/0` as
/// PostgreSQL compares them), which the server then matched as IPv4 (found
/// by a review).
#[tokio::test]
async fn a_keys_mapped_addresses_are_kept_as_ipv4_and_an_ipv6_only_key_makes_no_key_for_ipv4_clients(
) {
    let tdb = TestDatabase::new().await;
    let (app, admin) = (app(&tdb).await, admin(&tdb).await);
    let t = create_tenant(&admin, "t", None).await;
    set_context(&app, t).await;
    let cidrs = |key: String| {
        let app = &app;
        async move {
            app.query_one(
                "SELECT (verify_api_key($1)->'allowed_cidrs')::text, (verify_api_key($1)->>'key_id')::uuid",
                &[&key],
            )
            .await
            .unwrap()
        }
    };
    let mapped: String = app
        .query_one(
            r#"SELECT create_api_key('mapped', '{"allowed_cidrs": ["::ffff:127.0.0.1", "::ffff:203.0.113.0/120", "2001:db8::/32"]}')"#,
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        cidrs(mapped).await.get::<_, String>(0),
        r#"["127.0.0.1/32", "203.0.113.0/24", "2001:db8::/32"]"#
    );
    let v6: String = app
        .query_one(
            r#"SELECT create_api_key('v6', '{"allowed_cidrs": ["::/0"]}')"#,
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let v6_id: Uuid = cidrs(v6).await.get(1);
    // Acting as that key, as the server's context names it.
    let as_v6 = || async {
        app.batch_execute("BEGIN").await.unwrap();
        app.execute(
            "SELECT set_tenant_context_local($1::uuid, NULL::uuid, 'key:' || $2::uuid::text)",
            &[&t, &v6_id],
        )
        .await
        .unwrap();
    };
    as_v6().await;
    expect_sqlstate(
        app.query_one(
            r#"SELECT create_api_key('every ipv4', '{"allowed_cidrs": ["::ffff:0:0/96"]}')"#,
            &[],
        )
        .await,
        "TN422",
        "a key for every IPv4 client from an IPv6-only key",
    );
    app.batch_execute("ROLLBACK").await.unwrap();
    as_v6().await;
    app.query_one(
        r#"SELECT create_api_key('narrower', '{"allowed_cidrs": ["2001:db8::/32"]}')"#,
        &[],
    )
    .await
    .unwrap();
    app.batch_execute("COMMIT").await.unwrap();
}
