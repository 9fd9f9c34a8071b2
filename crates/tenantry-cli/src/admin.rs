//! Operator commands: `tenant` (including the online `tenant move` between tiers, and offboarding in `export`), `key`, `role`, `usage`. They act through the library's admin scope (tenants) or a tenant scope with actor `cli` (keys, roles, usage), against DATABASE_URL or the embedded cluster (also while a server runs on it).

use std::time::Duration;

use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tenantry_db::{
    Database, Isolation, MoveProgress, NewTenant, RoleId, TenantContext, TenantId, TenantScope,
    TenantSettings, TenantStatus, UserId,
};

use crate::{
    local::{self, LocalCluster},
    output::{json, minute, opt, outln, table},
    Target,
};

/// Audit actor of CLI actions: `cli:` and who runs them, `TENANTRY_ACTOR`
/// when set (a name of your own, e.g. `alice`), else the system user and the
/// host (`cli:alice@ops-1`). It was `cli` for every operator alike, so the
/// audit log could not say which person acted (found by an audit review).
/// The login name of this process's user when the environment names none
/// (a systemd unit, `docker exec`: every audit row read `cli:unknown@…`, a
/// new operator's review): its uid from /proc, its name from /etc/passwd
/// (`uid1000` when it has none there).
fn login_of_this_process() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .next()?
        .to_owned();
    let named = std::fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|passwd| {
            passwd.lines().find_map(|line| {
                let mut fields = line.split(':');
                let name = fields.next()?;
                (fields.nth(1)? == uid).then(|| name.to_owned())
            })
        });
    Some(named.unwrap_or_else(|| format!("uid{uid}")))
}

pub fn actor() -> &'static str {
    static ACTOR: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    ACTOR.get_or_init(|| {
        let named = |var: &str| std::env::var(var).ok().filter(|v| !v.trim().is_empty());
        let who = named("TENANTRY_ACTOR").unwrap_or_else(|| {
            let user = named("USER")
                .or_else(|| named("LOGNAME"))
                .or_else(login_of_this_process)
                .unwrap_or_else(|| "unknown".to_owned());
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
                .filter(|h| !h.is_empty())
                .or_else(|| named("HOSTNAME"));
            match host {
                Some(host) => format!("{user}@{host}"),
                None => user,
            }
        });
        let who: String = who
            .trim()
            .chars()
            .filter(|c| !c.is_control())
            .take(120)
            .collect();
        format!("cli:{who}")
    })
}

#[derive(Debug, Args)]
pub struct TenantArgs {
    #[command(flatten)]
    target: Target,
    /// Print JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: TenantCommand,
}

