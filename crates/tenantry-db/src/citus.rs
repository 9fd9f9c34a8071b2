//! Citus: recognising a Citus coordinator, installing the Citus form of tenantry's schema (`citus.sql`: the tenant context carried to the workers, signed and bound to the distributed transaction), giving its worker nodes tenantry's roles, and distributing tenantry's schema after the first install (tenant tables by `tenant_id`, colocated with `resources` but for `idempotency_keys`; global tables as reference tables; functions on every node).
//!
//! What Citus 13 does with tenantry's schema, measured on a coordinator and
//! two workers, is in `docs/scale-out.md`. The rules here follow from it:
//!
//! - Roles are per cluster and Citus does not copy roles created inside a
//!   `DO` block (migration 0001 creates them so, idempotently). They are
//!   copied to every worker, with `LOGIN` there: Citus opens its worker
//!   connections as the current role.
//! - The first install runs with `citus.enable_ddl_propagation = off` (the
//!   migrations see only the coordinator, where every table is still local);
//!   [`distribute`] then hands the tables and functions to Citus.
//! - Distribution is a fixpoint: every step (one table, or one function) runs
//!   in a transaction of its own, and steps that failed are tried again after
//!   a pass that made progress, since policies call functions that must exist
//!   on the workers first and SQL functions name tables that must be
//!   distributed first.

use std::fmt;

use tokio_postgres::Client;

/// Tables that stay on the coordinator: the migration runner's bookkeeping,
/// and the operator's audit log, written by functions that run there alone
/// (a reference table's copies would each need the write).
const COORDINATOR_ONLY: &[&str] = &[
    "schema_migrations",
    "schema_definitions",
    "tenant_schema_steps",
    "operator_audit_log",
];

/// Tables every node needs whole: the tenant tree and the small global
/// catalogues. `tenants` has a `tenant_id` but every tenant table refers to
/// it, so it is a reference table, not a distributed one.
const REFERENCE_FIRST: &[&str] = &["tenants", "permissions"];

/// Settings of the distributing session (docs/scale-out.md says why each).
const SESSION: &str = "SET citus.enable_unsafe_triggers = on;
     SET citus.enable_local_reference_table_foreign_keys = off;
     SET citus.multi_shard_modify_mode = 'sequential';";

/// Whether the connected database has the `citus` extension.
pub async fn is_citus(client: &Client) -> Result<bool, tokio_postgres::Error> {
    Ok(client
        .query_opt(
            "SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'citus'",
            &[],
        )
        .await?
        .is_some())
}

/// Whether tenantry's tables are already in Citus's metadata.
pub async fn is_distributed(client: &Client) -> Result<bool, tokio_postgres::Error> {
    Ok(client
        .query_opt(
            "SELECT 1 FROM pg_dist_partition p JOIN pg_catalog.pg_class c ON c.oid = p.logicalrelid
             WHERE c.relnamespace = to_regnamespace('tenantry') LIMIT 1",
            &[],
        )
        .await?
        .is_some())
}

/// A step [`distribute`] could not take.
#[derive(Debug, Clone)]
pub struct Refusal {
    /// The table or function.
    pub object: String,
    /// Citus's error.
    pub error: String,
}

/// What [`distribute`] did.
#[derive(Debug, Default, Clone)]
pub struct Distribution {
    /// Tables made reference tables.
    pub reference: Vec<String>,
    /// Tables distributed by `tenant_id`.
    pub distributed: Vec<String>,
    /// Functions created on every node.
    pub functions: usize,
    /// Functions that stay on the coordinator (they read coordinator-only
    /// tables or the usage view), with Citus's reason.
    pub local_functions: Vec<Refusal>,
}

/// Tables Citus refused to distribute.
#[derive(Debug)]
pub struct DistributionError {
    /// Each refused table and why.
    pub tables: Vec<Refusal>,
}

impl fmt::Display for DistributionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Citus refused to distribute")?;
        for r in &self.tables {
            write!(f, "; {}: {}", r.object, r.error)?;
        }
        Ok(())
    }
}

impl std::error::Error for DistributionError {}

/// The Citus form of the schema (`citus.sql`): above all, the owner's
/// functions that set a transaction's context also carry it to the workers,
/// signed and bound to the distributed transaction, and the read functions
/// check it there. Runs on the coordinator after the first install's
/// migrations and before [`distribute`], which hands these definitions to
/// the workers; a single-node database keeps the plain definitions.
pub async fn install_forms(client: &Client) -> Result<(), tokio_postgres::Error> {
    // And the record of the schema's owners and privileges taken again once
    // these functions exist: the doctor (rule own_grants) named each as not
    // one of tenantry's, and serve refused to start on every cluster.
    let own_privileges = crate::migrate::definitions()
        .iter()
        .find(|d| d.name == "16_own_privileges.sql")
        .map_or("", |d| d.sql);
    client
        .batch_execute(&format!(
            "BEGIN; SET LOCAL citus.enable_ddl_propagation = off; {CITUS_SQL}\nRESET ROLE;\n{own_privileges}\nCOMMIT"
        ))
        .await
}

const CITUS_SQL: &str = include_str!("citus.sql");

