//! pgrls, the outside RLS linter and Z3 tenant-isolation prover, on a freshly migrated database: `pgrls lint` reports no error and no warning, and `pgrls verify` finds no leak in the anon, cross-tenant and write modes and leaves no policy unproven except the few that are cross-tenant by design (listed below, each pinned to its exact predicate).
//!
//! The configuration (allowlists with their reasons, tenant identity columns) is
//! `pgrls.toml` at the workspace root. The pgrls binary is `$TENANTRY_PGRLS`, else
//! `target/pytools/bin/pgrls` (a venv that `.ci/run` creates with the pinned version);
//! without it these tests fail, they never pass silently.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    process::Command,
};

use serde_json::Value;
use tenantry_db::testing::TestDatabase;
use tokio_postgres::Client;

/// The pgrls version `pgrls.toml` was written for (rule ids and allowlist shapes change between versions).
const PGRLS_VERSION: &str = "0.57.1";

/// The functions that read the session's tenant identity (settings `app.current_tenant_id`,
/// `app.visible_tenant_ids`): verify treats them as the auth context (NULL for an anonymous
/// session, the session's own tenant for an authenticated one).
const AUTH_FUNCTIONS: [&str; 2] = ["tenantry.current_tenant_id", "tenantry.visible_tenant_ids"];

/// A policy as the catalog shows it: roles, USING, WITH CHECK.
type PolicyShape = (String, Option<String>, Option<String>);

const MODES: [&str; 3] = ["anon", "cross-tenant", "write"];

/// A policy that `pgrls verify` may leave UNVERIFIED, in the listed modes only, and only while
/// its roles and predicates are exactly these. Anything else unproven fails the test, and so
/// does every LEAK.
struct ByDesign {
    /// `schema.table`; `tenant_<hex>` stands for any schema-isolated tenant's schema.
    table: &'static str,
    policy: &'static str,
    modes: &'static [&'static str],
    roles: &'static str,
    using: Option<&'static str>,
    check: Option<&'static str>,
    why: &'static str,
}

const SUBTREE: &str = "(tenant_id = ANY (tenantry.visible_tenant_ids()))";
/// Why a hierarchy-aware read cannot be proven: pgrls 0.57.1 models `col = ANY (ARRAY[literals])`
/// only, not `= ANY (<function returning an array>)`, and in its cross-tenant model a parent
/// reading a descendant's row IS a read of another tenant's row, which tenantry allows on purpose.
const SUBTREE_WHY: &str = "hierarchy-aware by design: a tenant reads its own rows and its descendants' \
     (tenant_id = ANY (visible_tenant_ids())); pgrls cannot model `= ANY (function())`, and a \
     descendant's row is another tenant's row in its cross-tenant model (covered by attacks.rs and model.rs)";
const ADMIN_WHY: &str =
    "tenantry_admin is the cross-tenant operator role (TO tenantry_admin), and only with a proven \
     administrative context (USING tenantry.admin_context(), which the server's login cannot mint: \
     attacks/forging.rs, attacks/usage.rs); there is no tenant equality to prove, and the prover \
     cannot decide admin_context() over the signed setting";

const ANON_XT: &[&str] = &["anon", "cross-tenant"];
const ALL_MODES: &[&str] = &["anon", "cross-tenant", "write"];

const fn subtree_read(table: &'static str, policy: &'static str) -> ByDesign {
    ByDesign {
        table,
        policy,
        modes: ANON_XT,
        roles: "{tenantry_app}",
        using: Some(SUBTREE),
        check: None,
        why: SUBTREE_WHY,
    }
}

/// `tenant_isolation` of resources and its partitions, and of every table adopted with hierarchy.
const fn own_subtree(table: &'static str) -> ByDesign {
    ByDesign {
        table,
        policy: "tenant_isolation",
        modes: ALL_MODES,
        roles: "{tenantry_app_own}",
        using: Some(SUBTREE),
        check: Some(SUBTREE),
        why: SUBTREE_WHY,
    }
}