#[derive(Debug, Subcommand)]
enum TenantCommand {
    /// Create a tenant.
    Create {
        /// Display name.
        name: String,
        /// Parent tenant id.
        #[arg(long)]
        parent: Option<TenantId>,
        /// `shared` (default) or `schema`.
        #[arg(long, default_value = "shared", value_parser = parse_isolation)]
        isolation: Isolation,
        /// Settings as JSON, e.g. '{"max_resources": 1000}'.
        // Boxed: settings (quotas, limits, rate, metadata) outweigh every other command.
        #[arg(long, value_parser = parse_settings)]
        settings: Option<Box<TenantSettings>>,
    },
    /// List tenants, by id; `--after <last id shown>` for the next page.
    List {
        /// At most this many (1 to 10000).
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(i64).range(1..=10_000))]
        limit: i64,
        /// Only tenants whose id sorts after this one (the last of the previous page).
        #[arg(long)]
        after: Option<TenantId>,
    },
    /// Show one tenant.
    Show {
        /// The tenant's id.
        tenant: TenantId,
    },
    /// Suspend a tenant (its keys get 403; data is kept).
    Suspend {
        /// The tenant's id.
        tenant: TenantId,
    },
    /// Re-activate a suspended tenant.
    Activate {
        /// The tenant's id.
        tenant: TenantId,
    },
    /// Delete a tenant (terminal; data and audit are kept until it is purged).
    Delete {
        /// The tenant's id.
        tenant: TenantId,
    },
    /// Export every row a tenant owns (resources, shares it made, roles,
    /// members, keys without their hashes, invitations, audit, request log,
    /// adopted tables) from one consistent snapshot, as a gzip'd tar of
    /// NDJSON files with a manifest of row counts and SHA-256 checksums. Needs
    /// the migration role (DATABASE_URL of a superuser or a member of
    /// tenantry_owner), or the embedded cluster.
    Export {
        /// The tenant's id.
        tenant: TenantId,
        /// Where to write the archive; `-` for stdout. Default: tenant-<id>.tar.gz.
        #[arg(long)]
        out: Option<std::path::PathBuf>,
    },
    /// Restore an exported tenant, as the id it had (into a database where
    /// it never was) or a new one; the archive is checked against its
    /// manifest first, and everything is written in one transaction. Needs
    /// the migration role, like export.
    Import {
        /// The archive `tenant export` wrote.
        archive: std::path::PathBuf,
        /// Import under this id instead of the exported one.
        #[arg(long = "as")]
        as_id: Option<TenantId>,
    },
    /// Remove a deleted tenant for good once its grace period is over
    /// (tenantry.purge_policy, 30 days by default): every row, its schema and
    /// every share; the id is never given out again. With --due, every
    /// deleted tenant whose grace period is over (children first), each in
    /// a transaction of its own: for a daily cron job.
    Purge {
        /// The tenant's id.
        #[arg(required_unless_present = "due", conflicts_with = "due")]
        tenant: Option<TenantId>,
        /// Purge every deleted tenant whose grace period is over; one that is
        /// refused (a child not yet due, a tier move under way) is listed as
        /// skipped with the reason, and the others go on.
        #[arg(long)]
        due: bool,
    },
    /// Move a tenant to the other tier online: its rows are copied in
    /// batches while it keeps working, then the cut-over holds back its own
    /// writes only. An interrupted move resumes when run again.
    Move {
        /// The tenant's id.
        tenant: TenantId,
        /// `schema` (its own schema) or `shared` (the pooled tables).
        #[arg(long, value_parser = parse_isolation, required_unless_present = "abort")]
        to: Option<Isolation>,
        /// Rows copied per transaction.
        #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(i32).range(1..))]
        batch_rows: i32,
        /// Give up a move under way instead: the tenant stays where it was.
        #[arg(long, conflicts_with = "to")]
        abort: bool,
    },
    /// On a Citus cluster: give a large tenant shards of its own (every
    /// tenant table is split at its hash value), optionally on a node of its
    /// own. Writes to the shard being split wait while its rows are copied
    /// (seconds for 100,000 rows). Needs the migration role on the
    /// coordinator (docs/scale-out.md).
    Isolate {
        /// The tenant's id.
        tenant: TenantId,
        /// Move its shards to this worker, `host:port` as in pg_dist_node.
        #[arg(long, value_parser = parse_node)]
        to_node: Option<(String, u16)>,
    },
}

/// `--to-node host:port`.
fn parse_node(s: &str) -> Result<(String, u16), String> {
    let (host, port) = s
        .rsplit_once(':')
        .ok_or_else(|| format!("{s:?}: expected host:port"))?;
    let port = port
        .parse()
        .map_err(|_| format!("{port:?}: not a port number"))?;
    if host.is_empty() {
        return Err(format!("{s:?}: expected host:port"));
    }
    Ok((host.to_owned(), port))
}

#[derive(Debug, Args)]
pub struct KeyArgs {
    #[command(flatten)]
    target: Target,
    /// Print JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: KeyCommand,
}

