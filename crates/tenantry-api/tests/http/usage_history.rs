//! Usage history and the operator's view of one tenant: hourly errors, keys,
//! p95 latency and storage; the 30-day ranking of tenants; a tenant's keys,
//! roles, members and adopted tables through admin routes; each next to its
//! denied cases (a tenant key, another tenant's ids).

use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{random_id, TenantKey, TestApp};

/// Request-log rows as the server's logger writes them: (status, latency ms, key).
async fn log_requests(app: &TestApp, tenant: &str, rows: &[(i16, f64, &str)]) {
    let logger = app.request_log_writer().await;
    for (status, latency, key) in rows {
        logger
            .execute(
                "INSERT INTO tenantry.request_log (tenant_id, route, status, latency_ms, key_id)
                 VALUES ($1::text::uuid, '/v1/resources', $2, $3, $4::text::uuid)",
                &[&tenant, status, latency, key],
            )
            .await
            .unwrap();
    }
    logger.batch_execute("COMMIT").await.unwrap();
}

/// The metrics refreshed as the server's scheduler does it: an admin scope
/// (a proven administrative context; tenantry_admin alone may not).
async fn refresh(app: &TestApp) {
    let db = app.db.database();
    let mut admin = db.admin("scheduler").await.unwrap();
    admin.refresh_metrics().await.unwrap();
    admin.commit().await.unwrap();
}

/// The server's own request log is off: only the rows a test writes count.
async fn quiet_app() -> TestApp {
    TestApp::spawn_with(|s| {
        s.request_log = false;
        s.metrics_refresh_secs = 0;
    })
    .await
}

/// 20 requests of `t` over two keys: latencies 1..=20 ms; two 404s, one 503.
async fn seed_busy(app: &TestApp, t: &TenantKey) -> String {
    let other_key = random_id();
    let rows: Vec<(i16, f64, &str)> = (1..=20)
        .map(|i| {
            let status = match i {
                3 | 7 => 404,
                11 => 503,
                _ => 200,
            };
            let key = if i % 2 == 0 {
                t.key_id.as_str()
            } else {
                other_key.as_str()
            };
            (status, f64::from(i), key)
        })
        .collect();
    log_requests(app, &t.id, &rows).await;
    other_key
}

fn own_rows<'a>(rows: &'a Value, tenant: &str) -> Vec<&'a Value> {
    rows.as_array()
        .unwrap()
        .iter()
        .filter(|r| r["tenant_id"] == tenant)
        .collect()
}

#[tokio::test]
async fn hourly_usage_counts_keys_client_and_server_errors_p95_latency_and_storage() {
    let app = quiet_app().await;
    let busy = app.tenant("busy").await;
    let other = app.tenant("other").await;
    app.create_resource(&busy.key, "one").await;
    app.create_resource(&busy.key, "two").await;
    seed_busy(&app, &busy).await;
    log_requests(&app, &other.id, &[(500, 900.0, &other.key_id)]).await;
    refresh(&app).await;

    let rows = app.get("/v1/usage/metrics", &busy.key).await;
    let mine = own_rows(rows.expect(200), &busy.id);
    assert_eq!(mine.len(), 1, "one hour: {}", rows.text);
    let hour = mine[0];
    assert_eq!(hour["request_count"], 20);
    assert_eq!(hour["unique_keys"], 2);
    assert_eq!(hour["client_errors"], 2);
    assert_eq!(hour["server_errors"], 1);
    // percentile_cont(0.95) of 1..=20: 19 + 0.05 * (20 - 19).
    let p95 = hour["p95_latency_ms"].as_f64().unwrap();
    assert!((p95 - 19.05).abs() < 1e-9, "p95 {p95}");
    assert_eq!(hour["storage_resources"], 2);
    assert!(hour["storage_bytes"].as_i64().unwrap() > 0);
    assert!(
        !rows.text.contains(&other.id),
        "another tenant's hours leaked: {}",
        rows.text
    );

    // The operator's twin shows the same row; the other tenant's 900 ms stays its own.
    let admin = app
        .admin_get(&format!("/v1/tenants/{}/usage", busy.id))
        .await;
    let admin_rows = &admin.expect(200)["metrics"];
    assert_eq!(own_rows(admin_rows, &busy.id)[0], hour);
    assert!(!admin.text.contains(&other.id));
}

