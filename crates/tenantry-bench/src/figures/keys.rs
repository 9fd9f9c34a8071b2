//! Key verification in the database, KeyHippo's way: a PL/pgSQL loop calls `verify_api_key` N times as the server's role and divides the elapsed clock time (`sql_verify_key_ms` for a valid key, `_invalid_ms` for a wrong secret, `_member_ms` for a key bound to a member). KeyHippo itself is the same-run baseline when its SQL is given in `TENANTRY_BENCH_KEYHIPPO_SQL`; its source is never part of this repository.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use tokio_postgres::Client;

use super::{connect, Ctx};
use crate::{
    dataset::BenchTenant,
    report::{Figure, Goal, RatioKind},
};

/// Names a file of KeyHippo's SQL (`extension/keyhippo--<version>.sql` of
/// integrated-reasoning/KeyHippo) to load into a database of its own in the
/// same cluster and measure next to tenantry.
pub const KEYHIPPO_SQL_ENV: &str = "TENANTRY_BENCH_KEYHIPPO_SQL";

/// The goal for every variant, on this machine.
const GOAL_MS: f64 = 0.03;

/// The database KeyHippo is loaded into (dropped and made anew each run).
const KEYHIPPO_DATABASE: &str = "keyhippo_bench";

/// What each variant verifies, and whether the key must be accepted.
struct Variant {
    name: &'static str,
    what: &'static str,
    accepted: bool,
}

const VARIANTS: [Variant; 3] = [
    Variant {
        name: "sql_verify_key_ms",
        what: "verify_api_key(key) of a valid tenant key (no member, no role): identity with every permission",
        accepted: true,
    },
    Variant {
        name: "sql_verify_key_invalid_ms",
        what: "verify_api_key(key) of a key with a known prefix and a wrong secret: NULL",
        accepted: false,
    },
    Variant {
        name: "sql_verify_key_member_ms",
        what: "verify_api_key(key) of a key bound to a member holding one role with two permissions",
        accepted: true,
    },
];

/// The loop: the key is read from a setting into a variable (as KeyHippo's
/// loop holds it), so the planner never sees it as a constant; the count of
/// accepted keys proves what was measured.
fn loop_sql(function: &str, calls: i32) -> String {
    format!(
        "DO $bench$
         DECLARE
             k text := current_setting('tenantry_bench.key');
             t0 timestamptz;
             accepted int := 0;
         BEGIN
             t0 := clock_timestamp();
             FOR i IN 1..{calls} LOOP
                 IF {function} IS NOT NULL THEN
                     accepted := accepted + 1;
                 END IF;
             END LOOP;
             PERFORM set_config('tenantry_bench.ms',
                                (extract(epoch FROM clock_timestamp() - t0) * 1000 / {calls})::text, false),
                     set_config('tenantry_bench.accepted', accepted::text, false);
         END
         $bench$"
    )
}

/// Runs the loop once with `key` and returns (ms per call, keys accepted).
async fn time_loop(client: &Client, sql: &str, key: &str) -> anyhow::Result<(f64, i32)> {
    client
        .execute(
            "SELECT set_config('tenantry_bench.key', $1, false)",
            &[&key],
        )
        .await?;
    client.batch_execute(sql).await?;
    let row = client
        .query_one(
            "SELECT current_setting('tenantry_bench.ms')::float8, current_setting('tenantry_bench.accepted')::int",
            &[],
        )
        .await?;
    Ok((row.get(0), row.get(1)))
}

/// The same key with its last hex digit changed: a known prefix, a wrong secret.
fn wrong_secret(key: &str) -> String {
    let mut k = key.to_owned();
    let last = k.pop().unwrap_or('0');
    k.push(if last == '0' { '1' } else { '0' });
    k
}