#[derive(Debug, Subcommand)]
enum KeyCommand {
    /// Create a key for a tenant; the key is printed once.
    Create {
        /// The tenant's id.
        tenant: TenantId,
        /// A note for people (shown by `list`).
        #[arg(long, default_value = "")]
        description: String,
        /// Bind to a role (the key gets exactly its permissions).
        #[arg(long)]
        role: Option<RoleId>,
        /// Bind to a member.
        #[arg(long)]
        user: Option<UserId>,
        /// Expiry, RFC 3339.
        #[arg(long)]
        expires_at: Option<chrono::DateTime<chrono::Utc>>,
        /// Limit the key to these permissions (repeat, or comma-separated).
        #[arg(long = "scope", value_delimiter = ',')]
        scopes: Vec<String>,
        /// Limit the key to these source addresses, CIDR (repeat, or comma-separated).
        #[arg(long = "allow-from", value_delimiter = ',')]
        allowed_cidrs: Vec<String>,
    },
    /// List a tenant's keys (never their secrets).
    List {
        /// The tenant's id.
        tenant: TenantId,
    },
    /// Revoke a key at once.
    Revoke {
        /// The tenant's id.
        tenant: TenantId,
        /// The key's id (`key list` shows it).
        key: tenantry_db::KeyId,
    },
    /// Issue a successor key; the old one works for the grace period.
    Rotate {
        /// The tenant's id.
        tenant: TenantId,
        /// The key's id (`key list` shows it).
        key: tenantry_db::KeyId,
        /// Seconds the old key keeps working: 0 (it stops at once) to
        /// 2592000 (30 days), as the API allows.
        #[arg(long, default_value_t = 86_400, value_parser = clap::value_parser!(u64).range(0..=2_592_000))]
        grace_seconds: u64,
    },
}

#[derive(Debug, Args)]
pub struct RoleArgs {
    #[command(flatten)]
    target: Target,
    /// Print JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: RoleCommand,
}

#[derive(Debug, Subcommand)]
enum RoleCommand {
    /// Create a role in a tenant.
    Create {
        /// The tenant's id.
        tenant: TenantId,
        /// The role's name, unique in the tenant.
        name: String,
        /// A note for people (shown by `list`).
        #[arg(long, default_value = "")]
        description: String,
    },
    /// Grant a catalogue permission to a role.
    Grant {
        /// The tenant's id.
        tenant: TenantId,
        /// The role's id (`role list` shows it), not its name.
        role: RoleId,
        /// A permission of the catalogue, e.g. `resources.read`.
        permission: String,
    },
    /// Remove a permission from a role.
    Revoke {
        /// The tenant's id.
        tenant: TenantId,
        /// The role's id (`role list` shows it), not its name.
        role: RoleId,
        /// A permission of the catalogue, e.g. `resources.read`.
        permission: String,
    },
    /// List a tenant's roles with their permissions.
    List {
        /// The tenant's id.
        tenant: TenantId,
    },
}

#[derive(Debug, Args)]
pub struct UsageArgs {
    #[command(flatten)]
    target: Target,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// The tenant.
    tenant: TenantId,
}

/// `--settings`: parsed like the API parses them (unknown keys and bad values refused).
fn parse_settings(s: &str) -> Result<Box<TenantSettings>, String> {
    // Its text, so that `metadata` keeps its numbers as written.
    serde_json::from_str::<serde::de::IgnoredAny>(s).map_err(|e| format!("not JSON: {e}"))?;
    TenantSettings::parse_text(s)
        .map(Box::new)
        .map_err(|e| e.to_string())
}

fn parse_isolation(s: &str) -> Result<Isolation, String> {
    match s {
        "shared" => Ok(Isolation::Shared),
        "schema" => Ok(Isolation::Schema),
        other => Err(format!("{other:?}: expected shared or schema")),
    }
}

/// The pool and, when embedded, the cluster; fields drop in order, so the pool
/// closes its connections before the cluster stops.
struct Session {
    db: Database,
    _cluster: Option<LocalCluster>,
}

async fn connect(target: &Target) -> anyhow::Result<Session> {
    let (db, cluster) = local::database(target, |mut c| {
        c.max_connections = 2;
        c
    })
    .await?;
    Ok(Session {
        db,
        _cluster: cluster,
    })
}

async fn tenant_scope(db: &Database, tenant: TenantId) -> anyhow::Result<TenantScope> {
    Ok(db
        .tenant(TenantContext::new(tenant).with_actor(actor()))
        .await?)
}