#[tokio::test]
async fn storage_is_sampled_once_an_hour_and_hours_without_requests_still_show_it() {
    let app = quiet_app().await;
    let t = app.tenant("idle").await;
    app.create_resource(&t.key, "kept").await;
    refresh(&app).await;
    // A second refresh in the same hour does not sample again.
    app.create_resource(&t.key, "later").await;
    refresh(&app).await;
    let rows = app.get("/v1/usage/metrics", &t.key).await;
    let mine = own_rows(rows.expect(200), &t.id);
    assert_eq!(mine.len(), 1, "{}", rows.text);
    assert_eq!(mine[0]["request_count"], 0);
    assert!(mine[0]["p95_latency_ms"].is_null());
    assert_eq!(mine[0]["storage_resources"], 1);
    assert_eq!(
        app.count(&format!(
            "SELECT count(*) FROM tenantry.storage_samples WHERE tenant_id = '{}'",
            t.id
        ))
        .await,
        1
    );
}

#[tokio::test]
async fn storage_samples_older_than_30_days_are_dropped_by_the_next_hours_sample() {
    let app = quiet_app().await;
    let t = app.tenant("old").await;
    let su = app.db.superuser_client().await;
    su.execute(
        "INSERT INTO tenantry.storage_samples (tenant_id, hour, resources, bytes) VALUES
           ($1::text::uuid, date_trunc('hour', now()) - interval '31 days', 5, 50),
           ($1::text::uuid, date_trunc('hour', now()) - interval '29 days', 4, 40)",
        &[&t.id],
    )
    .await
    .unwrap();
    refresh(&app).await;
    let kept = app
        .count(&format!(
            "SELECT count(*) FROM tenantry.storage_samples WHERE tenant_id = '{}'",
            t.id
        ))
        .await;
    assert_eq!(kept, 2, "the 29-day-old sample and this hour's stay");
    let rows = app.get("/v1/usage/metrics", &t.key).await;
    let bytes: Vec<i64> = own_rows(rows.expect(200), &t.id)
        .iter()
        .filter_map(|r| r["storage_bytes"].as_i64())
        .collect();
    assert_eq!(bytes, vec![40, 0], "oldest first: {}", rows.text);
}

