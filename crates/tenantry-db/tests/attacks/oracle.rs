//! `EXPLAIN ANALYZE` as an existence oracle (issue 10, finding 8), the probe
//! machinery: the attacks on tenantry's own tables (`explain`) and on an
//! adopted table (`adopted`) run their probes through [`assert_no_oracle`].
//!
//! Each probe is a pair of statements that differ only in a value: one names
//! a foreign thing that exists (an id, a tenant with rows, a name range, a key
//! prefix), the other the same shape of thing that does not. The attacker runs
//! both under `EXPLAIN (ANALYZE, BUFFERS)` as each tenant role, with the planner
//! switches it may set itself, and the two plans must be identical once the
//! probe values are replaced by `<probe>`. What remains visible to anyone (a
//! sequential scan's count of every row of a table) is the same for both, so
//! it compares equal too.

use tokio_postgres::Client;
use uuid::Uuid;

use crate::common::exec;
use crate::helpers::begin_as;

/// The tenant roles a server transaction (or a psql user) can switch to.
const ROLES: &[&str] = &["tenantry_app", "tenantry_app_own", "tenantry_app_shared"];

/// Planner switches a session may set itself, alone and together: each one
/// forces the planner off the path it would choose onto another index.
const SWITCHES: &[&[&str]] = &[
    &[],
    &["enable_bitmapscan"],
    &["enable_seqscan"],
    &["enable_seqscan", "enable_bitmapscan"],
    &["enable_seqscan", "enable_indexscan"],
    &[
        "enable_seqscan",
        "enable_bitmapscan",
        "enable_indexonlyscan",
    ],
    &[
        "enable_seqscan",
        "enable_bitmapscan",
        "enable_indexscan",
        "enable_indexonlyscan",
    ],
];

/// One probe: a statement with `$1` where the value goes (of type `ty`), and
/// the values of a foreign thing that exists and of one that does not.
pub struct Probe {
    sql: String,
    ty: &'static str,
    exists: String,
    missing: String,
    /// Also run with the value written into the statement (a custom plan).
    /// Not for ranges: their estimates differ with the value whatever exists,
    /// and estimates are a known, coarse side channel of their own.
    literal: bool,
}

pub fn probe(sql: &str, ty: &'static str, exists: impl ToString, missing: impl ToString) -> Probe {
    Probe {
        sql: sql.to_owned(),
        ty,
        exists: exists.to_string(),
        missing: missing.to_string(),
        literal: true,
    }
}

pub fn range(sql: &str, ty: &'static str, exists: impl ToString, missing: impl ToString) -> Probe {
    Probe {
        literal: false,
        ..probe(sql, ty, exists, missing)
    }
}

impl Probe {
    /// The statements the attacker runs for `value`: the prepared statement
    /// executed with a generic plan (the same plan for any value, so only the
    /// counters could differ), and the statement with the value written in.
    fn statements(&self, value: &str) -> Vec<String> {
        let quoted = format!("'{}'::{}", value.replace('\'', "''"), self.ty);
        let mut v = vec![format!("EXECUTE probe({quoted})")];
        if self.literal {
            v.push(self.sql.replace("$1", &quoted));
        }
        v
    }
}

/// The plan of `sql` as the attacker sees it, or its error, with `value`
/// scrubbed. A savepoint keeps the transaction usable after an error.
///
/// Buffer counts are part of what the attacker sees (PostgreSQL 18 shows
/// them with every EXPLAIN ANALYZE; earlier versions on request): the
/// statement runs once to warm the caches, as an attacker would, and its
/// second run is compared, since the first run's catalog reads differ with
/// the order of the probes, not with what exists (found running the suite on
/// PostgreSQL 18).
async fn plan(c: &tokio_postgres::Client, sql: &str, value: &str) -> String {
    exec(c, "SAVEPOINT probe").await;
    let explain =
        format!("EXPLAIN (ANALYZE, BUFFERS ON, COSTS OFF, TIMING OFF, SUMMARY OFF) {sql}");
    let _ = c.simple_query(&explain).await;
    exec(c, "ROLLBACK TO SAVEPOINT probe").await;
    let answer = c.simple_query(&explain).await;
    exec(
        c,
        if answer.is_ok() {
            "RELEASE SAVEPOINT probe"
        } else {
            "ROLLBACK TO SAVEPOINT probe"
        },
    )
    .await;
    let text = match answer {
        Ok(messages) => messages
            .iter()
            .filter_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
                _ => None,
            })
            .collect::<Vec<_>>()
            .join("\n"),
        Err(e) => format!(
            "error {}",
            e.as_db_error()
                .map(|d| format!("{}: {}", d.code().code(), d.message()))
                .unwrap_or_else(|| e.to_string())
        ),
    };
    text.lines()
        .map(shared_buffers_in_all)
        .collect::<Vec<_>>()
        .join("\n")
        .replace(value, "<probe>")
}