fn tenant_rows(tenants: &[tenantry_db::Tenant]) -> Vec<Vec<String>> {
    tenants
        .iter()
        .map(|t| {
            vec![
                t.tenant_id.to_string(),
                t.name.clone(),
                t.status.as_str().into(),
                t.isolation.as_str().into(),
                opt(&t.parent_id),
                minute(&t.created_at),
            ]
        })
        .collect()
}

const TENANT_HEADERS: &[&str] = &["TENANT", "NAME", "STATUS", "ISOLATION", "PARENT", "CREATED"];

pub async fn tenant(args: TenantArgs) -> anyhow::Result<()> {
    // Export and import read and write as the operator, not through the pool.
    match &args.command {
        TenantCommand::Export { tenant, out } => {
            return crate::local::needs_migration_role(
                crate::export::export(&args.target, args.json, *tenant, out.as_deref()).await,
                "tenantry tenant export",
            );
        }
        TenantCommand::Import { archive, as_id } => {
            return crate::local::needs_migration_role(
                crate::export::import(&args.target, args.json, archive, *as_id).await,
                "tenantry tenant import",
            );
        }
        TenantCommand::Isolate { tenant, to_node } => {
            return isolate(&args.target, args.json, *tenant, to_node.as_ref()).await;
        }
        _ => {}
    }
    let session = connect(&args.target).await?;
    let db = &session.db;
    if let TenantCommand::Move {
        tenant,
        to,
        batch_rows,
        abort,
    } = args.command
    {
        return move_tenant(db, args.json, tenant, to, batch_rows, abort).await;
    }
    if let TenantCommand::Purge { tenant, due } = args.command {
        return match (tenant, due) {
            (Some(tenant), false) => crate::export::purge(db, actor(), args.json, tenant).await,
            _ => crate::export::purge_due(db, actor(), args.json).await,
        };
    }
    let mut scope = db.admin(actor()).await?;
    let one_object = matches!(args.command, TenantCommand::Show { .. });
    let result = match args.command {
        TenantCommand::Create {
            name,
            parent,
            isolation,
            settings,
        } => {
            vec![
                scope
                    .create_tenant(&NewTenant {
                        name,
                        parent_id: parent,
                        isolation,
                        settings: settings.map(|s| *s),
                    })
                    .await?,
            ]
        }
        TenantCommand::List { limit, after } => {
            let page = scope.list_tenants(after, limit).await?;
            // A full page may have more after it: said on standard error,
            // so that neither the table nor --json changes (the list stopped
            // at 100 without a word: a new operator's review).
            if i64::try_from(page.len()).is_ok_and(|n| n == limit) {
                if let Some(last) = page.last() {
                    eprintln!(
                        "note: {limit} tenants shown, the most one page holds; the next page: --after {}",
                        last.tenant_id
                    );
                }
            }
            page
        }
        TenantCommand::Show { tenant } => vec![scope.get_tenant(tenant).await?],
        TenantCommand::Suspend { tenant } => {
            vec![scope.set_status(tenant, TenantStatus::Suspended).await?]
        }
        TenantCommand::Activate { tenant } => {
            vec![scope.set_status(tenant, TenantStatus::Active).await?]
        }
        TenantCommand::Delete { tenant } => {
            vec![scope.set_status(tenant, TenantStatus::Deleted).await?]
        }
        TenantCommand::Move { .. }
        | TenantCommand::Purge { .. }
        | TenantCommand::Export { .. }
        | TenantCommand::Import { .. }
        | TenantCommand::Isolate { .. } => unreachable!("handled above"),
    };
    scope.commit().await?;
    if args.json {
        // `tenant show` prints the tenant itself, as README says (it printed
        // a list of one: found by an operations review).
        match result.as_slice() {
            [tenant] if one_object => json(tenant),
            _ => json(&result),
        }
    } else {
        table(TENANT_HEADERS, &tenant_rows(&result));
        Ok(())
    }
}

