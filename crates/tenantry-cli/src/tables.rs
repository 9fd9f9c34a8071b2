//! `tenantry table adopt|release|alter|list` and `tenantry doctor`: your own tables as tenant tables, through the migration role's connection (DATABASE_URL, or the embedded cluster's superuser).

use anyhow::Context;
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use tenantry_db::{tables, AdoptOptions, ExistingRows, TableProblem, TenantId, TenantTable};

use crate::{
    local,
    output::{json, outln, table},
    Target,
};

#[derive(Debug, Args)]
pub struct TableArgs {
    #[command(flatten)]
    target: Target,
    /// Print JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: TableCommand,
}

#[derive(Debug, Subcommand)]
enum TableCommand {
    /// Make one of your tables a tenant table (tenantry.adopt_table), or
    /// several with the same options at once (tenantry.adopt_tables: how
    /// tables linked by a foreign key switch --no-hierarchy together). Idempotent.
    Adopt {
        /// The table, as SQL names it: `invoices`, `app.invoices`; several
        /// are adopted in one transaction (their rows must have their tenants).
        #[arg(required = true, num_args = 1..)]
        tables: Vec<String>,
        /// Ancestors do not reach their descendants' rows. Without this flag or
        /// --hierarchy, an adopted table keeps what it has (a new one: hierarchy on).
        #[arg(long, conflicts_with = "hierarchy")]
        no_hierarchy: bool,
        /// Ancestors reach their descendants' rows.
        #[arg(long)]
        hierarchy: bool,
        /// Tenants may share rows read-only with other tenants (tenantry.share_row);
        /// the table needs a primary key (tenant_id, <one column>). Without this
        /// flag or --no-sharing, an adopted table keeps what it has (a new one: off).
        #[arg(long, conflicts_with = "no_sharing")]
        sharing: bool,
        /// Switch sharing off: revokes every share of the table's rows.
        #[arg(long)]
        no_sharing: bool,
        /// Inserts, updates and deletes need this permission (define it first
        /// with tenantry.define_permission); "" removes it. Without the flag an
        /// adopted table keeps what it has (a new one: none needed).
        #[arg(long)]
        write_permission: Option<String>,
        /// Rows already in the table belong to this tenant.
        #[arg(long, conflicts_with = "existing_rows_tenant_expression")]
        existing_rows_tenant: Option<TenantId>,
        /// Rows already in the table belong to the tenant this SQL expression
        /// over their columns yields.
        #[arg(long)]
        existing_rows_tenant_expression: Option<String>,
        /// Pages (8 kB) per committed batch of the backfill.
        #[arg(long, default_value_t = 1000)]
        pages_per_batch: u32,
        /// Leave schema tenants' tables of it (or their new policies) to
        /// `tenantry migrate` instead of bringing them along now.
        #[arg(long)]
        no_migrate: bool,
    },
    /// Give a table back to its previous owner as it was before its adoption
    /// (tenantry.release_table), or several in one transaction: a table
    /// another of them references goes after it. With --json:
    /// `{"released": "t"}` for one table, `{"released": ["a", "b"]}` for several.
    Release {
        /// The table, as SQL names it: `invoices`, `app."Line Items"`.
        #[arg(required = true, num_args = 1..)]
        tables: Vec<String>,
    },
    /// Change an adopted table's shape and every schema tenant's table of it
    /// (tenantry.alter_tenant_table, then the tenant-schema migration):
    /// `tenantry table alter invoices 'ADD COLUMN due_at date'`.
    Alter {
        /// The table, as SQL names it.
        table: String,
        /// What follows `ALTER TABLE <table>`, as one argument.
        change: String,
        /// Only record the change for the schema tenants' tables; `tenantry
        /// migrate` applies it later.
        #[arg(long)]
        no_migrate: bool,
    },
    /// List adopted tables.
    List,
}