#[tokio::test]
async fn the_operator_ranks_tenants_by_requests_errors_p95_and_storage() {
    let app = quiet_app().await;
    let busy = app.tenant("busy").await;
    let failing = app.tenant("failing").await;
    let big = app.tenant("big").await;
    seed_busy(&app, &busy).await;
    log_requests(
        &app,
        &failing.id,
        &[
            (500, 400.0, &failing.key_id),
            (502, 500.0, &failing.key_id),
            (503, 450.0, &failing.key_id),
            (404, 300.0, &failing.key_id),
        ],
    )
    .await;
    for i in 0..3 {
        app.create_resource(&big.key, &format!("r{i}")).await;
    }
    refresh(&app).await;

    let top = |by: &'static str, limit: u32| {
        let app = &app;
        async move {
            let r = app
                .admin_get(&format!("/v1/usage/top?days=30&limit={limit}&by={by}"))
                .await;
            r.expect(200)
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t["tenant_id"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        top("requests", 2).await,
        vec![busy.id.clone(), failing.id.clone()]
    );
    assert_eq!(top("errors", 1).await, vec![failing.id.clone()]);
    assert_eq!(
        top("p95", 2).await,
        vec![failing.id.clone(), busy.id.clone()]
    );
    assert_eq!(top("storage", 1).await, vec![big.id.clone()]);

    let rows = app.admin_get("/v1/usage/top").await;
    let first = &rows.expect(200)[0];
    assert_eq!(first["tenant_id"], busy.id.as_str());
    assert_eq!(first["name"], "busy");
    assert_eq!(first["request_count"], 20);
    assert_eq!(first["client_errors"], 2);
    assert_eq!(first["server_errors"], 1);
    assert!((first["error_rate"].as_f64().unwrap() - 0.15).abs() < 1e-9);

    for bad in ["days=0", "days=31", "limit=0", "limit=101"] {
        app.admin_get(&format!("/v1/usage/top?{bad}"))
            .await
            .problem(422, "validation_failed");
    }
    for bad in ["by=noise", "tenant_id=x", "days=-1"] {
        app.admin_get(&format!("/v1/usage/top?{bad}"))
            .await
            .problem(400, "invalid_query");
    }
    app.get("/v1/usage/top", &busy.key)
        .await
        .problem(403, "wrong_credential");
    app.send(Method::GET, "/v1/usage/top", None, None)
        .await
        .problem(401, "unauthorized");
}

#[tokio::test]
async fn the_operator_lists_revokes_and_rotates_a_tenants_keys_audited_as_admin() {
    let app = TestApp::spawn().await;
    let t = app.tenant("acme").await;
    let other = app.tenant("globex").await;
    let (spare, spare_id) = app
        .create_key(&t.id, json!({ "description": "spare" }))
        .await;

    let listed = app.admin_get(&format!("/v1/tenants/{}/keys", t.id)).await;
    let ids: Vec<&str> = listed.expect(200)["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["key_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 2);
    assert!(ids.contains(&t.key_id.as_str()) && ids.contains(&spare_id.as_str()));
    assert!(!listed.text.contains(&other.key_id), "{}", listed.text);
    assert!(!listed.text.contains(&spare), "a secret was listed");

    // Another tenant's key through this tenant's path is a missing key, and stays working.
    app.send(
        Method::DELETE,
        &format!("/v1/tenants/{}/keys/{}", t.id, other.key_id),
        Some(&app.admin_token),
        None,
    )
    .await
    .problem(404, "not_found");
    app.admin_post(
        &format!("/v1/tenants/{}/keys/{}/rotate", t.id, other.key_id),
        &json!({}),
    )
    .await
    .problem(404, "not_found");
    app.get("/v1/tenant", &other.key).await.expect(200);

    app.get("/v1/tenant", &spare).await.expect(200);
    app.send(
        Method::DELETE,
        &format!("/v1/tenants/{}/keys/{spare_id}", t.id),
        Some(&app.admin_token),
        None,
    )
    .await
    .expect(204);
    app.get("/v1/tenant", &spare)
        .await
        .problem(401, "unauthorized");

    let rotated = app
        .admin_post(
            &format!("/v1/tenants/{}/keys/{}/rotate", t.id, t.key_id),
            &json!({ "grace_seconds": 0 }),
        )
        .await;
    let new_key = rotated.expect(201)["key"].as_str().unwrap().to_owned();
    app.get("/v1/tenant", &new_key).await.expect(200);
    app.get("/v1/tenant", &t.key)
        .await
        .problem(401, "unauthorized");
    app.admin_post(
        &format!("/v1/tenants/{}/keys/{}/rotate", t.id, t.key_id),
        &json!({ "grace_seconds": 2_592_001 }),
    )
    .await
    .problem(422, "validation_failed");

    let audit = app
        .admin_get(&format!("/v1/tenants/{}/audit?action=key.revoked", t.id))
        .await;
    let rows = audit.items();
    assert!(
        rows.iter()
            .any(|r| r["actor"] == "admin" && r["target_id"] == spare_id.as_str()),
        "{}",
        audit.text
    );

    // A tenant key may not use the operator's routes, not even for its own tenant.
    for (method, path) in [
        (Method::GET, format!("/v1/tenants/{}/keys", t.id)),
        (
            Method::DELETE,
            format!("/v1/tenants/{}/keys/{}", t.id, t.key_id),
        ),
        (
            Method::POST,
            format!("/v1/tenants/{}/keys/{}/rotate", t.id, t.key_id),
        ),
        (Method::GET, format!("/v1/tenants/{}/roles", t.id)),
        (Method::GET, format!("/v1/tenants/{}/members", t.id)),
        (Method::GET, format!("/v1/tenants/{}/tables", t.id)),
    ] {
        app.send(method.clone(), &path, Some(&new_key), None)
            .await
            .problem(403, "wrong_credential");
    }
    for path in ["keys", "roles", "members", "tables"] {
        app.admin_get(&format!("/v1/tenants/{}/{path}", random_id()))
            .await
            .problem(404, "not_found");
        app.admin_get(&format!("/v1/tenants/not-a-uuid/{path}"))
            .await
            .problem(400, "invalid_path");
    }
}

#[tokio::test]
async fn the_operator_sees_a_tenants_roles_and_members_and_no_other_tenants() {
    let app = TestApp::spawn().await;
    let t = app.tenant("acme").await;
    let other = app.tenant("globex").await;
    let role = app
        .create_role(&t.key, "readers", &["resources.read"])
        .await;
    let other_role = app
        .create_role(&other.key, "writers", &["resources.write"])
        .await;
    let member = app.add_member(&t.key, "ann@example.com").await;
    app.put(&format!("/v1/members/{member}/roles/{role}"), &t.key)
        .await
        .expect(200);
    app.post(
        "/v1/members",
        &other.key,
        &json!({ "email": "bob@example.com" }),
    )
    .await
    .expect(201);

    let roles = app.admin_get(&format!("/v1/tenants/{}/roles", t.id)).await;
    let items = roles.items();
    assert_eq!(items.len(), 1, "{}", roles.text);
    assert_eq!(items[0]["role_id"], role.as_str());
    assert!(!roles.text.contains(&other_role));

    let members = app
        .admin_get(&format!("/v1/tenants/{}/members", t.id))
        .await;
    let items = members.items();
    assert_eq!(items.len(), 1, "{}", members.text);
    assert_eq!(items[0]["user_id"], member.as_str());
    assert!(!members.text.contains("bob@example.com"));
}

#[tokio::test]
async fn adopted_tables_list_each_tenants_own_row_count_wherever_its_tier_keeps_them() {
    let app = TestApp::spawn().await;
    let su = app.db.superuser_client().await;
    su.batch_execute(
        "CREATE TABLE public.invoices (tenant_id uuid NOT NULL, id bigint NOT NULL, amount numeric NOT NULL,
                                       PRIMARY KEY (tenant_id, id));
         SELECT tenantry.adopt_table('public.invoices', true, false);",
    )
    .await
    .unwrap();
    let parent = app.tenant("parent").await;
    let child = app.child_tenant("child", Some(&parent.id)).await;
    let silo_id = app
        .create_tenant_with(json!({ "name": "silo", "isolation": "schema" }))
        .await["tenant_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (silo_key, _) = app.create_key(&silo_id, json!({})).await;
    let silo_schema = app.schema_of(&silo_id).await;
    for (table, tenant, n) in [
        ("public.invoices".to_owned(), &parent.id, 3),
        ("public.invoices".to_owned(), &child.id, 2),
        (format!("\"{silo_schema}\".invoices"), &silo_id, 4),
    ] {
        su.execute(
            &format!(
                "INSERT INTO {table} (tenant_id, id, amount)
                 SELECT $1::text::uuid, g, g FROM generate_series(1, $2::int) g"
            ),
            &[tenant, &n],
        )
        .await
        .unwrap();
    }

    // The parent's hierarchy policy reaches its child's rows; its count is its own rows only.
    for (key, id, want) in [
        (&parent.key, &parent.id, 3),
        (&child.key, &child.id, 2),
        (&silo_key, &silo_id, 4),
    ] {
        let r = app.get("/v1/tables", key).await;
        let tables = r.expect(200).as_array().unwrap();
        assert_eq!(tables.len(), 1, "{}", r.text);
        assert_eq!(tables[0]["table"], "public.invoices");
        assert_eq!(tables[0]["hierarchy"], true);
        assert_eq!(tables[0]["row_count"], want, "tenant {id}: {}", r.text);
        let admin = app.admin_get(&format!("/v1/tenants/{id}/tables")).await;
        assert_eq!(admin.expect(200), r.expect(200));
    }

    // A key without usage.read is refused.
    let role = app
        .create_role(&parent.key, "none", &["resources.read"])
        .await;
    let (narrow, _) = app.create_role_key(&parent.key, &role).await;
    app.get("/v1/tables", &narrow)
        .await
        .problem(403, "permission_denied");
}