/// `tenant isolate <id> [--to-node host:port]`.
async fn isolate(
    target: &Target,
    as_json: bool,
    tenant: TenantId,
    to_node: Option<&(String, u16)>,
) -> anyhow::Result<()> {
    let (client, _cluster) = crate::local::migration_client(target, "isolate a tenant").await?;
    let bar = ProgressBar::new_spinner().with_message(format!("isolating tenant {tenant}"));
    bar.enable_steady_tick(Duration::from_millis(200));
    let shard = tenantry_db::citus::isolate_tenant(
        &client,
        tenant,
        to_node.map(|(host, port)| (host.as_str(), *port)),
    )
    .await;
    bar.finish_and_clear();
    let shard = shard?;
    if as_json {
        return json(&shard);
    }
    let state = match (shard.newly_isolated, shard.moved) {
        (true, true) => "isolated, moved",
        (true, false) => "isolated",
        (false, true) => "moved",
        (false, false) => "unchanged",
    };
    table(
        &["TENANT", "SHARD", "NODE", "STATE"],
        &[vec![
            shard.tenant_id.to_string(),
            shard.shard_id.to_string(),
            shard.node,
            state.into(),
        ]],
    );
    Ok(())
}

fn key_rows(keys: &[tenantry_db::ApiKeyInfo]) -> Vec<Vec<String>> {
    keys.iter()
        .map(|k| {
            let state = if k.revoked_at.is_some() {
                "revoked"
            } else if k.expires_at.is_some_and(|e| e <= chrono::Utc::now()) {
                "expired"
            } else {
                "active"
            };
            vec![
                k.key_id.to_string(),
                format!("tk_{}_…", k.prefix),
                state.into(),
                k.description.clone(),
                opt(&k.role_id),
                opt(&k.expires_at.as_ref().map(minute)),
                opt(&k.last_used_at.as_ref().map(minute)),
                // A key limited to scopes or source addresses must not look
                // like an unrestricted one (found by an operator's review).
                // A key without scopes holds its role's or its member's
                // permissions, not all (it said `all`: a new operator's
                // review).
                k.scopes.as_ref().map_or_else(
                    || match (&k.role_id, &k.user_id) {
                        (Some(_), _) => "its role's".into(),
                        (None, Some(user)) => format!("member {user}'s"),
                        (None, None) => "all".into(),
                    },
                    |s| s.join(","),
                ),
                k.allowed_cidrs
                    .as_ref()
                    .map_or_else(|| "any".into(), |c| c.join(",")),
            ]
        })
        .collect()
}

const KEY_HEADERS: &[&str] = &[
    "KEY",
    "PREFIX",
    "STATE",
    "DESCRIPTION",
    "ROLE",
    "EXPIRES",
    "LAST USED",
    "SCOPES",
    "FROM",
];

pub async fn key(args: KeyArgs) -> anyhow::Result<()> {
    let session = connect(&args.target).await?;
    let db = &session.db;
    match args.command {
        KeyCommand::Create {
            tenant,
            description,
            role,
            user,
            expires_at,
            scopes,
            allowed_cidrs,
        } => {
            // Checked as the HTTP API checks a new key (scopes, networks,
            // expiry), before anything is sent.
            let options = tenantry_api::routes::keys::NewKeyBody {
                description: Some(description),
                role_id: role,
                user_id: user,
                expires_at,
                scopes: (!scopes.is_empty()).then_some(scopes),
                allowed_cidrs: (!allowed_cidrs.is_empty()).then_some(allowed_cidrs),
            }
            .options()
            .map_err(|e| {
                let p = e.problem();
                let option = match p.field.as_deref() {
                    Some("allowed_cidrs") => "--allow-from",
                    Some("scopes") => "--scope",
                    Some("expires_at") => "--expires-at",
                    Some("description") => "--description",
                    _ => "key create",
                };
                anyhow::anyhow!("{option}: {}", p.detail)
            })?;
            let mut scope = tenant_scope(db, tenant).await?;
            let key = scope.create_api_key(&options).await?;
            scope.commit().await?;
            print_new_key(args.json, &key)
        }
        KeyCommand::Rotate {
            tenant,
            key,
            grace_seconds,
        } => {
            let mut scope = tenant_scope(db, tenant).await?;
            let new = scope
                .rotate_api_key(key, Duration::from_secs(grace_seconds))
                .await?;
            scope.commit().await?;
            print_new_key(args.json, &new)
        }
        KeyCommand::List { tenant } => {
            let mut scope = tenant_scope(db, tenant).await?;
            let keys = scope.list_api_keys().await?;
            scope.commit().await?;
            if args.json {
                json(&keys)
            } else {
                table(KEY_HEADERS, &key_rows(&keys));
                Ok(())
            }
        }
        KeyCommand::Revoke { tenant, key } => {
            let mut scope = tenant_scope(db, tenant).await?;
            let info = scope.get_api_key(key).await?;
            anyhow::ensure!(info.tenant_id == tenant, "api key {key} not found");
            scope.revoke_api_key(key).await?;
            scope.commit().await?;
            if args.json {
                json(&serde_json::json!({ "revoked": key }))
            } else {
                outln!("revoked {key}");
                Ok(())
            }
        }
    }
}

