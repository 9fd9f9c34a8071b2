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

/// Sharing tenants and their targets are drawn from the first this many
/// tenants, so tenant 0's inbound shares (what the sharing figures read) do
/// not grow with the data set.
const SHARING_TENANTS: i32 = 1000;

impl Sizes {
    fn fingerprint(&self) -> String {
        let mut f = format!(
            "v1 tenants={} resources={} request_log_rows={}",
            self.tenants, self.resources, self.request_log_rows
        );
        if self.tenants > SHARING_TENANTS {
            f.push_str(&format!(" sharing_tenants={SHARING_TENANTS}"));
        }
        f
    }

    /// Tenants per loading statement: about 200,000 rows each.
    fn chunk(&self, rows_per_tenant: i64) -> i32 {
        let per = (200_000 / rows_per_tenant.max(1)).clamp(10, 100_000) as i32;
        per - per % 10
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
-- Tenant i's API key, derived from a fixed seed (the key's text) so the load
-- generator can rebuild it and no plaintext key is stored: tenantry's format,
-- tk_<12 hex prefix>_<64 hex secret>.
CREATE OR REPLACE FUNCTION bench.key(i int) RETURNS text
    LANGUAGE sql IMMUTABLE AS $$
    SELECT 'tk_' || substr(md5('tenantry-bench-key-prefix-' || i), 1, 12) || '_'
           || md5('tenantry-bench-key-a-' || i) || md5('tenantry-bench-key-b-' || i) $$;
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
    let bar = progress(quiet, (n as u64) * 3 + 2);
    let citus = as_loader(client).await?;

    bar.set_message("tenants");
    // Whole groups per statement (the chunk is a multiple of 10), parents
    // before children: roots, then children, then grandchildren. On Citus one
    // tenant per statement: in a multi-row insert the triggers of the
    // reference table run inside Citus's copy to each node, where they cannot
    // query distributed tables ("another command is already in progress").
    if citus {
        for i in 0..n {
            client
                .execute(
                    "INSERT INTO tenantry.tenants (tenant_id, name, parent_id, created_at, updated_at)
                     VALUES (bench.tid($1), 'bench tenant ' || $1,
                             CASE WHEN bench.parent($1) IS NULL THEN NULL ELSE bench.tid(bench.parent($1)) END,
                             timestamptz '2026-01-01', timestamptz '2026-01-01')",
                    &[&i],
                )
                .await
                .context("loading tenants")?;
            bar.inc(1);
        }
    } else {
        let chunk = sizes.chunk(1);
        for (start, end) in chunks(n, chunk) {
            for level in ["i % 10 = 0", "i % 10 BETWEEN 1 AND 3", "i % 10 >= 4"] {
                client
                    .execute(
                        &format!(
                            "INSERT INTO tenantry.tenants (tenant_id, name, parent_id, created_at, updated_at)
                             SELECT bench.tid(i), 'bench tenant ' || i,
                                    CASE WHEN bench.parent(i) IS NULL THEN NULL ELSE bench.tid(bench.parent(i)) END,
                                    timestamptz '2026-01-01', timestamptz '2026-01-01'
                             FROM generate_series($1::int, $2::int - 1) i WHERE {level}"
                        ),
                        &[&start, &end],
                    )
                    .await
                    .context("loading tenants")?;
            }
            bar.inc((end - start) as u64);
        }
    }

    bar.set_message("resources");
    // On Citus one tenant per statement: rows of many tenants at once have
    // their triggers lock tenants' rows from several nodes at once, which
    // Citus cancels as a distributed deadlock.
    let chunk = if citus {
        1
    } else {
        sizes.chunk(sizes.resources.into())
    };
    for (start, end) in chunks(n, chunk) {
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
    }