/// The member of `tenant` with `email`, added (as `display_name`) the first
/// time: data sets are reused run after run.
async fn member_named(
    c: &Client,
    tenant: uuid::Uuid,
    email: &str,
    display_name: &str,
) -> anyhow::Result<uuid::Uuid> {
    if let Some(r) = c
        .query_opt(
            "SELECT user_id FROM tenantry.tenant_members WHERE tenant_id = $1 AND email = $2",
            &[&tenant, &email],
        )
        .await?
    {
        return Ok(r.get(0));
    }
    Ok(c.query_one(
        "INSERT INTO tenantry.tenant_members (tenant_id, email, display_name)
             VALUES ($1, $2, $3) RETURNING user_id",
        &[&tenant, &email, &display_name],
    )
    .await?
    .get(0))
}

/// A valid tenant key and a member-bound key of `leaf`, made through the SQL
/// API as `tenantry_app` in an operator's session in the tenant (the member,
/// its role and its two permissions are made once per data set).
async fn tenantry_keys(ctx: &Ctx, su: &Client, leaf: &BenchTenant) -> anyhow::Result<[String; 3]> {
    // Keys accumulate run after run: the operator gives the tenant room.
    su.execute(
        "UPDATE tenantry.tenants SET settings = settings || '{\"max_api_keys\": 1000000}' WHERE tenant_id = $1",
        &[&leaf.id],
    )
    .await?;
    let c = connect(&ctx.db.superuser).await?;
    c.batch_execute(&format!(
        "SET ROLE tenantry_app; SELECT tenantry.set_tenant_context('{}')",
        leaf.id
    ))
    .await?;
    // The first member owns the tenant, and a key acting as the owner holds
    // every permission: the benchmark's member is a plain one, after an owner
    // of its own (data sets made before owners' keys held everything have the
    // member as owner: ownership moves to the stand-in).
    let owner = member_named(&c, leaf.id, "bench-owner@example.com", "benchmark owner").await?;
    let user = member_named(&c, leaf.id, "bench-keys@example.com", "benchmark member").await?;
    let member_owns: bool = c
        .query_one(
            "SELECT is_owner FROM tenantry.tenant_members WHERE tenant_id = $1 AND user_id = $2",
            &[&leaf.id, &user],
        )
        .await?
        .get(0);
    if member_owns {
        c.execute("SELECT tenantry.transfer_ownership($1)", &[&owner])
            .await?;
    }
    let role = role_named(&c, leaf.id, "bench keys").await?;
    c.execute(
        "SELECT tenantry.assign_tenant_permission($1, 'resources.read'),
                tenantry.assign_tenant_permission($1, 'resources.write'),
                tenantry.assign_member_role($2, $1)",
        &[&role, &user],
    )
    .await?;
    let valid: String = c
        .query_one("SELECT tenantry.create_api_key('bench verify', '{}')", &[])
        .await?
        .get(0);
    let member: String = c
        .query_one(
            "SELECT tenantry.create_api_key('bench verify member', jsonb_build_object('user_id', $1::uuid))",
            &[&user],
        )
        .await?
        .get(0);
    let permissions: serde_json::Value = c
        .query_one(
            "SELECT tenantry.verify_api_key($1)->'permissions'",
            &[&member],
        )
        .await?
        .get(0);
    if permissions != serde_json::json!(["resources.read", "resources.write"]) {
        bail!("the member-bound key holds {permissions}, not its role's two permissions");
    }
    Ok([valid.clone(), wrong_secret(&valid), member])
}