/// Lets the roles that may insert into some columns of a distributed table
/// insert into its defaulted columns too, on the shards only. Citus fills
/// the defaults of an INSERT on the coordinator and sends every column to
/// the shard, where a column grant that leaves them out (`resources.id`, so
/// that a tenant cannot plant a row under an id it learned) refuses the
/// insert. The coordinator's table keeps its grants: a statement naming such
/// a column is still refused there, before it reaches a shard. Run after
/// [`distribute`]; shards made later (a split, an isolated tenant) copy the
/// coordinator's grants and need it again.
pub async fn grant_defaulted_columns(client: &Client) -> Result<(), DistributionError> {
    let refused = refusal;
    let grants = client
        .query(
            // Per placement, only where the grant is missing: a GRANT
            // rewrites the catalog row even when it changes nothing, and
            // every migrate on a distributed coordinator runs this.
            r#"SELECT c.oid::regclass::text,
                      format('DO $g$ BEGIN IF NOT (%s) THEN GRANT INSERT (%s) ON %%1$s TO %I; END IF; END $g$',
                             string_agg(format('has_column_privilege(%L, %%1$L::regclass, %L, ''INSERT'')', r.rolname, a.attname),
                                        ' AND ' ORDER BY a.attnum),
                             string_agg(quote_ident(a.attname), ', ' ORDER BY a.attnum), r.rolname)
               FROM pg_catalog.pg_class c
               JOIN pg_dist_partition p ON p.logicalrelid = c.oid AND p.partmethod = 'h'
               JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
                                              AND a.atthasdef AND a.attgenerated = ''
               JOIN pg_catalog.pg_roles r ON r.rolname LIKE 'tenantry\_%'
               WHERE c.relnamespace = 'tenantry'::regnamespace AND c.relkind = 'r'
                 AND EXISTS (SELECT 1 FROM pg_catalog.pg_attribute g, aclexplode(g.attacl) x
                             WHERE g.attrelid = c.oid AND x.grantee = r.oid AND x.privilege_type = 'INSERT')
                 AND NOT has_column_privilege(r.oid, c.oid, a.attnum, 'INSERT')
               GROUP BY c.oid, r.rolname
               ORDER BY 1, 2"#,
            &[],
        )
        .await
        .map_err(|e| refused("the catalog", e.to_string()))?;
    on_placements(client, &grants).await
}

/// A [`DistributionError`] of one object (a table, or "the catalog").
fn refusal(object: &str, error: String) -> DistributionError {
    DistributionError {
        tables: vec![Refusal {
            object: object.into(),
            error,
        }],
    }
}

/// Runs each row's command (column 1, `%s` the shard) on every placement of
/// its table (column 0); the first table with a placement that refused it
/// is the error.
async fn on_placements(
    client: &Client,
    commands: &[tokio_postgres::Row],
) -> Result<(), DistributionError> {
    for row in commands {
        answers_of_placements(client, &row.get::<_, String>(0), &row.get::<_, String>(1)).await?;
    }
    Ok(())
}

/// Each placement's answer to `command` (`%s` the shard) on `table`'s
/// placements; an error naming the table, with every refusal, when any
/// placement refused it or could not be asked.
async fn answers_of_placements(
    client: &Client,
    table: &str,
    command: &str,
) -> Result<Vec<String>, DistributionError> {
    let answers = client
        .query(
            "SELECT success, result FROM run_command_on_placements($1::text::regclass, $2)",
            &[&table, &command],
        )
        .await
        .map_err(|e| refusal(table, e.to_string()))?;
    let failed: Vec<String> = answers
        .iter()
        .filter(|r| !r.get::<_, bool>(0))
        .map(|r| r.get(1))
        .collect();
    if !failed.is_empty() {
        return Err(refusal(table, failed.join("; ")));
    }
    Ok(answers.iter().map(|r| r.get(1)).collect())
}

/// Makes every restrictive policy of a distributed table restrictive on its
/// shards too. Citus 13 copies a table's policies to its shards without `AS
/// RESTRICTIVE` (its policy deparser leaves the word out), so on the shards
/// each was one more permissive policy, OR'd with the tenant's: a member
/// holding `resources.read` alone wrote resources, and a tenant's SQL wrote
/// request-log rows of another tenant (found running the attack suite on a
/// cluster). Run after [`distribute`], after a tenant's isolation
/// ([`isolate_tenant`]), and by every `tenantry migrate` on a distributed
/// coordinator: shards made otherwise later (a split, a move, the
/// rebalancer's after a node was added) are made by the same deparser.
/// A placement whose policies are right is left alone (no DDL, no lock
/// beyond a catalog read), so running it again costs little.
pub async fn restrict_shard_policies(client: &Client) -> Result<(), DistributionError> {
    let commands = shard_policy_commands(
        client,
        "DO $r$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_policy WHERE polrelid = @SHARD_LITERAL@::regclass AND polname = %1$L AND NOT polpermissive) THEN DROP POLICY IF EXISTS %1$I ON @SHARD@; CREATE POLICY %1$I ON @SHARD@ AS RESTRICTIVE FOR %2$s TO %3$s%4$s%5$s; END IF; END $r$",
    )
    .await?;
    on_placements(client, &commands).await
}

/// The placements of distributed tables that lack one of the table's
/// restrictive policies as a restrictive one (shards made or moved after
/// the last `tenantry migrate`: see [`restrict_shard_policies`]), as
/// (table, placements), for the doctor; an error for a placement that
/// could not be asked (a worker down). Needs a superuser (Citus's
/// `run_command_on_placements` is not granted to other roles).
pub async fn shards_with_permissive_copies(
    client: &Client,
) -> Result<Vec<(String, i64)>, DistributionError> {
    let commands = shard_policy_commands(
        client,
        "SELECT count(*) FROM pg_catalog.pg_policy WHERE polrelid = @SHARD_LITERAL@::regclass AND polname = %1$L AND NOT polpermissive",
    )
    .await?;
    // One row per policy: a table's count is that of its policy that most
    // placements lack.
    let mut wrong: std::collections::BTreeMap<String, i64> = std::collections::BTreeMap::new();
    for row in &commands {
        let table: String = row.get(0);
        let lacking = answers_of_placements(client, &table, &row.get::<_, String>(1))
            .await?
            .iter()
            .filter(|answer| *answer != "1")
            .count() as i64;
        if lacking > 0 {
            let n = wrong.entry(table).or_default();
            *n = (*n).max(lacking);
        }
    }
    Ok(wrong.into_iter().collect())
}