/// A `Buffers:` line with its shared blocks as one count: which of them
/// came from PostgreSQL's cache and which from the disk (and how many
/// dirty ones were written out to make room) depends on what other sessions
/// did to the cache meanwhile, not on what exists (seen with the suite's
/// tests running side by side: hit=1328 read=13 against hit=1332 read=9,
/// 1,341 blocks both). How many blocks a statement touches stays compared.
fn shared_buffers_in_all(line: &str) -> String {
    let Some(rest) = line.trim_start().strip_prefix("Buffers: shared ") else {
        return line.to_owned();
    };
    let indent = &line[..line.len() - line.trim_start().len()];
    let (shared, others) = rest.split_once(", ").unwrap_or((rest, ""));
    let mut blocks = 0u64;
    for part in shared.split_whitespace() {
        match part.split_once('=') {
            Some(("hit" | "read", n)) => blocks += n.parse::<u64>().unwrap_or(0),
            Some(("dirtied" | "written", _)) => {}
            _ => return line.to_owned(),
        }
    }
    if others.is_empty() {
        format!("{indent}Buffers: shared {blocks}")
    } else {
        format!("{indent}Buffers: shared {blocks}, {others}")
    }
}

/// Runs every probe as `attacker` (a tenant context on `app`, a session of
/// `tenantry_server` switched to `tenantry_app`) under each tenant role and
/// each set of planner switches; fails listing every probe whose plans tell a
/// foreign thing that exists from one that does not.
pub async fn assert_no_oracle(app: &Client, attacker: Uuid, probes: &[Probe]) {
    let oracles = oracles(app, attacker, probes).await;
    assert!(
        oracles.is_empty(),
        "{} probe(s) tell a foreign thing that exists from one that does not:\n\n{}",
        oracles.len(),
        oracles.join("\n\n")
    );
}

/// What [`assert_no_oracle`] checks: every probe, role and set of planner
/// switches whose plans told a foreign thing that exists from one that does
/// not, with both plans.
pub async fn oracles(app: &Client, attacker: Uuid, probes: &[Probe]) -> Vec<String> {
    let mut oracles = Vec::new();
    for role in ROLES {
        for switches in SWITCHES {
            begin_as(app, attacker).await;
            exec(app, &format!("SET LOCAL ROLE {role}")).await;
            // A prepared statement's generic plan is the same for every value.
            exec(app, "SET LOCAL plan_cache_mode = force_generic_plan").await;
            for s in *switches {
                exec(app, &format!("SET LOCAL {s} = off")).await;
            }
            for p in probes {
                exec(app, &format!("PREPARE probe({}) AS {}", p.ty, p.sql)).await;
                let forms = p
                    .statements(&p.exists)
                    .into_iter()
                    .zip(p.statements(&p.missing));
                for (exists, missing) in forms {
                    let mut seen_exists = plan(app, &exists, &p.exists).await;
                    let mut seen_missing = plan(app, &missing, &p.missing).await;
                    if seen_exists != seen_missing {
                        // Asked again, the other way round: an oracle tells
                        // them apart every time, while a buffer count moved
                        // once by the cluster's own work (a page pruned or
                        // its hint bits set between the runs, seen once on
                        // PostgreSQL 16 with the whole suite running) does not.
                        seen_missing = plan(app, &missing, &p.missing).await;
                        seen_exists = plan(app, &exists, &p.exists).await;
                    }
                    if seen_exists != seen_missing {
                        oracles.push(format!(
                            "{role} {switches:?} {} as {exists}\n--- exists:\n{seen_exists}\n--- missing:\n{seen_missing}",
                            p.sql
                        ));
                    }
                }
                exec(app, "DEALLOCATE probe").await;
            }
            exec(app, "ROLLBACK").await;
        }
    }
    oracles
}