/// KeyHippo loaded into its own database of the same cluster, with stand-ins
/// for the Supabase pieces it expects (the `auth` schema, its roles, pgcrypto
/// in `extensions`; `pg_net` and `pg_cron` as no-op functions: nothing here
/// calls out). Returns a superuser connection to it acting as
/// `authenticated`, and its keys for the three variants: a valid key, the
/// same with a wrong secret, and a key of a scope holding two permissions
/// (KeyHippo's nearest thing to a key bound to a role).
async fn keyhippo(ctx: &Ctx, su: &Client, path: &Path) -> anyhow::Result<(Client, [String; 3])> {
    let source = std::fs::read_to_string(path)
        .with_context(|| format!("reading KeyHippo's SQL from {}", path.display()))?;
    // Not installable here: their calls are stubbed below.
    let source = source
        .replace("CREATE EXTENSION IF NOT EXISTS pg_net;", "")
        .replace("CREATE EXTENSION IF NOT EXISTS pg_cron;", "");
    // Each its own statement: neither runs inside a transaction block.
    super::drop_database(su, KEYHIPPO_DATABASE).await?;
    su.batch_execute(&format!("CREATE DATABASE {KEYHIPPO_DATABASE}"))
        .await?;
    su.batch_execute(
        "DO $$ BEGIN
             IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'authenticated') THEN
                 CREATE ROLE authenticated NOLOGIN; END IF;
             IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'anon') THEN
                 CREATE ROLE anon NOLOGIN; END IF;
             IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'service_role') THEN
                 CREATE ROLE service_role NOLOGIN; END IF;
             IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'authenticator') THEN
                 CREATE ROLE authenticator NOLOGIN; END IF;
         END $$",
    )
    .await?;
    // A later dbname in a libpq string overrides the earlier one.
    let kh = connect(&format!("{} dbname={KEYHIPPO_DATABASE}", ctx.db.superuser)).await?;
    kh.batch_execute(
        "CREATE SCHEMA auth;
         CREATE TABLE auth.users (id uuid PRIMARY KEY, email text);
         CREATE FUNCTION auth.uid() RETURNS uuid LANGUAGE sql STABLE
             AS $$ SELECT nullif(current_setting('request.jwt.claim.sub', true), '')::uuid $$;
         GRANT USAGE ON SCHEMA auth TO authenticated, anon;
         CREATE SCHEMA extensions;
         CREATE EXTENSION pgcrypto SCHEMA extensions;
         GRANT USAGE ON SCHEMA extensions TO authenticated, anon;
         CREATE SCHEMA cron;
         CREATE FUNCTION cron.schedule(text, text) RETURNS bigint LANGUAGE sql AS $$ SELECT 0::bigint $$;
         CREATE SCHEMA net;
         CREATE FUNCTION net.http_post(url text, body jsonb, headers jsonb DEFAULT '{}')
             RETURNS bigint LANGUAGE sql AS $$ SELECT 0::bigint $$;",
    )
    .await?;
    kh.batch_execute(&source)
        .await
        .context("loading KeyHippo's SQL")?;
    // As its own tests/bench.sql: a user, authenticated through the JWT claims.
    let user = uuid::Uuid::new_v4();
    kh.execute(
        "INSERT INTO auth.users (id, email) VALUES ($1, 'bench@example.com')",
        &[&user],
    )
    .await?;
    kh.batch_execute(&format!(
        "SELECT set_config('request.jwt.claim.sub', '{user}', false),
                set_config('request.jwt.claims', json_build_object('sub', '{user}', 'role', 'authenticated')::text, false);
         INSERT INTO keyhippo.scopes (name) VALUES ('bench');
         INSERT INTO keyhippo.scope_permissions (scope_id, permission_id)
             SELECT s.id, p.id FROM keyhippo.scopes s, keyhippo_rbac.permissions p
             WHERE s.name = 'bench' AND p.name IN ('manage_api_keys', 'manage_scopes');"
    ))
    .await?;
    let valid: String = kh
        .query_one(
            "SELECT api_key FROM keyhippo.create_api_key('bench verify')",
            &[],
        )
        .await?
        .get(0);
    let scoped: String = kh
        .query_one(
            "SELECT api_key FROM keyhippo.create_api_key('bench verify scoped', 'bench')",
            &[],
        )
        .await?
        .get(0);
    kh.batch_execute("SET ROLE authenticated").await?;
    Ok((kh, [valid.clone(), wrong_secret(&valid), scoped]))
}