fn print_new_key(as_json: bool, key: &tenantry_db::NewApiKey) -> anyhow::Result<()> {
    if as_json {
        json(&serde_json::json!({ "key": key.secret.expose(), "key_info": key.info }))
    } else {
        table(KEY_HEADERS, &key_rows(std::slice::from_ref(&key.info)));
        outln!();
        outln!("key (shown once, store it now): {}", key.secret.expose());
        Ok(())
    }
}

pub async fn role(args: RoleArgs) -> anyhow::Result<()> {
    let session = connect(&args.target).await?;
    let db = &session.db;
    let roles = match args.command {
        RoleCommand::Create {
            tenant,
            name,
            description,
        } => {
            let mut scope = tenant_scope(db, tenant).await?;
            let r = scope.create_role(&name, &description).await?;
            scope.commit().await?;
            vec![r]
        }
        RoleCommand::Grant {
            tenant,
            role,
            permission,
        } => {
            let mut scope = tenant_scope(db, tenant).await?;
            let r = scope.grant_permission(role, &permission).await?;
            scope.commit().await?;
            vec![r]
        }
        RoleCommand::Revoke {
            tenant,
            role,
            permission,
        } => {
            let mut scope = tenant_scope(db, tenant).await?;
            let r = scope.revoke_permission(role, &permission).await?;
            scope.commit().await?;
            vec![r]
        }
        RoleCommand::List { tenant } => {
            let mut scope = tenant_scope(db, tenant).await?;
            let r = scope.list_roles().await?;
            scope.commit().await?;
            r
        }
    };
    if args.json {
        return json(&roles);
    }
    let rows: Vec<Vec<String>> = roles
        .iter()
        .map(|r| {
            vec![
                r.role_id.to_string(),
                r.name.clone(),
                r.permissions.join(","),
                r.description.clone(),
            ]
        })
        .collect();
    table(&["ROLE", "NAME", "PERMISSIONS", "DESCRIPTION"], &rows);
    Ok(())
}

pub async fn usage(args: UsageArgs) -> anyhow::Result<()> {
    let session = connect(&args.target).await?;
    let db = &session.db;
    let mut scope = tenant_scope(db, args.tenant).await?;
    let resources = scope.resource_usage().await?;
    let metrics = scope.metrics(None, None).await?;
    scope.commit().await?;
    if args.json {
        return json(&serde_json::json!({ "resources": resources, "metrics": metrics }));
    }
    let rows: Vec<Vec<String>> = resources
        .iter()
        .map(|u| {
            vec![
                u.tenant_id.to_string(),
                u.tenant_name.clone(),
                u.total_resources.to_string(),
                u.storage_used.to_string(),
                opt(&u.last_modified.as_ref().map(minute)),
            ]
        })
        .collect();
    table(
        &["TENANT", "NAME", "RESOURCES", "BYTES", "LAST MODIFIED"],
        &rows,
    );
    let total: i64 = metrics
        .iter()
        .filter(|m| !m.is_descendant)
        .map(|m| m.request_count)
        .sum();
    outln!();
    // (Counted live: current_tenant_metrics reads the hours counted and
    // the request log since; it said "as of the last metrics refresh".)
    outln!("requests in the last 30 days: {total}");
    Ok(())
}

