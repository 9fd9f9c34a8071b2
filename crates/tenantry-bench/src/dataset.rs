//! The benchmark data set, generated deterministically by SQL as a superuser: tenants in 3-level trees, resources, shares from 10% of tenants, request-log history; skipped when the database already holds the same set.

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use tokio_postgres::Client;

/// Sizes of the data set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Sizes {
    /// Tenants (groups of 10: a root, 3 children, 6 grandchildren).
    pub tenants: i32,
    /// Resources per tenant.
    pub resources: i32,
    /// Request-log rows in total, spread over the last 30 days.
    pub request_log_rows: i64,
}

impl Sizes {
    fn fingerprint(&self) -> String {
        format!(
            "v1 tenants={} resources={} request_log_rows={}",
            self.tenants, self.resources, self.request_log_rows
        )
    }
}

/// The deterministic id functions the loader and the figures share.
const FUNCTIONS: &str = "
CREATE SCHEMA IF NOT EXISTS bench;
CREATE OR REPLACE FUNCTION bench.tid(i int) RETURNS uuid
    LANGUAGE sql IMMUTABLE AS $$ SELECT md5('tenantry-bench-tenant-' || i)::uuid $$;
CREATE OR REPLACE FUNCTION bench.rid(i int, j int) RETURNS uuid
    LANGUAGE sql IMMUTABLE AS $$ SELECT md5('tenantry-bench-resource-' || i || '-' || j)::uuid $$;
-- Position in a group of 10: 0 is a root, 1..3 its children, 4..9 grandchildren (two per child).
CREATE OR REPLACE FUNCTION bench.parent(i int) RETURNS int
    LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN i % 10 = 0 THEN NULL
                WHEN i % 10 <= 3 THEN i - i % 10
                ELSE i - i % 10 + 1 + (i % 10 - 4) / 2 END $$;
CREATE TABLE IF NOT EXISTS bench.meta (k text PRIMARY KEY, v text NOT NULL);
";