/// One row per restrictive policy of a distributed table: the table and
/// `template` formatted with the policy's name (1), command (2), roles (3),
/// ` USING (…)` (4) and ` WITH CHECK (…)` (5), with `@SHARD@` and
/// `@SHARD_LITERAL@` left for the shard's name as an identifier and as a
/// literal. Citus passes each command through `format()` with the shard's
/// name, so every `%` of the policy (a `LIKE '%x'` in its condition) is
/// doubled first. Names in the expressions schema-qualified (the
/// placements' commands run with the workers' search path).
async fn shard_policy_commands(
    client: &Client,
    template: &str,
) -> Result<Vec<tokio_postgres::Row>, DistributionError> {
    let refused = |error: String| refusal("the catalog", error);
    client
        .batch_execute("SET search_path = pg_catalog")
        .await
        .map_err(|e| refused(e.to_string()))?;
    let policies = client
        .query(
            r#"SELECT c.oid::regclass::text,
                      replace(replace(replace(format($1,
                             p.polname,
                             CASE p.polcmd WHEN 'r' THEN 'SELECT' WHEN 'a' THEN 'INSERT' WHEN 'w' THEN 'UPDATE'
                                           WHEN 'd' THEN 'DELETE' ELSE 'ALL' END,
                             (SELECT string_agg(CASE WHEN r.oid = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(r.oid)) END, ', ')
                              FROM unnest(p.polroles) r(oid)),
                             ' USING (' || pg_get_expr(p.polqual, p.polrelid) || ')',
                             ' WITH CHECK (' || pg_get_expr(p.polwithcheck, p.polrelid) || ')'),
                              '%', '%%'), '@SHARD_LITERAL@', '%1$L'), '@SHARD@', '%1$s')
               FROM pg_policy p
               JOIN pg_class c ON c.oid = p.polrelid
               JOIN pg_dist_partition d ON d.logicalrelid = c.oid
               WHERE NOT p.polpermissive
               ORDER BY 1, 2"#,
            &[&template],
        )
        .await;
    client
        .batch_execute("RESET search_path")
        .await
        .map_err(|e| refused(e.to_string()))?;
    policies.map_err(|e| refused(e.to_string()))
}

/// The statement with which a tenant's server reads one resource on Citus
/// (`GET /v1/resources/{id}`): `$1` the id, `$2` the transaction's visible
/// subtree, which lets Citus send it to those tenants' shards alone. Public
/// so that the Citus tests can `EXPLAIN` the statement the server runs.
#[doc(hidden)]
pub fn resource_point_read() -> String {
    crate::resources::get_resource_routed_sql(crate::scope::Route::Pooled)
}

/// The statement with which a tenant's server lists its subtree's resources
/// on Citus (`GET /v1/resources`): `$6` the transaction's visible subtree,
/// which lets Citus send it to those tenants' shards alone (`$1`..`$5`: the
/// tenant, name prefix, keyset position and page size). Public so that the
/// Citus tests can `EXPLAIN` the statement the server runs.
#[doc(hidden)]
pub fn resource_listing() -> String {
    crate::resources::resource_listing_sql("ONLY tenantry.resources", "true")
}