/// `tenant move`: the online move with a progress bar on stderr, or `--abort`.
async fn move_tenant(
    db: &Database,
    as_json: bool,
    tenant: TenantId,
    to: Option<Isolation>,
    batch_rows: i32,
    abort: bool,
) -> anyhow::Result<()> {
    let Some(to) = to.filter(|_| !abort) else {
        let mut scope = db.admin(actor()).await?;
        let aborted = scope.tier_move_abort(tenant).await?;
        scope.commit().await?;
        let state = if aborted { "aborted" } else { "none" };
        if as_json {
            return json(&serde_json::json!({ "tenant_id": tenant, "move": state }));
        }
        outln!(
            "{}",
            if aborted {
                "move aborted: the tenant stays in its tier with every row"
            } else {
                "no move was under way"
            }
        );
        return Ok(());
    };
    let bar = if as_json {
        ProgressBar::hidden()
    } else {
        ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr())
    };
    bar.set_style(
        ProgressStyle::with_template("moving to {msg} {bar:40} {pos}/{len} rows")
            .expect("a valid template"),
    );
    bar.set_message(to.as_str());
    let started = std::cell::Cell::new(false);
    let moved = db
        .move_tenant(actor(), tenant, to, batch_rows, |p| match p {
            MoveProgress::Started { rows, resumed } => {
                started.set(true);
                bar.set_length(rows.max(0) as u64);
                if resumed {
                    bar.println("resuming the move under way");
                }
            }
            MoveProgress::Waiting { transactions } => bar.set_message(format!(
                "{} (waiting for {transactions} transactions older than the move)",
                to.as_str()
            )),
            MoveProgress::Copied { rows } => {
                bar.set_message(to.as_str());
                bar.inc(rows.max(0) as u64)
            }
            MoveProgress::CaughtUp { writes } => {
                bar.set_message(format!("{} (catching up {writes} writes)", to.as_str()))
            }
            MoveProgress::CuttingOver => bar.set_message(format!("{} (cutting over)", to.as_str())),
        })
        .await;
    bar.finish_and_clear();
    // Failed once under way (a row the target tier's key refuses, a table
    // changed meanwhile): the move stays recorded until it is resumed or
    // aborted, which the error alone did not say (found by a review of
    // migration tools).
    let moved = match moved {
        Ok(moved) => moved,
        Err(e) if started.get() && move_under_way(db, tenant).await => {
            return Err(anyhow::Error::from(e).context(format!(
                "the move of tenant {tenant} to {} is still under way, every row of it kept: \
                 fix the cause and run this command again to resume it, or give it up with \
                 `tenantry tenant move {tenant} --abort`",
                to.as_str()
            )))
        }
        Err(e) => return Err(e.into()),
    };
    if as_json {
        json(&moved)
    } else if moved.unchanged {
        outln!(
            "tenant {} is {} already: nothing moved",
            moved.tenant_id,
            moved.isolation.as_str()
        );
        Ok(())
    } else {
        outln!(
            "tenant {} is {} now: {} rows moved, its writes held back {:.1} ms at the cut-over ({} rows moved or written again then)",
            moved.tenant_id,
            moved.isolation.as_str(),
            moved.rows_moved,
            moved.cutover_ms,
            moved.cutover_rows
        );
        Ok(())
    }
}

/// Whether a move of `tenant` is recorded as under way (false when that
/// cannot be read: the error said enough then).
async fn move_under_way(db: &Database, tenant: TenantId) -> bool {
    let Ok(mut scope) = db.admin(actor()).await else {
        return false;
    };
    scope.tier_move_under_way(tenant).await.unwrap_or(false)
}