const BY_DESIGN: &[ByDesign] = &[
    subtree_read("tenantry.api_keys", "api_keys_read_subtree"),
    subtree_read("tenantry.member_roles", "member_roles_read_subtree"),
    subtree_read("tenantry.role_permissions", "role_permissions_read_subtree"),
    subtree_read("tenantry.roles", "roles_read_subtree"),
    subtree_read("tenantry.shared_resources", "shares_of_my_resources"),
    subtree_read("tenantry.tenant_members", "members_read_subtree"),
    subtree_read("tenantry.tenants", "tenant_self_and_descendants"),
    ByDesign {
        table: "tenantry.tenant_hierarchy",
        policy: "hierarchy_within_subtree",
        modes: ANON_XT,
        roles: "{tenantry_app}",
        using: Some(
            "((child_id = ANY (tenantry.visible_tenant_ids())) AND (parent_id = ANY (tenantry.visible_tenant_ids())))",
        ),
        check: None,
        why: SUBTREE_WHY,
    },
    // The partitioned parent, its pooled partition (once it carries the parent's policies)
    // and every schema-isolated tenant's partition.
    own_subtree("tenantry.resources"),
    own_subtree("tenantry.resources_pooled"),
    own_subtree("tenant_<hex>.resources"),
    // The tables of the team's own that database() adopts with hierarchy (adopt_table makes the
    // very policy resources has); public.notes, adopted without hierarchy, must be proven.
    own_subtree("public.projects"),
    own_subtree("public.invoices"),
    // Ancestors see the impersonation sessions of their descendants' members.
    subtree_read("tenantry.impersonations", "impersonations_read_subtree"),
    ByDesign {
        table: "tenantry.tenants",
        policy: "admin_all_tenants",
        modes: ANON_XT,
        roles: "{tenantry_admin}",
        using: Some("tenantry.admin_context()"),
        check: None,
        why: ADMIN_WHY,
    },
    // Administrators change any tenant, but only in a transaction whose
    // administrative work was proven (a verified administrative context,
    // which the server's login cannot mint: attacks/forging.rs).
    ByDesign {
        table: "tenantry.tenants",
        policy: "admin_manages_tenants",
        modes: &["write"],
        roles: "{tenantry_admin}",
        using: Some("tenantry.admin_context()"),
        check: Some("tenantry.admin_context()"),
        why: ADMIN_WHY,
    },
    ByDesign {
        table: "tenantry.tenant_hierarchy",
        policy: "admin_whole_hierarchy",
        modes: ANON_XT,
        roles: "{tenantry_admin}",
        using: Some("tenantry.admin_context()"),
        check: None,
        why: ADMIN_WHY,
    },
    ByDesign {
        table: "tenantry.audit_log",
        policy: "admin_all_audit",
        modes: ANON_XT,
        roles: "{tenantry_admin}",
        using: Some("tenantry.admin_context()"),
        check: None,
        why: ADMIN_WHY,
    },
    // The operator's audit log: what operators did to every tenant at once (02_tenants.sql).
    ByDesign {
        table: "tenantry.operator_audit_log",
        policy: "admin_reads_operator_audit",
        modes: ANON_XT,
        roles: "{tenantry_admin}",
        using: Some("tenantry.admin_context()"),
        check: None,
        why: ADMIN_WHY,
    },
    // The record of purges: ids no tenant holds any more (14_offboarding.sql).
    ByDesign {
        table: "tenantry.purged_tenants",
        policy: "admin_reads_purged_tenants",
        modes: ANON_XT,
        roles: "{tenantry_admin}",
        using: Some("tenantry.admin_context()"),
        check: None,
        why: ADMIN_WHY,
    },
    ByDesign {
        table: "tenantry.request_log",
        policy: "request_log_append",
        modes: &["write"],
        roles: "{tenantry_logger}",
        using: None,
        check: Some("tenantry.admin_context()"),
        why: "the request logger (INSERT only, no SELECT/UPDATE/DELETE) appends batched rows of every \
              tenant in the server writer's proven administrative context; the server stamps tenant_id \
              from the verified key",
    },
];

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The pgrls binary: `$TENANTRY_PGRLS`, else `target/pytools/bin/pgrls`; checked to be the pinned version.
fn pgrls() -> PathBuf {
    let install = format!(
        "python3 -m venv target/pytools && target/pytools/bin/pip install pgrls=={PGRLS_VERSION} \
         (from the workspace root; .ci/run does this), or point TENANTRY_PGRLS at a pgrls {PGRLS_VERSION} binary"
    );
    let bin = std::env::var_os("TENANTRY_PGRLS")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/pytools/bin/pgrls"));
    assert!(
        bin.is_file(),
        "pgrls is not installed at {}, and this test needs it: {install}",
        bin.display()
    );
    let out = Command::new(&bin)
        .arg("--version")
        .output()
        .unwrap_or_else(|e| panic!("running {} --version: {e}", bin.display()));
    let version = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && version.trim().ends_with(PGRLS_VERSION),
        "{} is {:?}, but pgrls.toml is written for pgrls {PGRLS_VERSION}: {install}",
        bin.display(),
        version.trim()
    );
    bin
}

