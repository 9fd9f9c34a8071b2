//! Figures of people and permissions (issue 14): a person's point read with a JWT next to a key's on the same server (`api_point_read_jwt`), inserts into an adopted table whose write policies call `tenantry.authorize()` next to an identical table without them (`authorize_write_policy`), and one `authorize()` call in the database next to `key_permissions()` (`authorize_us`).

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, ensure, Context};
use jsonwebtoken::{EncodingKey, Header};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_postgres::Client;
use uuid::Uuid;

use super::{connect, point_targets, Ctx, Keyed, SERVER_POOL};
use crate::{
    dataset::BenchTenant,
    load::{wrk_script, Pgbench, Target, Wrk},
    report::{Figure, Goal, RatioKind},
    server::{BenchIdp, ServerChild},
};

/// Fixed namespace of the benchmark's people: the person of tenant `t` is
/// derived from `t` (the UUIDv5 of `t`, marked version 4), so a kept data set
/// finds its members again.
const PEOPLE_NAMESPACE: Uuid = Uuid::from_u128(0x5b1c_93a4_7e0d_4f2a_9c61_0b8e_2d47_a3f5);

/// The permission the checked table's writes need (defined by the benchmark).
const WRITE_PERMISSION: &str = "invoices.write";

/// The role of the key whose permissions the write and authorize figures use.
const WRITER_ROLE: &str = "bench writer";

/// The permissions of that role: the write permission among the resource ones.
const WRITER_PERMISSIONS: [&str; 3] = ["resources.read", "resources.write", WRITE_PERMISSION];

/// `api_point_read_jwt`, `authorize_write_policy`, `authorize_us`.
pub(super) async fn people_figures(
    ctx: &mut Ctx,
    su: &Client,
    keyed: &[Keyed],
    leaf: &BenchTenant,
    admin_token: &str,
) -> anyhow::Result<()> {
    if ctx.wanted("api_point_read_jwt") {
        jwt_figure(ctx, su, keyed, admin_token).await?;
    }
    if ctx.wanted("authorize_write_policy") || ctx.wanted("authorize_us") {
        let writer = writer_key(ctx, su, leaf).await?;
        if ctx.wanted("authorize_write_policy") {
            write_figure(ctx, su, leaf, &writer).await?;
        }
        if ctx.wanted("authorize_us") {
            authorize_figure(ctx, &writer).await?;
        }
    }
    Ok(())
}

/// The person who is a member of tenant `tenant` (its owner: the first member).
fn person_of(tenant: Uuid) -> (Uuid, String) {
    // Not version 5: a token's subject is its user id only when it is of
    // another version (tenantry_axum::jwt::user_id_for). (Data sets kept from
    // before 2026-12-03 hold members of the version-5 ids too; they are
    // invited again under these.)
    let derived = Uuid::new_v5(&PEOPLE_NAMESPACE, tenant.as_bytes());
    let user = uuid::Builder::from_bytes(*derived.as_bytes())
        .with_version(uuid::Version::Random)
        .into_uuid();
    (user, format!("bench-person-{}@example.com", user.simple()))
}

/// A token of `idp` for `user`, valid for six hours (a run is shorter): the
/// claims a provider puts in an access token (iss, aud, sub, email and
/// email_verified, iat, exp); only a verified email accepts an invitation.
fn sign(idp: &BenchIdp, user: Uuid, email: &str) -> anyhow::Result<String> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let claims = serde_json::json!({
        "iss": idp.issuer,
        "aud": idp.audience,
        "sub": user.to_string(),
        "email": email,
        "email_verified": true,
        "iat": now,
        "exp": now + 6 * 3600,
    });
    Ok(jsonwebtoken::encode(
        &Header::default(), // HS256
        &claims,
        &EncodingKey::from_secret(idp.secret.as_bytes()),
    )?)
}