/// `tenantry impersonate`: act as a member of a tenant for a bounded time.
#[derive(Debug, Args)]
pub struct ImpersonateArgs {
    #[command(flatten)]
    target: Target,
    /// Print JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: ImpersonateCommand,
}

#[derive(Debug, Subcommand)]
enum ImpersonateCommand {
    /// Start acting as a member: prints a bearer token (shown once) whose
    /// requests act as that member, minus keys, invitations and role changes.
    Start {
        /// The member's tenant.
        tenant: TenantId,
        /// The member.
        user: UserId,
        /// How long, in minutes (1 to 480).
        #[arg(long, default_value_t = 60)]
        minutes: u64,
        /// Why (audited).
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// End a session at once (its token stops working).
    Stop {
        /// The member's tenant.
        tenant: TenantId,
        /// The session.
        impersonation: tenantry_db::ImpersonationId,
    },
    /// List a tenant's impersonation sessions.
    List {
        /// The tenant's id.
        tenant: TenantId,
    },
}

/// With each session's tenant: a tenant's listing holds its descendants' sessions too.
const IMPERSONATION_HEADERS: &[&str] = &[
    "IMPERSONATION",
    "TENANT",
    "USER",
    "IMPERSONATOR",
    "EXPIRES",
    "ENDED",
    "REASON",
];

fn impersonation_rows(sessions: &[tenantry_db::Impersonation]) -> Vec<Vec<String>> {
    sessions
        .iter()
        .map(|s| {
            vec![
                s.impersonation_id.to_string(),
                s.tenant_id.to_string(),
                s.user_id.to_string(),
                s.impersonator.clone(),
                minute(&s.expires_at),
                opt(&s.ended_at.as_ref().map(minute)),
                s.reason.clone(),
            ]
        })
        .collect()
}

pub async fn impersonate(args: ImpersonateArgs) -> anyhow::Result<()> {
    let session = connect(&args.target).await?;
    let db = &session.db;
    match args.command {
        ImpersonateCommand::Start {
            tenant,
            user,
            minutes,
            reason,
        } => {
            if !(1..=480).contains(&minutes) {
                anyhow::bail!("--minutes must be 1 to 480 (8 hours)");
            }
            let mut scope = tenant_scope(db, tenant).await?;
            let issued = scope
                .start_impersonation(
                    user,
                    None,
                    std::time::Duration::from_secs(minutes * 60),
                    &reason,
                )
                .await?;
            scope.commit().await?;
            if args.json {
                json(&issued)
            } else {
                table(
                    IMPERSONATION_HEADERS,
                    &impersonation_rows(std::slice::from_ref(&issued.impersonation)),
                );
                outln!();
                outln!(
                    "token (shown once; send it as Authorization: Bearer): {}",
                    issued.token
                );
                Ok(())
            }
        }
        ImpersonateCommand::Stop {
            tenant,
            impersonation,
        } => {
            let mut scope = tenant_scope(db, tenant).await?;
            let ended = scope.end_impersonation(impersonation).await?;
            scope.commit().await?;
            if args.json {
                json(&ended)
            } else {
                table(IMPERSONATION_HEADERS, &impersonation_rows(&[ended]));
                Ok(())
            }
        }
        ImpersonateCommand::List { tenant } => {
            let mut scope = tenant_scope(db, tenant).await?;
            let sessions = scope.list_impersonations().await?;
            scope.commit().await?;
            if args.json {
                json(&sessions)
            } else {
                table(IMPERSONATION_HEADERS, &impersonation_rows(&sessions));
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn this_processs_login_is_found_without_the_environment() {
        let uid = std::fs::read_to_string("/proc/self/status")
            .unwrap()
            .lines()
            .find_map(|l| {
                l.strip_prefix("Uid:")
                    .map(|u| u.split_whitespace().next().unwrap().to_owned())
            })
            .unwrap();
        let login = super::login_of_this_process().expect("a login");
        assert!(!login.is_empty() && login != "unknown", "{login}");
        if uid == "0" {
            assert_eq!(login, "root");
        }
    }
}