/// Loads the data set unless the database already holds exactly this one.
/// Returns whether it loaded.
pub async fn ensure(client: &mut Client, sizes: Sizes, quiet: bool) -> anyhow::Result<bool> {
    client.batch_execute(FUNCTIONS).await?;
    let have: Option<String> = client
        .query_opt("SELECT v FROM bench.meta WHERE k = 'dataset'", &[])
        .await?
        .map(|r| r.get(0));
    if have.as_deref() == Some(sizes.fingerprint().as_str()) {
        return Ok(false);
    }
    if have.is_some() {
        anyhow::bail!(
            "this database holds another benchmark data set ({}); use a fresh database or data directory",
            have.unwrap_or_default()
        );
    }
    let n = sizes.tenants;
    let bar = if quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new((n as u64) * 2 + 2)
    };
    bar.set_style(
        ProgressStyle::with_template("{msg:<28} [{bar:40}] {pos}/{len} {elapsed}")
            .expect("valid template")
            .progress_chars("=> "),
    );

    bar.set_message("tenants");
    // Parents before children: roots, then children, then grandchildren.
    for level in ["i % 10 = 0", "i % 10 BETWEEN 1 AND 3", "i % 10 >= 4"] {
        client
            .execute(
                &format!(
                    "INSERT INTO tenantry.tenants (tenant_id, name, parent_id, created_at, updated_at)
                     SELECT bench.tid(i), 'bench tenant ' || i,
                            CASE WHEN bench.parent(i) IS NULL THEN NULL ELSE bench.tid(bench.parent(i)) END,
                            timestamptz '2026-01-01', timestamptz '2026-01-01'
                     FROM generate_series(0, $1 - 1) i WHERE {level}"
                ),
                &[&n],
            )
            .await
            .context("loading tenants")?;
    }
    bar.inc(1);

    bar.set_message("resources");
    let chunk = 50;
    let mut start = 0;
    while start < n {
        let end = (start + chunk).min(n);
        client
            .execute(
                "INSERT INTO tenantry.resources (tenant_id, id, name, data, created_at, updated_at)
                 SELECT bench.tid(i), bench.rid(i, j), 'resource ' || j,
                        jsonb_build_object('n', j, 'tenant', i, 'tags', jsonb_build_array('a', 'b')),
                        ts, ts
                 FROM generate_series($1::int, $2::int - 1) i, generate_series(0, $3::int - 1) j,
                      LATERAL (SELECT timestamptz '2026-01-01' + j * interval '1 minute' + i * interval '1 millisecond') t(ts)",
                &[&start, &end, &sizes.resources],
            )
            .await
            .context("loading resources")?;
        bar.inc((end - start) as u64);
        start = end;
    }

    bar.set_message("shares");
    // Every tenant at position 5 of its group (10% of tenants) shares its first
    // 10 resources with 10 tenants of other groups, and its resource 0 with tenant 0
    // (which thus has inbound shares from every sharer, besides 9 descendants).
    client
        .batch_execute(&format!(
            "INSERT INTO tenantry.shared_resources (tenant_id, resource_id, shared_with, shared_at)
             SELECT DISTINCT ON (s.i, j, tgt) bench.tid(s.i), bench.rid(s.i, j), bench.tid(tgt), timestamptz '2026-02-01'
             FROM generate_series(0, {n} - 1) s(i), generate_series(0, least(9, {r} - 1)) j,
                  LATERAL (SELECT (s.i + 10 * k + 3) % {n} FROM generate_series(1, 10) k) g(tgt)
             WHERE s.i % 10 = 5 AND tgt <> s.i;
             INSERT INTO tenantry.shared_resources (tenant_id, resource_id, shared_with, shared_at)
             SELECT bench.tid(i), bench.rid(i, 0), bench.tid(0), timestamptz '2026-02-01'
             FROM generate_series(0, {n} - 1) i WHERE i % 10 = 5
             ON CONFLICT DO NOTHING;
             UPDATE tenantry.resources r SET shared_with = s.targets
             FROM (SELECT tenant_id, resource_id, array_agg(shared_with ORDER BY shared_with) targets
                   FROM tenantry.shared_resources GROUP BY 1, 2) s
             WHERE r.tenant_id = s.tenant_id AND r.id = s.resource_id;",
            r = sizes.resources
        ))
        .await
        .context("loading shares")?;

    bar.set_message("request log");
    let per_tenant = (sizes.request_log_rows / n.max(1) as i64).max(1);
    let mut start = 0;
    while start < n {
        let end = (start + chunk).min(n);
        client
            .execute(
                "INSERT INTO tenantry.request_log (tenant_id, created_at, user_id, resource_id, method, route, status, latency_ms)
                 SELECT bench.tid(i), now() - (k * (interval '30 days' / $3::int8)) - i * interval '1 millisecond',
                        NULL, bench.rid(i, (k % $4::int8)::int), 'GET', '/v1/resources/{id}', 200, 1.5
                 FROM generate_series($1::int, $2::int - 1) i, generate_series(0::int8, $3::int8 - 1) k",
                &[&start, &end, &per_tenant, &(sizes.resources as i64)],
            )
            .await
            .context("loading the request log")?;
        bar.inc((end - start) as u64);
        start = end;
    }
    bar.set_message("analyze, metrics refresh");
    client
        .batch_execute("SELECT tenantry.refresh_tenant_metrics()")
        .await
        .context("refreshing metrics")?;
    // One statement each: VACUUM refuses to run in a multi-statement string.
    client
        .batch_execute("VACUUM (ANALYZE) tenantry.resources")
        .await?;
    client.batch_execute("ANALYZE").await?;
    client
        .execute(
            "INSERT INTO bench.meta (k, v) VALUES ('dataset', $1)",
            &[&sizes.fingerprint()],
        )
        .await?;
    bar.inc(1);
    bar.finish_with_message("data set loaded");
    Ok(true)
}

/// A tenant of the data set, with what the figures need to address it.
#[derive(Debug, Clone)]
pub struct BenchTenant {
    /// Its id.
    pub id: uuid::Uuid,
    /// Itself and its descendants (itself first).
    pub visible: Vec<uuid::Uuid>,
    /// A few of its resource ids.
    pub resources: Vec<uuid::Uuid>,
    /// Its verified context value (tenantry.context_value), as an operator sets it.
    pub context: String,
    /// Its part of a context (schema, subtree), as the server caches it.
    pub context_part: String,
}

/// Looks up tenants by index (ids, visible subtree, a few resource ids).
pub async fn tenants(
    client: &Client,
    indexes: &[i32],
    per_tenant: i32,
) -> anyhow::Result<Vec<BenchTenant>> {
    let mut out = Vec::with_capacity(indexes.len());
    for &i in indexes {
        let row = client
            .query_one(
                "SELECT bench.tid($1),
                        ARRAY[bench.tid($1)] || ARRAY(SELECT child_id FROM tenantry.tenant_hierarchy
                                                     WHERE parent_id = bench.tid($1) AND child_id <> bench.tid($1)
                                                     ORDER BY depth, child_id),
                        ARRAY(SELECT bench.rid($1, j) FROM generate_series(0, $2 - 1) j),
                        tenantry.context_value(bench.tid($1), NULL, NULL, NULL),
                        tenantry.tenant_context_part(bench.tid($1))",
                &[&i, &per_tenant],
            )
            .await?;
        out.push(BenchTenant {
            id: row.get(0),
            visible: row.get(1),
            resources: row.get(2),
            context: row.get(3),
            context_part: row.get(4),
        });
    }
    Ok(out)
}