/// A fresh migrated database holding one schema-isolated tenant (so its run-time partition is
/// checked too) and three tables of a team's own adopted with `tenantry.adopt_table` (with
/// hierarchy; with hierarchy and sharing; with sharing only), so what adoption makes is proven
/// too, with the
/// schemas to scan: `tenantry`, that tenant's `tenant_<hex>` and `public`.
async fn database() -> (TestDatabase, Client, Vec<String>) {
    let db = TestDatabase::new().await;
    let client = db.superuser_client().await;
    client
        .batch_execute(
            "SET ROLE tenantry_admin;
             SELECT tenantry.create_tenant('silo', NULL, 'schema');
             RESET ROLE;",
        )
        .await
        .expect("creating a schema-isolated tenant");
    client
        .batch_execute(
            "CREATE TABLE public.projects (tenant_id uuid NOT NULL, id uuid NOT NULL DEFAULT gen_random_uuid(),
                                           name text NOT NULL, PRIMARY KEY (tenant_id, id));
             SELECT tenantry.adopt_table('public.projects');
             CREATE TABLE public.invoices (tenant_id uuid NOT NULL, id bigserial, amount numeric NOT NULL,
                                           PRIMARY KEY (tenant_id, id));
             SELECT tenantry.adopt_table('public.invoices', hierarchy => true, sharing => true);
             CREATE TABLE public.notes (tenant_id uuid NOT NULL, id uuid NOT NULL, body text,
                                        PRIMARY KEY (tenant_id, id));
             SELECT tenantry.adopt_table('public.notes', hierarchy => false, sharing => true);",
        )
        .await
        .expect("adopting tables of the team's own");
    let schemas: Vec<String> = client
        .query(
            "SELECT nspname FROM pg_namespace
             WHERE nspname IN ('tenantry', 'public')
                OR nspname IN (SELECT schema_name FROM tenantry.tenants WHERE isolation = 'schema')
             ORDER BY nspname <> 'tenantry', nspname",
            &[],
        )
        .await
        .expect("listing schemas")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        schemas.len(),
        3,
        "expected tenantry, public and one tenant schema: {schemas:?}"
    );
    (db, client, schemas)
}