    bar.set_message("shares");
    // Every tenant at position 5 of its group among the first 1,000 (10% of
    // them) shares its first 10 resources with 10 tenants of other groups,
    // and its resource 0 with tenant 0 (which thus has 100 inbound shares,
    // besides 9 descendants).
    let n = n.min(SHARING_TENANTS);
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

    bar.inc(1);

    bar.set_message("request log");
    let n = sizes.tenants;
    let per_tenant = (sizes.request_log_rows / n.max(1) as i64).max(1);
    let chunk = if citus { 1 } else { sizes.chunk(per_tenant) };
    for (start, end) in chunks(n, chunk) {
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
    }
    bar.set_message("analyze, metrics refresh");
    client
        .batch_execute("SELECT tenantry.refresh_tenant_metrics()")
        .await
        .context("refreshing metrics")?;
    client.batch_execute("RESET ROLE").await?;
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

/// On a Citus coordinator the loading statements run as the owner role:
/// their triggers write as the owner (SECURITY DEFINER), and Citus refuses a
/// transaction that reaches one shard placement as two users; and one shard
/// after another (the triggers of rows on several shards at once, each
/// updating its tenant's counters, deadlock across the nodes). On a single
/// node they run as the superuser, as they always did. `RESET ROLE` ends it.
/// Returns whether the database is a Citus coordinator.
async fn as_loader(client: &Client) -> anyhow::Result<bool> {
    let citus = tenantry_db::citus::is_citus(client).await?;
    if citus {
        client
            .batch_execute(
                "GRANT USAGE ON SCHEMA bench TO tenantry_owner;
                 SET citus.multi_shard_modify_mode = 'sequential';
                 SET ROLE tenantry_owner",
            )
            .await?;
    }
    Ok(citus)
}

/// `[start, end)` ranges of `chunk` tenants covering `0..n`.
fn chunks(n: i32, chunk: i32) -> impl Iterator<Item = (i32, i32)> {
    (0..n)
        .step_by(chunk.max(1) as usize)
        .map(move |start| (start, (start + chunk).min(n)))
}

fn progress(quiet: bool, len: u64) -> ProgressBar {
    let bar = if quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(len)
    };
    bar.set_style(
        ProgressStyle::with_template("{msg:<28} [{bar:40}] {pos}/{len} {elapsed}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar
}

/// Gives every tenant of the data set the key `bench.key(i)`, inserted in
/// bulk as `create_api_key` stores keys (prefix, SHA-256 of the whole key,
/// `{"type": "tenant_key"}`; the triggers file the prefix, audit and count
/// it), once per data set. Creating a million keys one call at a time
/// would take minutes; this takes seconds per hundred thousand.
pub async fn ensure_keys(client: &Client, sizes: Sizes, quiet: bool) -> anyhow::Result<()> {
    let want = format!("v1 tenants={}", sizes.tenants);
    let have: Option<String> = client
        .query_opt("SELECT v FROM bench.meta WHERE k = 'keys'", &[])
        .await?
        .map(|r| r.get(0));
    if have.as_deref() == Some(want.as_str()) {
        return Ok(());
    }
    let n = sizes.tenants;
    let bar = progress(quiet, n as u64);
    bar.set_message("keys (derived from a seed)");
    // On Citus one key per statement (as tenants, in ensure).
    let chunk = if as_loader(client).await? { 1 } else { 50_000 };
    for (start, end) in chunks(n, chunk) {
        client
            .execute(
                "INSERT INTO tenantry.api_keys (tenant_id, prefix, key_hash, description, metadata, created_by)
                 SELECT bench.tid(i), substr(k, 4, 12), sha256(convert_to(k, 'UTF8')),
                        'benchmark (derived from a seed)', '{\"type\": \"tenant_key\"}', 'bench'
                 FROM generate_series($1::int, $2::int - 1) i, LATERAL (SELECT bench.key(i)) x(k)",
                &[&start, &end],
            )
            .await
            .context("loading keys")?;
        bar.inc((end - start) as u64);
    }
    client.batch_execute("RESET ROLE").await?;
    client
        .batch_execute("ANALYZE tenantry.api_keys, tenantry.api_key_lookup")
        .await?;
    client
        .execute(
            "INSERT INTO bench.meta (k, v) VALUES ('keys', $1)",
            &[&want],
        )
        .await?;
    bar.finish_with_message("keys loaded");
    Ok(())
}

/// Which tenants a targets file draws from.
#[derive(Debug, Clone, Copy)]
pub enum Spread {
    /// This many tenants spread over the whole data set (every position in
    /// the trees), each with its first 10 resources.
    Few(i32),
    /// Every tenant: each with its first 10 resources while that makes at
    /// most 2M targets, else one resource of each tenant (a pseudo-random one
    /// of its first 10).
    All,
}

/// Writes the point-read targets of `spread` as fixed-width records
/// ([`crate::load::RECORD_WIDTH`]: key, tenant id, path) for
/// [`crate::load::wrk_file_script`]; keys as [`ensure_keys`] made them.
/// Returns how many records it wrote.
pub async fn write_point_targets(
    client: &Client,
    sizes: Sizes,
    spread: Spread,
    path: &std::path::Path,
) -> anyhow::Result<u64> {
    use futures_util::TryStreamExt;
    use std::io::Write;

    let (n, r) = (sizes.tenants, sizes.resources.min(10));
    let select = match spread {
        Spread::Few(count) => {
            let step = (n / count.max(1)).max(1);
            format!(
                "SELECT t * {step} + t % least({step}, 10) AS i, j
                 FROM generate_series(0, {} - 1) t, generate_series(0, {r} - 1) j",
                count.min(n)
            )
        }
        Spread::All if i64::from(n) * i64::from(r) <= 2_000_000 => {
            format!("SELECT i, j FROM generate_series(0, {n} - 1) i, generate_series(0, {r} - 1) j")
        }
        Spread::All => {
            format!("SELECT i, abs(hashint4(i) % {r}) AS j FROM generate_series(0, {n} - 1) i")
        }
    };
    let stream = client
        .copy_out(&format!(
            "COPY (SELECT bench.key(i) || ' ' || bench.tid(i) || ' /v1/resources/' || bench.rid(i, j)
                   FROM ({select}) s) TO STDOUT"
        ))
        .await?;
    futures_util::pin_mut!(stream);
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    while let Some(bytes) = stream.try_next().await? {
        out.write_all(&bytes)?;
    }
    out.flush()?;
    let len = std::fs::metadata(path)?.len();
    let width = crate::load::RECORD_WIDTH as u64;
    anyhow::ensure!(
        len > 0 && len % width == 0,
        "targets file {}: {len} bytes, not {width}-byte records",
        path.display()
    );
    Ok(len / width)
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
                        tenantry.context_value(bench.tid($1), NULL, NULL, NULL, NULL, NULL),
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

#[cfg(test)]
mod tests {
    use super::{chunks, Sizes};

    #[test]
    fn loading_chunks_cover_every_tenant_once_in_whole_groups() {
        let sizes = Sizes {
            tenants: 1_000_000,
            resources: 10,
            request_log_rows: 1_000_000,
        };
        for per_tenant in [1, 10, 1000, 1_000_000] {
            let chunk = sizes.chunk(per_tenant);
            assert!(chunk >= 10 && chunk % 10 == 0, "{per_tenant}: {chunk}");
            let ranges: Vec<_> = chunks(sizes.tenants, chunk).collect();
            assert_eq!(ranges.first().map(|r| r.0), Some(0));
            assert_eq!(ranges.last().map(|r| r.1), Some(sizes.tenants));
            assert!(ranges.windows(2).all(|w| w[0].1 == w[1].0));
        }
        assert_eq!(
            chunks(25, 10).collect::<Vec<_>>(),
            [(0, 10), (10, 20), (20, 25)]
        );
    }
}