/// Copies tenantry's roles to every worker (created when missing, with
/// `LOGIN` and the coordinator's BYPASSRLS and INHERIT attributes, their
/// memberships among each other, and their parameter privileges). Idempotent.
/// One command per `run_command_on_workers` call, each in its own
/// transaction: several in one statement deadlock on the workers.
///
/// The roles get `LOGIN` on the coordinator too: Citus copies a role to the
/// workers as the coordinator has it whenever a table it owns is
/// distributed or a node is added, and a role without LOGIN there would
/// lose it on every worker, where Citus connects as it
/// (docs/scale-out.md: restrict them with pg_hba.conf; they have no
/// password).
pub async fn prepare_workers(client: &Client) -> Result<(), tokio_postgres::Error> {
    let local: Vec<String> = client
        .query(
            r"SELECT format('ALTER ROLE %I WITH LOGIN', rolname) FROM pg_catalog.pg_roles
              WHERE rolname LIKE 'tenantry\_%' AND NOT rolcanlogin ORDER BY rolname",
            &[],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    for command in local {
        client.batch_execute(&command).await?;
    }
    let commands: Vec<String> = client
        .query(
            r#"SELECT cmd FROM (
                 SELECT 1 AS ord, r.rolname, format(
                     'DO $r$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = %L) THEN CREATE ROLE %I; END IF; END $r$',
                     r.rolname, r.rolname) AS cmd
                 FROM pg_catalog.pg_roles r WHERE r.rolname LIKE 'tenantry\_%'
                 UNION ALL
                 SELECT 2, r.rolname, format('ALTER ROLE %I WITH LOGIN %s %s', r.rolname,
                     CASE WHEN r.rolbypassrls THEN 'BYPASSRLS' ELSE 'NOBYPASSRLS' END,
                     CASE WHEN r.rolinherit THEN 'INHERIT' ELSE 'NOINHERIT' END)
                 FROM pg_catalog.pg_roles r WHERE r.rolname LIKE 'tenantry\_%'
                 UNION ALL
                 SELECT 3, g.rolname, format('GRANT %I TO %I', g.rolname, m.rolname)
                 FROM pg_catalog.pg_auth_members a
                 JOIN pg_catalog.pg_roles g ON g.oid = a.roleid
                 JOIN pg_catalog.pg_roles m ON m.oid = a.member
                 WHERE g.rolname LIKE 'tenantry\_%' AND m.rolname LIKE 'tenantry\_%'
                 UNION ALL
                 SELECT 4, p.parname, format('GRANT %s ON PARAMETER %s TO %I', x.privilege_type, p.parname, r.rolname)
                 FROM pg_catalog.pg_parameter_acl p, aclexplode(p.paracl) x
                 JOIN pg_catalog.pg_roles r ON r.oid = x.grantee
                 WHERE r.rolname LIKE 'tenantry\_%'
               ) c ORDER BY ord, rolname, cmd"#,
            &[],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    for command in commands {
        let failed: Vec<String> = client
            .query(
                "SELECT nodename || ':' || nodeport || ': ' || result FROM run_command_on_workers($1) WHERE NOT success",
                &[&command],
            )
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        if !failed.is_empty() {
            tracing::warn!(%command, ?failed, "a worker refused a role command");
        }
    }
    Ok(())
}

/// Citus's functions that show every tenant's data sizes (a shard holds one
/// isolated tenant's rows), and the disk's free space: taken from PUBLIC on
/// every node and given to pg_monitor, as `08_shared_state.sql` does with
/// PostgreSQL's own. (A shard move by a role that is no superuser reads the
/// target node's free space as itself: give that role pg_monitor.)
const CITUS_SIZES: [&str; 9] = [
    "citus_local_disk_space_stats()",
    "citus_table_size(regclass)",
    "citus_relation_size(regclass)",
    "citus_total_relation_size(regclass,boolean)",
    "citus_shard_sizes()",
    "citus_shard_cost_by_disk_size(bigint)",
    "worker_partitioned_relation_total_size(regclass)",
    "worker_partitioned_relation_size(regclass)",
    "worker_partitioned_table_size(regclass)",
];

/// Citus's entry points to other nodes, and its functions that reach past
/// one tenant's rows, taken from PUBLIC on the coordinator and on every
/// worker (found by reviews of the cluster as the server's login): the
/// `run_command_on_*` functions run SQL on the workers, where the app roles
/// could set any value and transaction id they like;
/// `citus_check_connection_to_node` opens connections from the database host
/// to any host and port (a port scan); the active-transaction functions list
/// every node's backends, of other databases too; the statistics resets wipe
/// the operator's per-tenant statistics. A worker with Citus's metadata has
/// them too, and a function in a query sent to a shard runs there unchecked
/// by the coordinator. Citus calls none of them as a tenant's role: the
/// deadlock detector runs as the superuser, `citus_check_cluster_node_health`
/// calls `citus_check_connection_to_node` as its caller, an operator.
const CITUS_ENTRY_POINTS: [&str; 12] = [
    "run_command_on_workers(text,boolean)",
    "run_command_on_all_nodes(text,boolean,boolean)",
    "run_command_on_placements(regclass,text,boolean)",
    "run_command_on_colocated_placements(regclass,regclass,text,boolean)",
    "run_command_on_shards(regclass,text,boolean)",
    "master_run_on_worker(text[],integer[],text[],boolean)",
    "citus_check_connection_to_node(text,integer)",
    "citus_check_cluster_node_health()",
    "get_global_active_transactions()",
    "get_all_active_transactions()",
    "citus_stat_tenants_local_reset()",
    "citus_stat_tenants_reset()",
];

/// Taken from PUBLIC on the coordinator only: Citus sends them to the
/// workers as the current role, so a worker keeps them for the roles it
/// connects as. `assign_distributed_transaction_id` would give a tenant's
/// transaction the distributed id of another one (to replay a context value
/// captured there); Citus sends it to the workers, and to the coordinator
/// itself as the owner role (`citus.sql` grants it that), which no app role
/// can become. `lock_shard_resources` checks only that the caller may write
/// the shard's table, which every app role may: a tenant held every shard's
/// lock in its transaction and stalled other tenants' multi-shard writes for
/// as long as it liked; Citus sends it to a reference table's first worker
/// before a write to it, never to the coordinator.
const WORKER_ONLY_BUILTINS: [&str; 2] = [
    "assign_distributed_transaction_id(integer,bigint,timestamp with time zone)",
    "lock_shard_resources(integer,bigint[])",
];

/// The statements that take from PUBLIC Citus's size functions (given to
/// pg_monitor) and entry points on every node, and on the coordinator
/// `WORKER_ONLY_BUILTINS` too; idempotent, and skipping what this Citus
/// version lacks.
fn citus_hardening(coordinator: bool) -> String {
    let list = |names: &[&str]| {
        names
            .iter()
            .map(|n| format!("'{n}'"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut revoked = list(&CITUS_ENTRY_POINTS);
    if coordinator {
        revoked = format!("{revoked}, {}", list(&WORKER_ONLY_BUILTINS));
    }
    format!(
        "DO $citus_hardening$ DECLARE
             f text;
             sizes text[] := ARRAY[{}]::text[];
         BEGIN
             FOREACH f IN ARRAY sizes || ARRAY[{revoked}]::text[] LOOP
                 CONTINUE WHEN to_regprocedure('pg_catalog.' || f) IS NULL;
                 EXECUTE format('REVOKE EXECUTE ON FUNCTION pg_catalog.%s FROM PUBLIC', f);
                 IF f = ANY (sizes) THEN
                     EXECUTE format('GRANT EXECUTE ON FUNCTION pg_catalog.%s TO pg_monitor', f);
                 END IF;
             END LOOP;
         END $citus_hardening$;",
        list(&CITUS_SIZES)
    )
}

/// Takes from PUBLIC on every worker what the migrations take from it in
/// the coordinator's database (`08_shared_state.sql`: other sessions'
/// activity and locks, the transaction counter, sizes, large objects) and
/// Citus's entry points to other nodes; and Citus's size functions on every
/// node. The migrations run on the coordinator alone (DDL propagation off),
/// and Citus checks no EXECUTE on the coordinator for a function in a query
/// it sends to a shard: the worker's privileges are the ones that count
/// there, and a worker's sessions carry every tenant's signed context in
/// their query text (docs/scale-out.md, "Threat model"). Idempotent; run by
/// every `migrate` on a Citus coordinator, so a node added since gets it.
pub async fn harden_nodes(client: &Client) -> Result<(), DistributionError> {
    let refused = |object: String, error: String| DistributionError {
        tables: vec![Refusal { object, error }],
    };
    let shared_state = crate::migrate::definitions()
        .iter()
        .find(|d| d.name == "08_shared_state.sql")
        .and_then(|d| worker_shared_state(d.sql))
        .ok_or_else(|| refused("08_shared_state.sql".into(), "not in this build".into()))?;
    client
        .batch_execute(&citus_hardening(true))
        .await
        .map_err(|e| refused("the coordinator".into(), e.to_string()))?;
    for command in [shared_state, citus_hardening(false)] {
        let failed: Vec<String> = client
            .query(
                "SELECT nodename || ':' || nodeport || ': ' || result FROM run_command_on_workers($1) WHERE NOT success",
                &[&command],
            )
            .await
            .map_err(|e| refused("the workers".into(), e.to_string()))?
            .iter()
            .map(|r| r.get(0))
            .collect();
        if !failed.is_empty() {
            return Err(refused(
                "taking shared state from PUBLIC on the workers".into(),
                failed.join("; "),
            ));
        }
    }
    // run_command_on_workers answers for the first statement of a command
    // only: a later one that failed rolled the whole command back on that
    // worker unseen. So what counts is checked: no worker lets the app role
    // use a built-in the coordinator does not, but what Citus itself sends
    // there (WORKER_ONLY_BUILTINS).
    let coordinator: String = client
        .query_one(APP_BUILTINS, &[])
        .await
        .map_err(|e| refused("the coordinator".into(), e.to_string()))?
        .get(0);
    let coordinator: std::collections::BTreeSet<&str> = coordinator.lines().collect();
    let workers = client
        .query(
            "SELECT nodename || ':' || nodeport, success, result FROM run_command_on_workers($1)",
            &[&APP_BUILTINS],
        )
        .await
        .map_err(|e| refused("the workers".into(), e.to_string()))?;
    for row in workers {
        let (node, success, result): (String, bool, String) = (row.get(0), row.get(1), row.get(2));
        let extra: Vec<&str> = result
            .lines()
            .filter(|b| success && !coordinator.contains(b) && !WORKER_ONLY_BUILTINS.contains(b))
            .collect();
        if !success || !extra.is_empty() {
            return Err(refused(
                format!("worker {node}"),
                if success {
                    format!("the app roles may still use {}", extra.join(", "))
                } else {
                    result
                },
            ));
        }
    }
    Ok(())
}

/// What of `08_shared_state.sql` a worker runs: its built-ins part, which
/// ends where the file switches to the owner role, and then the closing of
/// extension objects by the function the file defines after it. The
/// functions themselves are Citus's to copy: a worker refuses to define a
/// distributed function again ("operation is not allowed on this node"), and
/// that refusal, after the first statement of a command, rolled the whole
/// command back on every worker.
fn worker_shared_state(sql: &str) -> Option<String> {
    let (builtins, _) = sql.split_once("SET LOCAL ROLE tenantry_owner;")?;
    Some(format!(
        "{builtins}
         DO $close$ BEGIN
             IF to_regprocedure('tenantry.close_shared_extension_objects()') IS NOT NULL THEN
                 PERFORM tenantry.close_shared_extension_objects();
             END IF;
         END $close$;"
    ))
}

/// The built-ins of pg_catalog `tenantry_app` may call or read, a line each.
const APP_BUILTINS: &str = "SELECT coalesce(string_agg(x, E'\\n' ORDER BY x), '') FROM (
     SELECT p.oid::regprocedure::text AS x FROM pg_catalog.pg_proc p
     WHERE p.pronamespace = 'pg_catalog'::regnamespace
       AND pg_catalog.has_function_privilege('tenantry_app', p.oid, 'EXECUTE')
     UNION ALL
     SELECT c.oid::regclass::text FROM pg_catalog.pg_class c
     WHERE c.relnamespace = 'pg_catalog'::regnamespace AND c.relkind IN ('r', 'v')
       AND pg_catalog.has_table_privilege('tenantry_app', c.oid, 'SELECT')) s";

/// One thing to hand to Citus.
struct Step {
    object: String,
    kind: Kind,
    /// Statements of one transaction, each sent on its own: Citus forwards
    /// a DDL statement's whole query string to the workers.
    sql: Vec<String>,
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Reference,
    Distributed,
    Function,
}

/// Distributes tenantry's schema (see the module documentation). Idempotent:
/// what is in Citus's metadata already is skipped. Errs naming every table
/// Citus refused; functions it refused stay on the coordinator and are listed.
pub async fn distribute(client: &Client) -> Result<Distribution, DistributionError> {
    let steps = steps(client).await.map_err(|e| DistributionError {
        tables: vec![Refusal {
            object: "the catalog".into(),
            error: e.to_string(),
        }],
    })?;
    let mut done = Distribution::default();
    // Each step left with Citus's last refusal of it.
    let mut pending: Vec<(Step, String)> = steps.into_iter().map(|s| (s, String::new())).collect();
    loop {
        let mut progress = false;
        let mut left = Vec::new();
        if let Err(e) = client.batch_execute(SESSION).await {
            return Err(DistributionError {
                tables: vec![Refusal {
                    object: "the distributing session's settings".into(),
                    error: e.to_string(),
                }],
            });
        }
        for (step, _) in pending {
            match run_step(client, &step.sql).await {
                Ok(()) => {
                    progress = true;
                    match step.kind {
                        Kind::Reference => done.reference.push(step.object),
                        Kind::Distributed => done.distributed.push(step.object),
                        Kind::Function => done.functions += 1,
                    }
                }
                Err(e) => {
                    let error = e
                        .as_db_error()
                        .map(|d| d.message().to_owned())
                        .unwrap_or_else(|| e.to_string());
                    left.push((step, error));
                }
            }
        }
        pending = left;
        if !progress || pending.is_empty() {
            break;
        }
    }
    // The session goes on (the runner's last grants).
    let _ = client
        .batch_execute("RESET citus.enable_unsafe_triggers; RESET citus.enable_local_reference_table_foreign_keys; RESET citus.multi_shard_modify_mode")
        .await;
    let mut tables = Vec::new();
    for (step, error) in pending {
        let refusal = Refusal {
            object: step.object,
            error,
        };
        if step.kind == Kind::Function {
            done.local_functions.push(refusal);
        } else {
            tables.push(refusal);
        }
    }
    if tables.is_empty() {
        drop_local_copies(client).await?;
        Ok(done)
    } else {
        Err(DistributionError { tables })
    }
}

/// The rows distributing a table copied into its shards stay in the
/// coordinator's own file of it, where a tenant's purge never reaches them
/// (a database restored from one node, an adopted table distributed here):
/// `tenantry.citus_drop_local_copy` truncates them, for tenantry's tables
/// and the adopted ones (a partitioned table's partitions with it). Nothing
/// to do at the next run.
async fn drop_local_copies(client: &Client) -> Result<(), DistributionError> {
    client
        .batch_execute(
            "SELECT tenantry.citus_drop_local_copy(p.logicalrelid)
               FROM pg_dist_partition p
               JOIN pg_catalog.pg_class c ON c.oid = p.logicalrelid
              WHERE NOT c.relispartition
                AND (c.relnamespace = 'tenantry'::regnamespace
                     OR p.logicalrelid IN (SELECT r.table_id FROM tenantry.tenant_tables r))
              ORDER BY p.logicalrelid::regclass::text",
        )
        .await
        .map_err(|e| DistributionError {
            tables: vec![Refusal {
                object: "the coordinator's copies of distributed rows".into(),
                error: e
                    .as_db_error()
                    .map(|d| d.message().to_owned())
                    .unwrap_or_else(|| e.to_string()),
            }],
        })
}

/// Every table and function of the tenantry schema not yet in Citus's
/// metadata, in the order they are first tried: reference tables, then
/// `resources` (the colocation group), then the other tenant tables in the
/// order of their foreign keys, then functions.
async fn steps(client: &Client) -> Result<Vec<Step>, tokio_postgres::Error> {
    let tables = client
        .query(
            "SELECT c.relname::text,
                    EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a
                            WHERE a.attrelid = c.oid AND a.attname = 'tenant_id' AND NOT a.attisdropped),
                    -- tenant tables this one refers to: distributed first
                    (SELECT count(*) FROM pg_catalog.pg_constraint k
                     WHERE k.conrelid = c.oid AND k.contype = 'f' AND k.confrelid <> c.oid)
             FROM pg_catalog.pg_class c
             WHERE c.relnamespace = 'tenantry'::regnamespace AND c.relkind IN ('r', 'p') AND NOT c.relispartition
               AND NOT EXISTS (SELECT 1 FROM pg_dist_partition p WHERE p.logicalrelid = c.oid)
             ORDER BY 3, 1",
            &[],
        )
        .await?;
    let mut reference = Vec::new();
    let mut distributed = Vec::new();
    for row in &tables {
        let name: String = row.get(0);
        let has_tenant: bool = row.get(1);
        if COORDINATOR_ONLY.contains(&name.as_str()) {
            continue;
        }
        let qualified = format!("tenantry.{name}");
        if REFERENCE_FIRST.contains(&name.as_str()) || !has_tenant {
            reference.push(Step {
                sql: without_triggers(
                    &qualified,
                    &format!("SELECT create_reference_table('{qualified}')"),
                ),
                object: qualified,
                kind: Kind::Reference,
            });
        } else {
            let create = match name.as_str() {
                "resources" => format!(
                    "SELECT create_distributed_table('{qualified}', 'tenant_id', colocate_with => 'default')"
                ),
                // A colocation group of its own: an idempotent write claims
                // and completes its key as tenantry_app around a write made
                // as another role (tenantry_app_own, or the owner's
                // function), and Citus refuses to touch, as one role,
                // placements colocated with ones the transaction changed as
                // another. Nothing joins the keys with tenant tables. Only
                // after resources: a group made first would become the
                // default one that resources joins.
                "idempotency_keys" => format!(
                    "DO $d$ BEGIN
                         IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_dist_partition
                                        WHERE logicalrelid = 'tenantry.resources'::regclass) THEN
                             RAISE EXCEPTION 'relation resources is not distributed';
                         END IF;
                         PERFORM create_distributed_table('{qualified}', 'tenant_id', colocate_with => 'none');
                     END $d$"
                ),
                _ => format!(
                    "SELECT create_distributed_table('{qualified}', 'tenant_id', colocate_with => 'tenantry.resources')"
                ),
            };
            distributed.push(Step {
                sql: without_triggers(&qualified, &create),
                object: qualified,
                kind: Kind::Distributed,
            });
        }
    }
    // Reference tables in the order of REFERENCE_FIRST, then by name.
    reference.sort_by_key(|s| {
        REFERENCE_FIRST
            .iter()
            .position(|r| s.object == format!("tenantry.{r}"))
            .unwrap_or(REFERENCE_FIRST.len())
    });
    // resources first: the others colocate with it.
    distributed.sort_by_key(|s| s.object != "tenantry.resources");
    // The team's adopted tables (a database restored from a single node,
    // docs/scale-out.md): sharded by tenant_id like tenantry's own, and
    // colocated with them. Adopted on Citus, adopt_table distributes them.
    for row in client
        .query(
            "SELECT t.table_id::text FROM tenantry.tenant_tables t
             WHERE NOT EXISTS (SELECT 1 FROM pg_dist_partition p WHERE p.logicalrelid = t.table_id)
             ORDER BY 1",
            &[],
        )
        .await?
    {
        let table: String = row.get(0);
        distributed.push(Step {
            sql: without_triggers(
                &table,
                &format!(
                    "SELECT create_distributed_table({}, 'tenant_id', colocate_with => 'tenantry.resources')",
                    quote_literal(&table)
                ),
            ),
            object: table,
            kind: Kind::Distributed,
        });
    }
    let functions = client
        .query(
            "SELECT p.oid::regprocedure::text FROM pg_catalog.pg_proc p
             WHERE p.pronamespace = 'tenantry'::regnamespace AND p.prokind IN ('f', 'p')
               AND NOT EXISTS (SELECT 1 FROM pg_dist_object o
                               WHERE o.classid = 'pg_catalog.pg_proc'::regclass AND o.objid = p.oid)
             ORDER BY p.oid",
            &[],
        )
        .await?
        .iter()
        .map(|r| {
            let f: String = r.get(0);
            Step {
                sql: vec![format!(
                    "SELECT create_distributed_function({})",
                    quote_literal(&f)
                )],
                object: f,
                kind: Kind::Function,
            }
        })
        .collect::<Vec<_>>();
    // Functions first: the policies of the tables call them on the workers.
    Ok(functions
        .into_iter()
        .chain(reference)
        .chain(distributed)
        .collect())
}

/// One step's statements in a transaction of its own, rolled back on a refusal.
async fn run_step(client: &Client, sql: &[String]) -> Result<(), tokio_postgres::Error> {
    client.batch_execute("BEGIN").await?;
    for statement in sql {
        if let Err(e) = client.batch_execute(statement).await {
            client.batch_execute("ROLLBACK").await?;
            return Err(e);
        }
    }
    client.batch_execute("COMMIT").await
}

/// `create` with the table's own triggers off while Citus copies its rows
/// into the new shards: a database restored from a single node holds rows,
/// and the shards' triggers (hierarchy, audit, quotas, checks against
/// tables the workers do not have yet) must not run again for them. `table`
/// is a name PostgreSQL printed (quoted where needed).
fn without_triggers(table: &str, create: &str) -> Vec<String> {
    vec![
        format!("ALTER TABLE {table} DISABLE TRIGGER USER"),
        create.to_owned(),
        format!("ALTER TABLE {table} ENABLE TRIGGER USER"),
    ]
}

/// `s` as an SQL string literal (standard_conforming_strings, the default).
pub(crate) fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Where a tenant's rows live after [`isolate_tenant`]: one shard of each
/// tenant table (the shard of `resources` names the group), on one node.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TenantShard {
    /// The tenant.
    pub tenant_id: crate::TenantId,
    /// Its shard of `tenantry.resources`; every colocated table has a shard
    /// of the same hash range on the same node.
    pub shard_id: i64,
    /// The node holding the shards, `host:port` as in `pg_dist_node`.
    pub node: String,
    /// False when the tenant had its own shards already.
    pub newly_isolated: bool,
    /// True when the shards moved to the node asked for.
    pub moved: bool,
}

