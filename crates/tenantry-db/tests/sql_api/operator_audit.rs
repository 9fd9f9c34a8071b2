//! The operator's audit log (`tenantry.operator_audit_log`, migration 0061): what operators do to every tenant at once (tables adopted, changed, altered and released, permissions defined, context keys added and retired, audit rows expired, the sign-up and purge policies changed by plain SQL) is recorded with who did it, only when something changed, and nobody but tenantry's functions writes it.

use tenantry_db::testing::TestDatabase;
use tokio_postgres::Client;

use crate::{
    common::{count, create_tenant, exec, set_status},
    helpers::{admin, denied},
};

/// The operator log's rows as `action target actor`, oldest first.
async fn operator_log(c: &Client) -> Vec<String> {
    c.query(
        "SELECT format('%s %s %s', action, coalesce(target_id, '-'), actor)
           FROM tenantry.operator_audit_log ORDER BY occurred_at, event_id",
        &[],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect()
}

/// The session's login, as `db:<login>` names it.
async fn session_user(c: &Client) -> String {
    c.query_one("SELECT session_user::text", &[])
        .await
        .unwrap()
        .get(0)
}

/// `sql` in a transaction of its own labelled `actor` (as the CLI labels its sessions).
async fn as_actor(c: &Client, actor: &str, sql: &str) {
    exec(
        c,
        &format!("BEGIN; SELECT tenantry.set_actor_local('{actor}'); {sql}; COMMIT"),
    )
    .await;
}

#[tokio::test]
async fn what_operators_change_for_every_tenant_is_recorded_once_with_who_changed_it() {
    let tdb = TestDatabase::new().await;
    let su = tdb.superuser_client().await;
    exec(&su, "SET search_path = public, tenantry").await;
    let before = operator_log(&su).await;

    // A permission: defined, defined again as it is (no event), described anew.
    as_actor(
        &su,
        "cli:alice",
        "SELECT define_permission('invoices.approve', 'Approve invoices')",
    )
    .await;
    as_actor(
        &su,
        "cli:alice",
        "SELECT define_permission('invoices.approve', 'Approve invoices')",
    )
    .await;
    as_actor(
        &su,
        "cli:bob",
        "SELECT define_permission('invoices.approve', 'Approve and pay invoices')",
    )
    .await;
    // A table: adopted, adopted again as before (a migration file on every
    // start: no event), its options changed, altered, released.
    exec(
        &su,
        "CREATE TABLE invoices (tenant_id uuid NOT NULL, id bigint NOT NULL, amount numeric,
                                PRIMARY KEY (tenant_id, id))",
    )
    .await;
    as_actor(&su, "cli:alice", "SELECT adopt_table('invoices')").await;
    as_actor(&su, "cli:alice", "SELECT adopt_table('invoices')").await;
    as_actor(
        &su,
        "cli:alice",
        "SELECT adopt_table('invoices', sharing => true, write_permission => 'invoices.approve')",
    )
    .await;
    as_actor(
        &su,
        "cli:alice",
        "SELECT alter_tenant_table('invoices', 'ADD COLUMN due_at date')",
    )
    .await;
    as_actor(&su, "cli:alice", "SELECT release_table('invoices')").await;
    // A context key added and retired, by a session without a label.
    let added: i32 = su
        .query_one("SELECT tenantry.add_context_key()", &[])
        .await
        .unwrap()
        .get(0);
    exec(&su, &format!("SELECT tenantry.retire_context_key({added})")).await;

    let mut log = operator_log(&su).await;
    assert_eq!(&log[..before.len()], &before[..]);
    let log = log.split_off(before.len());
    let me = session_user(&su).await;
    assert_eq!(
        log,
        [
            "permission.defined invoices.approve cli:alice".to_owned(),
            "permission.described invoices.approve cli:bob".to_owned(),
            "table.adopted public.invoices cli:alice".to_owned(),
            "table.options_changed public.invoices cli:alice".to_owned(),
            "table.altered public.invoices cli:alice".to_owned(),
            "table.released public.invoices cli:alice".to_owned(),
            format!("context_key.added {added} db:{me}"),
            format!("context_key.retired {added} db:{me}"),
        ]
    );
    // The details say what changed, and from what.
    let options: serde_json::Value = su
        .query_one(
            "SELECT details FROM tenantry.operator_audit_log WHERE action = 'table.options_changed'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        options,
        serde_json::json!({
            "hierarchy": true, "sharing": true, "write_permission": "invoices.approve",
            "before": {"hierarchy": true, "sharing": false, "write_permission": null}
        })
    );
    let change: serde_json::Value = su
        .query_one(
            "SELECT details FROM tenantry.operator_audit_log WHERE action = 'table.altered'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(change["change"], "ADD COLUMN due_at date");

    // A refused change is no event: the whole call rolled back.
    exec(&su, "CREATE TABLE notes (id bigint PRIMARY KEY, body text)").await;
    let refused = su.batch_execute("SELECT adopt_table('notes')").await;
    assert!(refused.is_err(), "a key without tenant_id is refused");
    assert_eq!(
        count(
            &su,
            "SELECT count(*) FROM tenantry.operator_audit_log WHERE target_id LIKE '%notes'"
        )
        .await,
        0
    );
}

#[tokio::test]
async fn expiring_audit_rows_is_itself_recorded_and_takes_the_operators_old_rows_too() {
    let tdb = TestDatabase::new().await;
    let su = tdb.superuser_client().await;
    // Three operator rows from 40 days ago, written as a restore would (the
    // append-only trigger has nothing to say about inserts).
    exec(
        &su,
        "INSERT INTO tenantry.operator_audit_log (occurred_at, actor, action, target_type)
         SELECT now() - interval '40 days' + n * interval '1 second', 'old', 'old.thing', 'table'
         FROM generate_series(1, 3) n",
    )
    .await;
    // Nothing old enough: no rows, no event.
    assert_eq!(
        count(&su, "SELECT tenantry.expire_audit_log('60 days')").await,
        0
    );
    assert_eq!(
        count(
            &su,
            "SELECT count(*) FROM tenantry.operator_audit_log WHERE action = 'audit_log.expired'"
        )
        .await,
        0
    );
    as_actor(
        &su,
        "cli:carol",
        "SELECT tenantry.expire_audit_log('30 days', 2)",
    )
    .await;
    assert_eq!(
        count(&su, "SELECT tenantry.expire_audit_log('30 days', 2)").await,
        1
    );
    assert_eq!(
        count(&su, "SELECT tenantry.expire_audit_log('30 days', 2)").await,
        0,
        "the rows about the expiry are new: the loop of docs/operations.md ends"
    );
    let rows = su
        .query(
            "SELECT actor, details->>'operator_rows', details->>'tenant_rows', details->>'older_than'
               FROM tenantry.operator_audit_log WHERE action = 'audit_log.expired'
              ORDER BY occurred_at",
            &[],
        )
        .await
        .unwrap();
    let got: Vec<(String, String, String, String)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    let me = session_user(&su).await;
    assert_eq!(
        got,
        [
            (
                "cli:carol".to_owned(),
                "2".to_owned(),
                "0".to_owned(),
                "30 days".to_owned()
            ),
            (
                format!("db:{me}"),
                "1".to_owned(),
                "0".to_owned(),
                "30 days".to_owned()
            ),
        ]
    );
    // Append-only for the owner too, outside the retention.
    exec(&su, "SET ROLE tenantry_owner").await;
    denied(&su, "DELETE FROM tenantry.operator_audit_log", "TN403").await;
    denied(
        &su,
        "UPDATE tenantry.operator_audit_log SET actor = 'x'",
        "TN403",
    )
    .await;
    denied(&su, "TRUNCATE tenantry.operator_audit_log", "TN403").await;
}

#[tokio::test]
async fn an_administrator_reads_the_operators_log_in_an_administrative_context_only() {
    let tdb = TestDatabase::new().await;
    let su = tdb.superuser_client().await;
    exec(
        &su,
        "SELECT tenantry.define_permission('reports.export', 'Export reports')",
    )
    .await;
    let admin = admin(&tdb).await;
    assert_eq!(
        count(
            &admin,
            "SELECT count(*) FROM tenantry.operator_audit_log WHERE action = 'permission.defined'"
        )
        .await,
        1
    );
    // Defined by an administrator (the API's admin token works so): its actor.
    exec(
        &admin,
        "SELECT tenantry.define_permission('reports.share', 'Share reports')",
    )
    .await;
    assert_eq!(
        count(
            &admin,
            "SELECT count(*) FROM tenantry.operator_audit_log
              WHERE action = 'permission.defined' AND target_id = 'reports.share' AND actor = 'operator'"
        )
        .await,
        1
    );
    // The same role without the context reads nothing.
    let bare = tdb.superuser_client().await;
    exec(&bare, "SET ROLE tenantry_admin").await;
    assert_eq!(
        count(&bare, "SELECT count(*) FROM tenantry.operator_audit_log").await,
        0
    );
}

/// The policies operators change with plain SQL (who may sign up, how long
/// a deleted tenant is kept) are recorded too, with what changed before and
/// after; an UPDATE that changes no value, and a refused one, write nothing.
#[tokio::test]
async fn an_operators_plain_sql_change_of_the_signup_or_purge_policy_is_recorded_with_before_and_after(
) {
    let tdb = TestDatabase::new().await;
    let su = tdb.superuser_client().await;
    let before = operator_log(&su).await.len();
    as_actor(
        &su,
        "cli:alice",
        "UPDATE tenantry.signup_policy SET tenants_per_person = 3",
    )
    .await;
    // As it is: nothing changed, nothing recorded.
    as_actor(
        &su,
        "cli:alice",
        "UPDATE tenantry.signup_policy SET tenants_per_person = 3",
    )
    .await;
    // Refused by its CHECK: rolled back with the change.
    denied(
        &su,
        "UPDATE tenantry.signup_policy SET tenants_per_person = -1",
        "23514",
    )
    .await;
    exec(
        &su,
        "UPDATE tenantry.purge_policy SET grace = interval '7 days'",
    )
    .await;
    let log = operator_log(&su).await;
    let user = session_user(&su).await;
    assert_eq!(
        log[before..],
        [
            "policy.changed signup_policy cli:alice".to_owned(),
            format!("policy.changed purge_policy db:{user}"),
        ]
    );
    let details: Vec<serde_json::Value> = su
        .query(
            "SELECT details FROM tenantry.operator_audit_log WHERE action = 'policy.changed'
              ORDER BY occurred_at, event_id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        details,
        [
            serde_json::json!({
                "operation": "update",
                "before": { "tenants_per_person": 0 },
                "after": { "tenants_per_person": 3 },
            }),
            serde_json::json!({
                "operation": "update",
                "before": { "grace": "30 days" },
                "after": { "grace": "7 days" },
            }),
        ]
    );
    // The server's roles may not change either policy at all.
    let server = tdb.server_client().await;
    for role in ["tenantry_app", "tenantry_admin"] {
        exec(&server, &format!("RESET ROLE; SET ROLE {role}")).await;
        for sql in [
            "UPDATE tenantry.signup_policy SET tenants_per_person = 1000",
            "UPDATE tenantry.purge_policy SET grace = interval '0'",
        ] {
            denied(&server, sql, "42501").await;
        }
    }
    assert_eq!(operator_log(&su).await.len(), before + 2);

    // Emptied with TRUNCATE (which row triggers do not see): recorded too,
    // and a purge then still waits the default grace period, not none.
    exec(&su, "TRUNCATE tenantry.purge_policy").await;
    let last: serde_json::Value = su
        .query_one(
            "SELECT details FROM tenantry.operator_audit_log ORDER BY occurred_at DESC, event_id DESC LIMIT 1",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(last, serde_json::json!({ "operation": "truncate" }));
    let gone = create_tenant(&su, "gone", None).await;
    set_status(&su, gone, "deleted").await;
    let said = denied(
        &su,
        &format!("SELECT tenantry.purge_tenant('{gone}')"),
        "TN409",
    )
    .await;
    assert!(said.contains("30 days"), "{said}");
}