/// One HTTP/1.1 request (connection closed after it): status and body.
async fn http(
    url: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&serde_json::Value>,
) -> anyhow::Result<(u16, String)> {
    let addr = url.strip_prefix("http://").context("an http:// URL")?;
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    if !body.is_empty() {
        request.push_str("Content-Type: application/json\r\n");
    }
    request.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
    let response = String::from_utf8_lossy(&response);
    let (head, body) = response
        .split_once("\r\n\r\n")
        .with_context(|| format!("no HTTP response: {response:?}"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .with_context(|| format!("no HTTP status in {head:?}"))?;
    Ok((status, body.to_owned()))
}

/// The role people are invited with: reading resources. The first member
/// owns the tenant (every permission) anyway; in a tenant that already has
/// an owner (the smoke data set's key figures make one), the role lets the
/// person read.
const PERSON_ROLE: &str = "bench reader";

/// `tenant`'s [`PERSON_ROLE`], made (as `tenantry_app` in an operator's
/// session in the tenant) when missing.
async fn person_role(ctx: &Ctx, su: &Client, tenant: Uuid) -> anyhow::Result<Uuid> {
    if let Some(r) = su
        .query_opt(
            "SELECT role_id FROM tenantry.roles WHERE tenant_id = $1 AND name = $2",
            &[&tenant, &PERSON_ROLE],
        )
        .await?
    {
        return Ok(r.get(0));
    }
    let c = connect(&ctx.db.superuser).await?;
    c.batch_execute(&format!(
        "SET ROLE tenantry_app; SELECT tenantry.set_tenant_context('{tenant}')"
    ))
    .await?;
    let role: Uuid = c
        .query_one(
            "SELECT tenantry.create_tenant_role($1, $2)",
            &[&tenant, &PERSON_ROLE],
        )
        .await?
        .get(0);
    c.execute(
        "SELECT tenantry.assign_tenant_permission($1, 'resources.read')",
        &[&role],
    )
    .await?;
    Ok(role)
}

/// Makes each keyed tenant's person a member through the API, as a team
/// does: the tenant's key invites their email with [`PERSON_ROLE`]
/// (`POST /v1/invitations`), the person accepts with their token
/// (`POST /v1/invitations/accept`); the first member owns the tenant.
/// Persons who are members already (a kept data set) are not invited again.
/// Returns each tenant's person's token.
async fn join_people(
    ctx: &Ctx,
    su: &Client,
    server: &ServerChild,
    keyed: &[Keyed],
    idp: &BenchIdp,
) -> anyhow::Result<Vec<String>> {
    let users: Vec<Uuid> = keyed.iter().map(|k| person_of(k.tenant.id).0).collect();
    let joined: Vec<Uuid> = su
        .query(
            "SELECT tenant_id FROM tenantry.tenant_members WHERE user_id = ANY ($1)",
            &[&users],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut tokens = Vec::with_capacity(keyed.len());
    for k in keyed {
        let (user, email) = person_of(k.tenant.id);
        let token = sign(idp, user, &email)?;
        if !joined.contains(&k.tenant.id) {
            let role = person_role(ctx, su, k.tenant.id).await?;
            let key = format!("Bearer {}", k.key);
            let (status, body) = http(
                &server.url,
                "POST",
                "/v1/invitations",
                &[("Authorization", &key)],
                Some(&serde_json::json!({ "email": email, "role_id": role })),
            )
            .await?;
            ensure!(status == 201, "inviting {email}: {status} {body}");
            let issued: serde_json::Value = serde_json::from_str(&body)?;
            let invitation = issued["token"]
                .as_str()
                .with_context(|| format!("no token in {body}"))?;
            let bearer = format!("Bearer {token}");
            let (status, body) = http(
                &server.url,
                "POST",
                "/v1/invitations/accept",
                &[("Authorization", &bearer)],
                Some(&serde_json::json!({ "token": invitation })),
            )
            .await?;
            ensure!(
                (200..300).contains(&status),
                "{email} accepting the invitation: {status} {body}"
            );
        }
        tokens.push(token);
    }
    Ok(tokens)
}

/// Every person reads their tenant's first resource with their token and
/// `X-Tenant-Id`, and is answered like a missing tenant in another one: the
/// figure measures reads that a person's membership allowed.
async fn check_people(
    server: &ServerChild,
    keyed: &[Keyed],
    tokens: &[String],
) -> anyhow::Result<()> {
    for (i, (k, token)) in keyed.iter().zip(tokens).enumerate() {
        let bearer = format!("Bearer {token}");
        let path = format!("/v1/resources/{}", k.tenant.resources[0]);
        let own = k.tenant.id.to_string();
        let (status, body) = http(
            &server.url,
            "GET",
            &path,
            &[("Authorization", &bearer), ("X-Tenant-Id", &own)],
            None,
        )
        .await?;
        ensure!(
            status == 200,
            "a person read their own tenant's resource: {status} {body}"
        );
        let other = keyed[(i + 1) % keyed.len()].tenant.id.to_string();
        if other != own {
            let (status, _) = http(
                &server.url,
                "GET",
                &path,
                &[("Authorization", &bearer), ("X-Tenant-Id", &other)],
                None,
            )
            .await?;
            ensure!(
                status == 404,
                "a person named a tenant they are not a member of and got {status}, not 404"
            );
        }
    }
    Ok(())
}

/// `api_point_read_jwt`: `api_point_read`'s requests with each tenant's
/// person's HS256 JWT and `X-Tenant-Id` instead of its key, next to the
/// same requests with the keys, on one server (request logging on, as
/// `api_point_read`'s) that accepts both, interleaved.
async fn jwt_figure(
    ctx: &mut Ctx,
    su: &Client,
    keyed: &[Keyed],
    admin_token: &str,
) -> anyhow::Result<()> {
    let idp = BenchIdp::generate();
    let server = ServerChild::start_with_idp(
        &ctx.db.server,
        &ctx.db.context_key,
        admin_token,
        SERVER_POOL,
        &idp,
    )?;
    let tokens = join_people(ctx, su, &server, keyed, &idp).await?;
    check_people(&server, keyed, &tokens).await?;

    let key_targets = point_targets(keyed);
    let person_targets: Vec<Target> = keyed
        .iter()
        .zip(&tokens)
        .flat_map(|(k, token)| {
            k.tenant.resources.iter().map(|r| Target {
                key: token.clone(),
                tenant: k.tenant.id,
                path: format!("/v1/resources/{r}"),
            })
        })
        .collect();
    let key_lua = wrk_script(&ctx.work, "point-key", "GET", &key_targets)?;
    let person_lua = wrk_script(&ctx.work, "point-person", "GET", &person_targets)?;
    for script in [&key_lua, &person_lua] {
        Wrk {
            url: &server.url,
            script,
            connections: ctx.opts.clients,
            seconds: 1,
        }
        .run(&ctx.tools)?;
    }
    let (mut person, mut key) = (Vec::new(), Vec::new());
    for run in 0..ctx.opts.runs {
        // Alternating order: drift of a shared machine falls on both sides.
        if run % 2 == 0 {
            person.push(ctx.wrk(&server.url, &person_lua)?);
            key.push(ctx.wrk(&server.url, &key_lua)?);
        } else {
            key.push(ctx.wrk(&server.url, &key_lua)?);
            person.push(ctx.wrk(&server.url, &person_lua)?);
        }
    }
    ctx.push(Figure::new(
        "api_point_read_jwt",
        "req/s",
        "GET /v1/resources/{id} (wrk) by each tenant's person: an HS256 JWT of the configured identity provider (verified, cached by SHA-256) and X-Tenant-Id (membership cached), the tenant's owner (or, where it had one, a member whose role reads resources)",
        person,
        Some((
            "the same requests with the tenants' API keys (api_point_read) to the same server, interleaved",
            key,
        )),
        RatioKind::ValueOverBaseline,
        Some(Goal::RatioAtLeast(0.9)),
    ));
    Ok(())
}

/// A key of `leaf` bound to a role holding [`WRITER_PERMISSIONS`], and the
/// verified context the server sets for its requests.
struct WriterKey {
    key_id: Uuid,
    /// `tenantry.context_value` of the key's requests: its role's
    /// permissions as a list (not ALL), as `enter_context` sets them.
    context: String,
}

/// Defines [`WRITE_PERMISSION`] (as the operator), then in `leaf` the role
/// and a key bound to it (as `tenantry_app` in an operator's session), once
/// per data set.
async fn writer_key(ctx: &Ctx, su: &Client, leaf: &BenchTenant) -> anyhow::Result<WriterKey> {
    su.execute(
        "SELECT tenantry.define_permission($1, 'Write invoices (tenantry-bench: authorize_write_policy)')",
        &[&WRITE_PERMISSION],
    )
    .await?;
    let c = connect(&ctx.db.superuser).await?;
    c.batch_execute(&format!(
        "SET ROLE tenantry_app; SELECT tenantry.set_tenant_context('{}')",
        leaf.id
    ))
    .await?;
    let role = super::keys::role_named(&c, leaf.id, WRITER_ROLE).await?;
    for permission in WRITER_PERMISSIONS {
        c.execute(
            "SELECT tenantry.assign_tenant_permission($1, $2)",
            &[&role, &permission],
        )
        .await?;
    }
    let find = "SELECT key_id FROM tenantry.api_keys WHERE tenant_id = $1 AND role_id = $2 ORDER BY created_at LIMIT 1";
    let key_id: Uuid = match su.query_opt(find, &[&leaf.id, &role]).await? {
        Some(r) => r.get(0),
        None => {
            su.execute(
                "UPDATE tenantry.tenants SET settings = settings || '{\"max_api_keys\": 1000000}' WHERE tenant_id = $1",
                &[&leaf.id],
            )
            .await?;
            c.execute(
                "SELECT tenantry.create_api_key('bench authorize', jsonb_build_object('role_id', $1::uuid))",
                &[&role],
            )
            .await?;
            su.query_one(find, &[&leaf.id, &role]).await?.get(0)
        }
    };
    let row = c
        .query_one("SELECT tenantry.key_permissions($1)", &[&key_id])
        .await?;
    let permissions: Vec<String> = row.get(0);
    let mut expected: Vec<String> = WRITER_PERMISSIONS.iter().map(|p| p.to_string()).collect();
    expected.sort();
    ensure!(
        permissions == expected,
        "the writer key holds {permissions:?}, not its role's {expected:?}"
    );
    let context: String = su
        .query_one(
            "SELECT tenantry.context_value($1, NULL, $2, $3, NULL, NULL)",
            &[&leaf.id, &format!("key:{key_id}"), &permissions],
        )
        .await?
        .get(0);
    Ok(WriterKey { key_id, context })
}

/// The two adopted tables: identical, one with `write_permission` (three
/// write policies calling `authorize()`), one without. Made once per
/// data set, emptied before each measurement.
pub(super) async fn ensure_write_tables(su: &Client) -> anyhow::Result<()> {
    su.execute(
        "SELECT tenantry.define_permission($1, 'Write invoices (tenantry-bench: authorize_write_policy)')",
        &[&WRITE_PERMISSION],
    )
    .await?;
    for (table, permission) in [
        ("writes_checked", Some(WRITE_PERMISSION)),
        ("writes_unchecked", None),
    ] {
        let adopted: bool = su
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM tenantry.tenant_tables WHERE table_id::text IN ($1, $2))",
                &[&format!("bench.{table}"), &table],
            )
            .await?
            .get(0);
        if !adopted {
            su.batch_execute(&format!(
                "DROP TABLE IF EXISTS bench.{table};
                 CREATE TABLE bench.{table} (
                     tenant_id  uuid NOT NULL,
                     id         uuid NOT NULL DEFAULT gen_random_uuid(),
                     amount     numeric(12, 2) NOT NULL,
                     note       text NOT NULL,
                     created_at timestamptz NOT NULL DEFAULT now(),
                     PRIMARY KEY (tenant_id, id));"
            ))
            .await?;
            su.execute(
                "SELECT tenantry.adopt_table($1::text::regclass, write_permission => $2)",
                &[&format!("bench.{table}"), &permission],
            )
            .await?;
        }
    }
    let policies: i64 = su
        .query_one(
            "SELECT count(*) FROM pg_policy WHERE polrelid = 'bench.writes_checked'::regclass
                 AND coalesce(pg_get_expr(polqual, polrelid), '') || coalesce(pg_get_expr(polwithcheck, polrelid), '') LIKE '%authorize%'",
            &[],
        )
        .await?
        .get(0);
    let unchecked: i64 = su
        .query_one(
            "SELECT count(*) FROM pg_policy WHERE polrelid = 'bench.writes_unchecked'::regclass
                 AND coalesce(pg_get_expr(polqual, polrelid), '') || coalesce(pg_get_expr(polwithcheck, polrelid), '') LIKE '%authorize%'",
            &[],
        )
        .await?
        .get(0);
    ensure!(
        policies > 0 && unchecked == 0,
        "bench.writes_checked has {policies} policies calling authorize(), bench.writes_unchecked {unchecked}"
    );
    su.batch_execute("TRUNCATE bench.writes_checked, bench.writes_unchecked")
        .await?;
    Ok(())
}

/// `PGOPTIONS` value: spaces in a setting are escaped (the permission list).
fn escaped(value: &str) -> String {
    value.replace('\\', "\\\\").replace(' ', "\\ ")
}

/// `authorize_write_policy`: pgbench single-row INSERT transactions as
/// `tenantry_app` in the writer key's context into the checked table, next
/// to the same into the unchecked one, alternating.
async fn write_figure(
    ctx: &mut Ctx,
    su: &Client,
    leaf: &BenchTenant,
    writer: &WriterKey,
) -> anyhow::Result<()> {
    ensure_write_tables(su).await?;
    let insert = |table: &str| {
        format!(
            "INSERT INTO bench.{table} (tenant_id, amount, note) VALUES ('{}', random() * 1000, 'bench');\n",
            leaf.id
        )
    };
    let checked = ctx.scripts("writes-checked", &[insert("writes_checked")])?;
    let unchecked = ctx.scripts("writes-unchecked", &[insert("writes_unchecked")])?;
    let options = format!(
        "-c role=tenantry_app -c synchronous_commit=off -c backtrace_functions={}",
        escaped(&writer.context)
    );
    for scripts in [&checked, &unchecked] {
        Pgbench {
            seconds: 1,
            ..ctx.pgbench_with(&ctx.db.superuser, scripts, Some(&options))
        }
        .run(&ctx.tools)?;
    }
    let (mut with, mut without) = (Vec::new(), Vec::new());
    for run in 0..ctx.opts.runs {
        if run % 2 == 0 {
            with.push(ctx.pgbench(&ctx.db.superuser, &checked, Some(&options))?);
            without.push(ctx.pgbench(&ctx.db.superuser, &unchecked, Some(&options))?);
        } else {
            without.push(ctx.pgbench(&ctx.db.superuser, &unchecked, Some(&options))?);
            with.push(ctx.pgbench(&ctx.db.superuser, &checked, Some(&options))?);
        }
    }
    // The inserts went through the policies, none was refused, both tables
    // hold only the tenant's rows.
    let row = su
        .query_one(
            "SELECT (SELECT count(*) FROM bench.writes_checked), (SELECT count(*) FROM bench.writes_unchecked),
                    (SELECT count(*) FROM bench.writes_checked WHERE tenant_id <> $1)
                  + (SELECT count(*) FROM bench.writes_unchecked WHERE tenant_id <> $1)",
            &[&leaf.id],
        )
        .await?;
    let (n_with, n_without, foreign): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
    if n_with == 0 || n_without == 0 || foreign != 0 {
        bail!("authorize_write_policy: {n_with} and {n_without} rows written, {foreign} of other tenants");
    }
    su.batch_execute("TRUNCATE bench.writes_checked, bench.writes_unchecked")
        .await?;
    ctx.push(Figure::new(
        "authorize_write_policy",
        "tps",
        &format!(
            "single-row INSERT transactions (pgbench) into an adopted table with write_permission => '{WRITE_PERMISSION}' (its write policies calling tenantry.authorize), as tenantry_app in the context of a key whose role holds {WRITER_PERMISSIONS:?}, synchronous_commit off"
        ),
        with,
        Some((
            "the same INSERTs into an identical adopted table without write_permission, same context, alternating",
            without,
        )),
        RatioKind::ValueOverBaseline,
        Some(Goal::RatioAtLeast(0.98)),
    ));
    Ok(())
}

/// A PL/pgSQL loop of `calls` evaluations of `condition` (over `p`, the
/// permission, and `k`, the key id, read from settings into variables so
/// the planner sees no constants); it records µs per iteration and how many
/// conditions were true, which proves what was evaluated.
fn loop_sql(condition: &str, calls: i32) -> String {
    format!(
        "DO $bench$
         DECLARE
             p text := current_setting('tenantry_bench.permission');
             k uuid := current_setting('tenantry_bench.key_id')::uuid;
             t0 timestamptz;
             n int := 0;
         BEGIN
             t0 := clock_timestamp();
             FOR i IN 1..{calls} LOOP
                 IF {condition} THEN
                     n := n + 1;
                 END IF;
             END LOOP;
             PERFORM set_config('tenantry_bench.us',
                                (extract(epoch FROM clock_timestamp() - t0) * 1e6 / {calls})::text, false),
                     set_config('tenantry_bench.true', n::text, false);
         END
         $bench$"
    )
}

/// Runs a loop; µs per iteration.
async fn time_loop(c: &Client, sql: &str, calls: i32, what: &str) -> anyhow::Result<f64> {
    c.batch_execute(sql).await?;
    let row = c
        .query_one(
            "SELECT current_setting('tenantry_bench.us')::float8, current_setting('tenantry_bench.true')::int",
            &[],
        )
        .await?;
    let (us, n): (f64, i32) = (row.get(0), row.get(1));
    ensure!(n == calls, "{what}: {n} of {calls} calls true");
    Ok(us)
}

/// `authorize_us`: one `tenantry.authorize(permission)` call in the writer
/// key's context, and `tenantry.key_permissions(key)` for the same key,
/// each minus the empty loop, in one session as `tenantry_app`.
async fn authorize_figure(ctx: &mut Ctx, writer: &WriterKey) -> anyhow::Result<()> {
    let calls: i32 = if ctx.opts.smoke { 2_000 } else { 200_000 };
    let c = connect(&ctx.db.superuser).await?;
    // The context is set as the operator, then the session acts as the server's role.
    c.execute(
        "SELECT set_config('backtrace_functions', $1, false),
                set_config('tenantry_bench.permission', $2, false),
                set_config('tenantry_bench.key_id', $3, false)",
        &[
            &writer.context,
            &WRITE_PERMISSION,
            &writer.key_id.to_string(),
        ],
    )
    .await?;
    c.batch_execute("SET ROLE tenantry_app").await?;
    let conditions = [
        ("empty loop", "p IS NOT NULL AND k IS NOT NULL"),
        ("authorize", "tenantry.authorize(p)"),
        ("key_permissions", "tenantry.key_permissions(k) IS NOT NULL"),
    ];
    // Warm-up: plans cached, pages in memory.
    let warm = calls.min(1000);
    for (what, condition) in conditions {
        time_loop(&c, &loop_sql(condition, warm), warm, what).await?;
    }
    let [empty, authorize, permissions] =
        conditions.map(|(_, condition)| loop_sql(condition, calls));
    let (mut auth, mut perms) = (Vec::new(), Vec::new());
    for _ in 0..ctx.opts.runs {
        let e = time_loop(&c, &empty, calls, "empty loop").await?;
        auth.push(time_loop(&c, &authorize, calls, "authorize").await? - e);
        perms.push(time_loop(&c, &permissions, calls, "key_permissions").await? - e);
    }
    ctx.push(Figure::new(
        "authorize_us",
        "µs",
        &format!(
            "tenantry.authorize('{WRITE_PERMISSION}') per call, as tenantry_app in the context of a key whose role holds {WRITER_PERMISSIONS:?}; PL/pgSQL loop of {calls} calls minus the empty loop"
        ),
        auth,
        Some((
            "tenantry.key_permissions(<that key>) per call (its role's permissions from the tables), same loop, same session",
            perms,
        )),
        RatioKind::ValueOverBaseline,
        Some(Goal::ValueAtMost(25.0)),
    ));
    Ok(())
}