/// Runs pgrls with `args` against `db` and the workspace's `pgrls.toml`, scanning `schemas`
/// (the connection string goes through `DATABASE_URL`, not the command line); returns the
/// parsed JSON report.
async fn run_pgrls(db: &TestDatabase, schemas: &[String], args: &[&str]) -> Value {
    let bin = pgrls();
    let root = workspace_root();
    // pgrls.toml names a schema tenant's tables `tenant_<hex>.…` (their schema
    // is random): this run's copy names the test tenant's schema instead.
    let config = std::fs::read_to_string(root.join("pgrls.toml")).expect("reading pgrls.toml");
    let tenant_schema = schemas
        .iter()
        .find(|s| s.starts_with("tenant_"))
        .expect("a tenant schema");
    let config_path = std::env::temp_dir().join(format!(
        "tenantry-pgrls-{}-{tenant_schema}.toml",
        std::process::id()
    ));
    std::fs::write(&config_path, config.replace("tenant_<hex>", tenant_schema))
        .expect("writing pgrls config");
    let mut cmd = Command::new(&bin);
    cmd.args(args)
        .arg("--config")
        .arg(&config_path)
        .args(["--schemas", &schemas.join(","), "--format", "json"])
        .env("DATABASE_URL", db.superuser_url())
        .current_dir(&root);
    let what = format!("pgrls {}", args.join(" "));
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .expect("pgrls task")
        .unwrap_or_else(|e| panic!("running {}: {e}", bin.display()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "{what} (exit {:?}) did not print a JSON report ({e}):\n{stdout}\n{}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// `schema.table` with a schema-isolated tenant's schema written `tenant_<hex>`.
fn generic_table(table: &str) -> String {
    match table.split_once('.') {
        Some((schema, rest))
            if schema.len() == 27
                && schema.starts_with("tenant_")
                && schema[7..].bytes().all(|b| b.is_ascii_hexdigit()) =>
        {
            format!("tenant_<hex>.{rest}")
        }
        _ => table.to_string(),
    }
}

#[tokio::test]
async fn pgrls_lint_reports_no_error_and_no_warning() {
    let (db, _client, schemas) = database().await;
    let report = run_pgrls(&db, &schemas, &["lint"]).await;
    let violations = report["violations"].as_array().expect("violations array");
    let failing: Vec<String> = violations
        .iter()
        .filter(|v| matches!(v["severity"].as_str(), Some("error" | "warning")))
        .map(|v| {
            format!(
                "{} {} {}: {}",
                v["severity"].as_str().unwrap_or("?"),
                v["rule_id"].as_str().unwrap_or("?"),
                v["location"].as_str().unwrap_or("?"),
                // The first sentence says what is wrong; `pgrls explain <rule>` says the rest.
                v["message"]
                    .as_str()
                    .unwrap_or("")
                    .split(". ")
                    .next()
                    .unwrap_or("")
            )
        })
        .collect();
    assert!(
        failing.is_empty(),
        "pgrls lint: {} finding(s) at error or warning level (fix the SQL, or allowlist the object \
         in pgrls.toml with its reason if it is right by design):\n{}",
        failing.len(),
        failing.join("\n")
    );
    assert_eq!(report["summary"]["errors"], 0, "{:#}", report["summary"]);
    assert_eq!(report["summary"]["warnings"], 0, "{:#}", report["summary"]);
}

#[tokio::test]
async fn pgrls_verify_proves_every_tenant_table_isolated_in_every_mode() {
    let (db, client, schemas) = database().await;

    // Every table that holds tenant rows must be under RLS, so that verify looks at it at all.
    let tenant_tables: BTreeSet<String> = client
        .query(
            "SELECT DISTINCT n.nspname || '.' || c.relname
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'tenant_id' AND NOT a.attisdropped
             WHERE c.relkind IN ('r', 'p') AND n.nspname = ANY ($1)",
            &[&schemas],
        )
        .await
        .expect("listing tenant tables")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(
        tenant_tables.len() > 10,
        "too few tenant tables: {tenant_tables:?}"
    );

    // The by-design list holds only while each policy is exactly as described.
    let mut actual: BTreeMap<(String, String), PolicyShape> = BTreeMap::new();
    for r in client
        .query(
            "SELECT schemaname || '.' || tablename, policyname, roles::text, qual, with_check
             FROM pg_policies WHERE schemaname = ANY ($1)",
            &[&schemas],
        )
        .await
        .expect("listing policies")
    {
        actual.insert(
            (generic_table(r.get(0)), r.get(1)),
            (r.get(2), r.get(3), r.get(4)),
        );
    }

    let mut problems = Vec::new();
    let mut unused: BTreeSet<(usize, &str)> = BTreeSet::new();
    for (i, d) in BY_DESIGN.iter().enumerate() {
        for m in d.modes {
            unused.insert((i, m));
        }
    }
    for mode in MODES {
        let mut args = vec!["verify", "--mode", mode];
        for f in AUTH_FUNCTIONS {
            args.extend(["--auth-function", f]);
        }
        let report = run_pgrls(&db, &schemas, &args).await;
        let tables = report["tables"].as_array().expect("tables array");
        let verified: BTreeSet<&str> = tables.iter().filter_map(|t| t["table"].as_str()).collect();
        for t in &tenant_tables {
            if !verified.contains(t.as_str()) {
                problems.push(format!(
                    "{mode}: tenant table {t} is not verified (no row-level security?)"
                ));
            }
        }
        for t in tables {
            let table = t["table"].as_str().unwrap_or("?");
            let verdict = t["verdict"].as_str().unwrap_or("?");
            if verdict == "isolated" {
                continue;
            }
            let policies = t["policies"].as_array().cloned().unwrap_or_default();
            if policies.is_empty() {
                problems.push(format!("{mode}: {table} is {verdict}: {}", t["note"]));
            }
            for p in policies {
                let policy = p["policy"].as_str().unwrap_or("?");
                let pverdict = p["verdict"].as_str().unwrap_or("?");
                if pverdict == "isolated" {
                    continue;
                }
                let key = (generic_table(table), policy.to_string());
                let allowed = BY_DESIGN.iter().enumerate().find(|(_, d)| {
                    d.table == key.0 && d.policy == key.1 && d.modes.contains(&mode)
                });
                match (pverdict, allowed) {
                    ("unverified", Some((i, d))) => {
                        unused.remove(&(i, mode));
                        let want = (
                            d.roles.to_string(),
                            d.using.map(str::to_string),
                            d.check.map(str::to_string),
                        );
                        match actual.get(&key) {
                            Some(got) if *got == want => {
                                eprintln!("{mode}: {table}.{policy} unverified, by design: {}", d.why)
                            }
                            got => problems.push(format!(
                                "{mode}: {table}.{policy} is unverified, which is accepted only while it is \
                                 TO {} USING {:?} WITH CHECK {:?}; it is now {got:?}",
                                d.roles, d.using, d.check
                            )),
                        }
                    }
                    _ => problems.push(format!(
                        "{mode}: {table}.{policy} is {pverdict}: {} {}",
                        p["reason"], p["witness"]
                    )),
                }
            }
        }
    }
    for (i, mode) in unused {
        let d = &BY_DESIGN[i];
        // Entries for objects this schema does not have (yet) are fine; a policy that exists
        // and is now proven should leave the list.
        if actual.contains_key(&(d.table.to_string(), d.policy.to_string())) {
            eprintln!(
                "note: {mode}: {}.{} is now proven isolated; remove that mode from its BY_DESIGN entry",
                d.table, d.policy
            );
        }
    }
    assert!(
        problems.is_empty(),
        "pgrls verify: {} problem(s) (a LEAK needs a SQL fix; a policy left unproven needs a SQL fix or, if it \
         is cross-tenant by design, a BY_DESIGN entry in this file with its reason):\n{}",
        problems.len(),
        problems.join("\n")
    );
}