/// `sql_verify_key_ms`, `sql_verify_key_invalid_ms`, `sql_verify_key_member_ms`.
pub(super) async fn key_figures(
    ctx: &mut Ctx,
    su: &Client,
    leaf: &BenchTenant,
) -> anyhow::Result<()> {
    if !VARIANTS.iter().any(|v| ctx.wanted(v.name)) {
        return Ok(());
    }
    let calls: i32 = if ctx.opts.smoke { 200 } else { 20_000 };
    let keys = tenantry_keys(ctx, su, leaf).await?;
    // As the server verifies: its login, the app role, no tenant context yet.
    let server = connect(&ctx.db.server).await?;
    server.batch_execute("SET ROLE tenantry_app").await?;
    let ours = loop_sql("tenantry.verify_api_key(k)", calls);

    let keyhippo_sql = std::env::var_os(KEYHIPPO_SQL_ENV).map(PathBuf::from);
    let theirs = match &keyhippo_sql {
        Some(path) => Some(keyhippo(ctx, su, path).await?),
        None => None,
    };
    // KeyHippo's verify_api_key returns a row set; a key is accepted when it has a row.
    let theirs_sql = loop_sql(
        "(SELECT v.user_id FROM keyhippo.verify_api_key(k) v)",
        calls,
    );

    let mut values = vec![Vec::new(); VARIANTS.len()];
    let mut baselines = vec![Vec::new(); VARIANTS.len()];
    // Warm-up: plans cached, pages in memory.
    for key in &keys {
        time_loop(&server, &ours, key).await?;
    }
    for _ in 0..ctx.opts.runs {
        for (i, v) in VARIANTS.iter().enumerate() {
            let (ms, accepted) = time_loop(&server, &ours, &keys[i]).await?;
            let expected = if v.accepted { calls } else { 0 };
            if accepted != expected {
                bail!(
                    "{}: tenantry accepted {accepted} of {calls} calls, expected {expected}",
                    v.name
                );
            }
            values[i].push(ms);
            if let Some((kh, kh_keys)) = &theirs {
                let (ms, accepted) = time_loop(kh, &theirs_sql, &kh_keys[i]).await?;
                if accepted != expected {
                    bail!(
                        "{}: KeyHippo accepted {accepted} of {calls} calls, expected {expected}",
                        v.name
                    );
                }
                baselines[i].push(ms);
            }
        }
    }
    for (i, v) in VARIANTS.iter().enumerate() {
        let what = format!(
            "{}; as tenantry_app without tenant context, PL/pgSQL loop of {calls} calls, clock time / calls",
            v.what
        );
        let baseline = match &theirs {
            Some(_) => (
                "KeyHippo's verify_api_key, same loop, same cluster, same run (wrong-secret and two-permission-scope keys for the other variants)",
                std::mem::take(&mut baselines[i]),
            ),
            // The goal stands in for the baseline: ratio = value / 0.03 ms.
            None => (
                "the issue's goal, 0.03 ms on this machine (KeyHippo not loaded: set TENANTRY_BENCH_KEYHIPPO_SQL)",
                vec![GOAL_MS],
            ),
        };
        ctx.push(Figure::new(
            v.name,
            "ms",
            &what,
            std::mem::take(&mut values[i]),
            Some(baseline),
            RatioKind::ValueOverBaseline,
            Some(Goal::ValueAtMost(GOAL_MS)),
        ));
    }
    if theirs.is_some() {
        drop(theirs);
        super::drop_database(su, KEYHIPPO_DATABASE).await?;
    }
    Ok(())
}

/// The role `name` of `tenant`, created when missing (the data set is reused
/// between runs). `c` is in the tenant's context as `tenantry_app`.
pub(super) async fn role_named(
    c: &Client,
    tenant: uuid::Uuid,
    name: &str,
) -> anyhow::Result<uuid::Uuid> {
    let found = c
        .query_opt(
            "SELECT role_id FROM tenantry.roles WHERE tenant_id = $1 AND name = $2",
            &[&tenant, &name],
        )
        .await?;
    Ok(match found {
        Some(r) => r.get(0),
        None => c
            .query_one(
                "SELECT tenantry.create_tenant_role($1, $2)",
                &[&tenant, &name],
            )
            .await?
            .get(0),
    })
}