/// Options of `tenantry doctor`.
#[derive(Debug, Args)]
pub struct DoctorArgs {
    #[command(flatten)]
    target: Target,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

pub async fn run(args: TableArgs) -> anyhow::Result<()> {
    // The database's notices too: what adoption took from PUBLIC, a
    // sequence every tenant shares.
    let (client, _cluster) =
        local::migration_client_with(&args.target, "manage tables", local::Notices::All).await?;
    match args.command {
        TableCommand::Adopt {
            tables: names,
            no_hierarchy,
            hierarchy,
            sharing,
            no_sharing,
            write_permission,
            existing_rows_tenant,
            existing_rows_tenant_expression,
            pages_per_batch,
            no_migrate,
        } => {
            let options = AdoptOptions {
                hierarchy: flag(hierarchy, no_hierarchy),
                sharing: flag(sharing, no_sharing),
                write_permission,
                existing_rows: match (existing_rows_tenant, existing_rows_tenant_expression) {
                    (Some(t), _) => ExistingRows::Tenant(t),
                    (None, Some(e)) => ExistingRows::Expression(e),
                    (None, None) => ExistingRows::Refuse,
                },
                pages_per_batch,
            };
            let name = names.join(", ");
            let bar = ProgressBar::hidden();
            let adopted = if let [one] = names.as_slice() {
                tables::adopt_table(&client, one, &options, |p| {
                    if bar.is_hidden() && !args.json {
                        bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
                        bar.set_style(
                            ProgressStyle::with_template(
                                "backfilling tenant_id {bar:40} {pos}/{len} pages, {msg}",
                            )
                            .expect("a valid template"),
                        );
                    }
                    bar.set_length(p.pages_total);
                    bar.set_position(p.pages_done);
                    bar.set_message(format!("{} rows", p.rows));
                })
                .await
                .map(|t| vec![t])
            } else {
                let names: Vec<&str> = names.iter().map(String::as_str).collect();
                tables::adopt_tables(&client, &names, &options).await
            };
            bar.finish_and_clear();
            let adopted = adopted?;
            // Schema tenants get their table of it, or its new policies, as a
            // tenant-schema step (as `table alter` does): until it runs, a
            // write permission would not hold in their tables.
            let behind = !tenantry_db::migrate::tenant_schemas_behind(&client, 1)
                .await?
                .is_empty();
            let mut client = client;
            let migrated = if behind && !no_migrate {
                Some(crate::migrate_tenant_schemas(&mut client).await.with_context(|| {
                    format!(
                        "{name} was adopted, but bringing the schema tenants' tables along stopped: run `tenantry migrate` to finish"
                    )
                })?)
            } else {
                None
            };
            warn_of_tier_breaking_keys(&client).await;
            if args.json {
                // The table as `table list --json` shows it (several: a list
                // of them), and what became of the schema tenants' tables:
                // how many schemas were brought along, or whether they wait
                // for `tenantry migrate`.
                let mut outs = adopted
                    .iter()
                    .map(|t| {
                        let mut out = serde_json::to_value(t)?;
                        out["tenant_schemas_migrated"] = serde_json::json!(migrated);
                        out["tenant_schemas_behind"] =
                            serde_json::json!(behind && migrated.is_none());
                        Ok(out)
                    })
                    .collect::<Result<Vec<_>, serde_json::Error>>()?;
                if outs.len() == 1 {
                    json(&outs.remove(0))?;
                } else {
                    json(&outs)?;
                }
            } else {
                for t in &adopted {
                    outln!("adopted {}", t.table);
                }
                print_tables(&adopted);
                match migrated {
                    Some(n) => outln!("{n} tenant schema(s) brought along"),
                    None if behind => outln!(
                        "schema tenants' schemas are behind a tenant-schema step: run `tenantry migrate` to bring them along"
                    ),
                    None => {}
                }
            }
        }
        TableCommand::Release { tables: names } => {
            tables::release_tables(&client, &names).await?;
            warn_of_tier_breaking_keys(&client).await;
            if args.json {
                if let [name] = names.as_slice() {
                    json(&serde_json::json!({ "released": name }))?;
                } else {
                    json(&serde_json::json!({ "released": names }))?;
                }
            } else {
                for name in &names {
                    outln!("released {name}");
                }
            }
        }
        TableCommand::Alter {
            table: name,
            change,
            no_migrate,
        } => {
            let step = tables::alter_tenant_table(&client, &name, &change).await?;
            let mut client = client;
            let migrated = match (step, no_migrate) {
                (Some(v), false) => Some(
                    crate::migrate_tenant_schemas(&mut client)
                        .await
                        .with_context(|| {
                            // (The change stays on the team's table and in
                            // its step: the cause below names the schema
                            // tenant whose table refused it, which `tenantry
                            // migrate` meets again until its rows are fixed,
                            // a new operator's review found.)
                            format!(
                                "{name} was altered and tenant-schema step {v} recorded (both stay), but bringing the \
                                 schema tenants' tables along stopped at the schema named below: when its rows break \
                                 the change (a constraint they do not meet), fix them first; then run `tenantry migrate` to finish"
                            )
                        })?,
                ),
                _ => None,
            };
            if args.json {
                json(&serde_json::json!({
                    "altered": name,
                    "tenant_schema_step": step,
                    "tenant_schemas_migrated": migrated,
                }))?;
            } else {
                outln!("altered {name}");
                match (step, migrated) {
                    (None, _) => outln!(
                        "no schema tenant has a table of it (its primary key is not (tenant_id, one column))"
                    ),
                    (Some(v), Some(n)) => outln!(
                        "tenant-schema step {v} recorded; {n} tenant schema(s) brought to it"
                    ),
                    (Some(v), None) => outln!(
                        "tenant-schema step {v} recorded; run `tenantry migrate` to apply it to the schema tenants' tables"
                    ),
                }
            }
        }
        TableCommand::List => {
            let list = tables::tenant_tables(&client).await?;
            if args.json {
                json(&list)?;
            } else {
                print_tables(&list);
            }
        }
    }
    Ok(())
}

fn print_tables(list: &[TenantTable]) {
    table(
        &[
            "TABLE",
            "HIERARCHY",
            "SHARING",
            "WRITE PERMISSION",
            "PREVIOUS OWNER",
            "ADOPTED AT",
            "BY",
        ],
        &list
            .iter()
            .map(|t| {
                vec![
                    t.table.clone(),
                    t.hierarchy.to_string(),
                    t.sharing.to_string(),
                    t.write_permission.clone().unwrap_or_else(|| "-".into()),
                    t.previous_owner.clone(),
                    t.adopted_at.to_rfc3339(),
                    t.adopted_by.clone(),
                ]
            })
            .collect::<Vec<_>>(),
    );
}

/// Checks every adopted table, every schema tenant's schema version and the
/// built-in roles of the logins acting for tenants (rule `login_roles`);
/// exits non-zero when one breaks a rule or is behind.
pub async fn doctor(args: DoctorArgs) -> anyhow::Result<()> {
    let (client, cluster) = local::migration_client(&args.target, "check tables").await?;
    // A lock held without end (a prepared transaction of SQL injected into
    // the app, which is one of the doctor's findings) made the doctor wait
    // for ever: it says it could not check instead (found by a DBA's review).
    client
        .batch_execute("SET lock_timeout = '10s'")
        .await
        .context("checking tables")?;
    // The rules are the database's (its table_problems()): a database whose
    // definitions are older than this build's is checked by its own, not by
    // this release's (found by a DBA's review: a new release's doctor said
    // "no problem" of a database its serve then refused). Said, so that an
    // upgrade's check runs where it means something.
    if let Err(tenantry_db::migrate::MigrateError::DefinitionsPending { names }) =
        tenantry_db::migrate::check(&client).await
    {
        eprintln!(
            "note: this database's definitions ({names}) differ from this build's, and the doctor checks by the database's rules: \
             to check by this release's before upgrading, run it after `tenantry migrate` on a copy (pg_dump, pg_restore into a scratch database)"
        );
    }
    let mut problems =
        local::as_migration_role(tables::table_problems(&client).await, "tenantry doctor")?;
    // Schema tenants whose schema has not run every tenant-schema step.
    let behind = tenantry_db::migrate::tenant_schemas_behind(&client, 1000).await;
    for behind in local::as_migration_role(behind, "tenantry doctor")? {
        problems.push(TableProblem {
            table: format!("{} (tenant {})", behind.schema_name, behind.tenant_id),
            rule: "tenant_schema_version".into(),
            problem: format!(
                "the tenant's schema ran tenant-schema steps up to {} of {}",
                behind.schema_version, behind.latest
            ),
            // SQL, as every other fix is (pasted into psql, the shell
            // command before it was a syntax error: found by an outside review).
            fix: format!(
                "SELECT tenantry.migrate_tenant_schema('{}'); -- or run tenantry migrate, which brings every schema along",
                behind.tenant_id
            ),
            // (its tenant's queries fail; no other tenant's rows are reached)
            severity: tenantry_db::ProblemSeverity::Error,
        });
    }
    // On a Citus coordinator: shards made or moved since the last migrate
    // (a split, the rebalancer's moves) got the policies without AS
    // RESTRICTIVE, which the database's own rules cannot see from the
    // coordinator.
    if tenantry_db::citus::is_citus(&client).await.unwrap_or(false)
        && tenantry_db::citus::is_distributed(&client)
            .await
            .unwrap_or(false)
    {
        match tenantry_db::citus::shards_with_permissive_copies(&client).await {
            Ok(tables) => {
                for (table, placements) in tables {
                    problems.push(TableProblem {
                        table,
                        rule: "citus_shard_policies".into(),
                        problem: format!(
                            "its restrictive policies are permissive on {placements} of its shard placements (Citus makes the shards of a split or a move, the rebalancer's included, with AS RESTRICTIVE left out): there each is OR'd with the tenant's policy and widens what tenants reach"
                        ),
                        fix: "-- run tenantry migrate as a superuser: it makes them restrictive on every placement again".into(),
                        severity: tenantry_db::ProblemSeverity::Error,
                    });
                }
            }
            Err(e) => eprintln!(
                "note: the shards' policies were not checked ({e}); Citus runs commands on placements for a superuser only, and every worker must answer"
            ),
        }
    }
    // Which database: a result for the wrong one misleads, green or not.
    let checked = if args.json {
        String::new()
    } else {
        match &cluster {
            Some(local) => {
                let place = local.location().display().to_string();
                if local.applied().is_empty() {
                    format!("the embedded cluster in {place}")
                } else {
                    format!(
                        "the embedded cluster in {place}, just created or migrated: set DATABASE_URL \
                         to check your own database"
                    )
                }
            }
            None => local::database_name(&client).await?,
        }
    };
    // Notes: what isolation allows but a team should know, on standard
    // error in either mode (a script reads the problems alone).
    let notes =
        local::as_migration_role(tables::shared_sequences(&client).await, "tenantry doctor")?;
    for note in &notes {
        eprintln!("note: {note}");
    }
    if args.json {
        json(&problems)?;
    } else if problems.is_empty() {
        let n = tables::tenant_tables(&client).await?.len();
        outln!("{n} adopted table(s), no problem found ({checked})");
    } else {
        print_problems(&problems);
    }
    if !problems.is_empty() {
        return Err(ProblemsFound {
            count: problems.len(),
            checked,
        }
        .into());
    }
    Ok(())
}

/// After an adoption or a release: a foreign key between a table family
/// and a table that is not one (the doctor's rule `tiers`, once schema
/// tenants exist) is said on standard error, with its fix, since `tenantry
/// serve` refuses to start on it. Adopting the referenced table first, then
/// the one that references it, is allowed for a migration file's order, and
/// releasing the one that references, which leaves the other adopted, went
/// through silently (a new operator's review).
async fn warn_of_tier_breaking_keys(client: &tokio_postgres::Client) {
    let Ok(rows) = client
        .query(
            "SELECT table_name, problem, fix FROM tenantry.table_problems() WHERE rule = 'tiers'",
            &[],
        )
        .await
    else {
        return;
    };
    for row in rows {
        let (table, problem, fix): (String, String, String) = (row.get(0), row.get(1), row.get(2));
        eprintln!(
            "warning: {table} [tiers]: {problem} (fix: {fix}); `tenantry serve` refuses to start until it is fixed"
        );
    }
}

/// The doctor found problems (exit status 1); any other error of the doctor
/// means it could not check (exit status 2), so that a script tells them apart.
#[derive(Debug)]
pub struct ProblemsFound {
    count: usize,
    /// Which database was checked ("" with --json).
    checked: String,
}

impl std::fmt::Display for ProblemsFound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} problem(s) with adopted tables, tenant schemas or login roles",
            self.count
        )?;
        if !self.checked.is_empty() {
            write!(f, " ({})", self.checked)?;
        }
        Ok(())
    }
}

impl std::error::Error for ProblemsFound {}

/// One block per problem: the table and rule, what is wrong, the SQL that
/// fixes it; a warning (served, `table_problems()`' severity) says so first.
fn print_problems(problems: &[TableProblem]) {
    for p in problems {
        if p.severity == tenantry_db::ProblemSeverity::Warning {
            outln!("warning: {p}");
        } else {
            outln!("{p}");
        }
    }
}

/// An option given as `--x` (true) or `--no-x` (false), or left out (`None`: kept).
fn flag(on: bool, off: bool) -> Option<bool> {
    match (on, off) {
        (true, _) => Some(true),
        (_, true) => Some(false),
        _ => None,
    }
}