/// Why [`isolate_tenant`] did nothing.
#[derive(Debug, thiserror::Error)]
pub enum IsolateError {
    /// Not a Citus coordinator holding tenantry's distributed schema.
    #[error("this database is not a Citus coordinator with tenantry's schema distributed: run `tenantry migrate` on the coordinator first (docs/scale-out.md)")]
    NotDistributed,
    /// No such tenant (purged tenants included).
    #[error("tenant {0} not found")]
    NotFound(crate::TenantId),
    /// `to_node` names no active node that may hold shards.
    #[error("no active node {0} that may hold shards (pg_dist_node)")]
    UnknownNode(String),
    /// A move creates the shards on the other node as the owner of the
    /// tables, `tenantry_owner`, which may not create in these schemas (an
    /// adopted table's, such as `public` on PostgreSQL 15).
    #[error("moving the tenant's shards creates them on the other node as tenantry_owner, the owner of tenant tables, which may not create in schema {schemas}: as a superuser on the coordinator (Citus passes it to the workers) run {grants}, then move again")]
    OwnerCannotCreate {
        /// The schemas, comma-separated.
        schemas: String,
        /// The GRANT statements that let it.
        grants: String,
    },
    /// The new shards did not get the column grants of the others.
    #[error("the tenant's new shards did not get their column grants: {0}")]
    Grants(#[from] DistributionError),
    /// The database refused.
    #[error(transparent)]
    Db(#[from] tokio_postgres::Error),
}

/// Refuses ([`IsolateError::OwnerCannotCreate`], with the GRANTs) when
/// `tenantry_owner` may not create, on the node `host:port`, in a schema of
/// a table colocated with `resources`: a shard move creates the tables there
/// as their owner.
async fn owner_may_create_on(client: &Client, host: &str, port: i32) -> Result<(), IsolateError> {
    const CHECK: &str = "SELECT coalesce(string_agg(DISTINCT format('%I', n.nspname), ', '), '')
         FROM pg_dist_partition p
         JOIN pg_catalog.pg_class c ON c.oid = p.logicalrelid
         JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
         WHERE p.colocationid = (SELECT colocationid FROM pg_dist_partition
                                 WHERE logicalrelid = 'tenantry.resources'::regclass)
           AND NOT pg_catalog.has_schema_privilege('tenantry_owner', n.oid, 'CREATE')";
    let row = client
        .query_opt(
            "SELECT success, result FROM run_command_on_workers($1)
             WHERE nodename = $2 AND nodeport = $3",
            &[&CHECK, &host, &port],
        )
        .await?;
    // The coordinator itself is no worker: its own answer.
    let (success, schemas): (bool, String) = match row {
        Some(row) => (row.get(0), row.get(1)),
        None => (true, client.query_one(CHECK, &[]).await?.get(0)),
    };
    if !success {
        return Err(IsolateError::UnknownNode(format!(
            "{host}:{port} ({schemas})"
        )));
    }
    if schemas.is_empty() {
        return Ok(());
    }
    let grants = schemas
        .split(", ")
        .map(|s| format!("GRANT CREATE ON SCHEMA {s} TO tenantry_owner;"))
        .collect::<Vec<_>>()
        .join(" ");
    Err(IsolateError::OwnerCannotCreate { schemas, grants })
}

/// Gives one tenant shards of its own (Citus's `isolate_tenant_to_new_shard`
/// with CASCADE: every tenant table colocated with `resources` is split at
/// the tenant's hash value), then, when `to_node` (`host`, `port`) names
/// another node, moves that shard group there (`citus_move_shard_placement`:
/// a node of its own for a large tenant). Run as the migration role (a
/// superuser) on the coordinator. Idempotent: a tenant isolated already
/// keeps its shards, and a group already on `to_node` stays.
///
/// The rows are copied with `shard_transfer_mode => 'block_writes'`: writes
/// to the shard being split (the tenant's and those of the tenants sharing
/// it) wait until the copy ends, about 3.7 s for a 100,000-row tenant on the
/// test cluster (docs/scale-out.md). Citus's online mode, logical
/// replication, stalls on tenantry's tables: PostgreSQL 15's apply worker
/// refuses to write into a table with row-level security unless its role
/// bypasses it, and the role Citus creates for it does not, so the copy
/// never catches up once anybody writes during it.
pub async fn isolate_tenant(
    client: &Client,
    tenant: crate::TenantId,
    to_node: Option<(&str, u16)>,
) -> Result<TenantShard, IsolateError> {
    if !(is_citus(client).await? && is_distributed(client).await?) {
        return Err(IsolateError::NotDistributed);
    }
    let id = tenant.as_uuid();
    if client
        .query_opt(
            "SELECT 1 FROM tenantry.tenants WHERE tenant_id = $1",
            &[&id],
        )
        .await?
        .is_none()
    {
        return Err(IsolateError::NotFound(tenant));
    }
    let target = match to_node {
        None => None,
        Some((host, port)) => {
            let known = client
                .query_opt(
                    "SELECT 1 FROM pg_dist_node
                     WHERE nodename = $1 AND nodeport = $2 AND isactive AND shouldhaveshards",
                    &[&host, &i32::from(port)],
                )
                .await?;
            if known.is_none() {
                return Err(IsolateError::UnknownNode(format!("{host}:{port}")));
            }
            Some((host, i32::from(port)))
        }
    };
    let shard_of = "SELECT s.shardid, s.shardminvalue = s.shardmaxvalue
                    FROM pg_dist_shard s
                    WHERE s.shardid = get_shard_id_for_distribution_column('tenantry.resources', $1::uuid)";
    let row = client.query_one(shard_of, &[&id]).await?;
    let (mut shard_id, isolated): (i64, bool) = (row.get(0), row.get(1));
    let placement = "SELECT n.nodename::text, n.nodeport FROM pg_dist_placement p
                     JOIN pg_dist_node n ON n.groupid = p.groupid WHERE p.shardid = $1";
    if let Some((to_host, to_port)) = target {
        // A split keeps the tenant's shards on their node. A move creates
        // them on the target as the tables' owner: refused before anything
        // is split when the owner may not create there, so the tenant is
        // isolated and moved in one go or not at all.
        let row = client.query_one(placement, &[&shard_id]).await?;
        let (host, port): (String, i32) = (row.get(0), row.get(1));
        if (to_host, to_port) != (host.as_str(), port) {
            owner_may_create_on(client, to_host, to_port).await?;
        }
    }
    if !isolated {
        let row = client
            .query_one(
                "SELECT isolate_tenant_to_new_shard('tenantry.resources', $1::uuid, 'CASCADE',
                                                    shard_transfer_mode => 'block_writes')",
                &[&id],
            )
            .await?;
        shard_id = row.get(0);
    }
    let row = client.query_one(placement, &[&shard_id]).await?;
    let (mut host, mut port): (String, i32) = (row.get(0), row.get(1));
    let mut moved = false;
    if let Some((to_host, to_port)) = target {
        if (to_host, to_port) != (host.as_str(), port) {
            client
                .execute(
                    "SELECT citus_move_shard_placement($1, $2, $3, $4, $5,
                                                       shard_transfer_mode => 'block_writes')",
                    &[&shard_id, &host, &port, &to_host, &to_port],
                )
                .await?;
            (host, port, moved) = (to_host.to_owned(), to_port, true);
        }
    }
    if !isolated || moved {
        // New shards copy the coordinator's grants, not the shards' own,
        // and its policies without AS RESTRICTIVE.
        grant_defaulted_columns(client).await?;
        restrict_shard_policies(client).await?;
    }
    Ok(TenantShard {
        tenant_id: tenant,
        shard_id,
        node: format!("{host}:{port}"),
        newly_isolated: !isolated,
        moved,
    })
}

#[cfg(test)]
mod tests {
    use super::worker_shared_state;

    #[test]
    fn a_worker_runs_the_built_ins_part_of_shared_state_and_defines_no_function() {
        let file = crate::migrate::definitions()
            .iter()
            .find(|d| d.name == "08_shared_state.sql")
            .expect("08_shared_state.sql is a definition");
        let worker = worker_shared_state(file.sql).expect("the file switches to the owner role");
        assert!(worker.contains("pg_catalog.lo_unlink(oid)"));
        assert!(worker.contains("REVOKE SELECT ON pg_catalog.pg_locks"));
        assert!(worker.contains("PERFORM tenantry.close_shared_extension_objects()"));
        assert!(!worker.contains("CREATE OR REPLACE FUNCTION"));
        assert!(!worker.contains("SET LOCAL ROLE"));
    }
}
