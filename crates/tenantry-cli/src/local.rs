//! The CLI's ways to a database: DATABASE_URL as given, or the embedded default (`tenantry_db::local`); migrations through either.

use anyhow::Context;
use tokio_postgres::Config;

pub use tenantry_axum::shutdown_signal as wait_for_shutdown_signal;
pub use tenantry_db::local::LocalCluster;

/// Which of the database's notices a command shows on stderr, as psql does:
/// warnings always (a released table's privileges not given back, with the
/// `GRANT` to run), notices for the commands whose notices are news (`table
/// adopt`: PUBLIC's privileges taken, a sequence every tenant shares; found
/// by a review as a new user: the CLI showed neither).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Notices {
    /// WARNING and above.
    Warnings,
    /// NOTICE and above.
    All,
}

/// How long a command's own connection may take to reach each host when the
/// URL sets no `connect_timeout`.
const CONNECT_DEADLINE: std::time::Duration = std::time::Duration::from_secs(10);

/// What the handshake (TLS, authentication) gets on top of the hosts' time.
const HANDSHAKE_ALLOWANCE: std::time::Duration = std::time::Duration::from_secs(5);

/// A plain connection (its driver task spawned) to `config`, with TLS as
/// `tls` says (`tenantry_db::tls`: the connection string's sslmode).
async fn connect_with(
    config: &Config,
    tls: &tenantry_db::tls::TlsSettings,
    what: &str,
    notices: Notices,
) -> anyhow::Result<tokio_postgres::Client> {
    let tls = tenantry_db::tls::connector(tls).map_err(|e| anyhow::anyhow!("DATABASE_URL: {e}"))?;
    // The whole handshake within a deadline: the driver's connect_timeout
    // bounds each host's TCP connect only, so a listener that accepted and
    // never answered held `migrate` or `doctor` for ever (found by an
    // operations review; the pooled commands had the pool's bound). Each
    // host of the URL gets its connect_timeout (10 s without one), and the
    // handshake HANDSHAKE_ALLOWANCE more, so that failing over to a second
    // host still has its time.
    let per_host = config
        .get_connect_timeout()
        .copied()
        .unwrap_or(CONNECT_DEADLINE);
    let hosts = u32::try_from(config.get_hosts().len().max(1)).unwrap_or(u32::MAX);
    let deadline = per_host.saturating_mul(hosts) + HANDSHAKE_ALLOWANCE;
    let (client, mut conn) = tokio::time::timeout(deadline, config.connect(tls))
        .await
        .map_err(|_| {
            anyhow::anyhow!(
                "the database did not complete a connection within {} s (connect_timeout in DATABASE_URL sets how long to wait for each host)",
                deadline.as_secs_f32()
            )
        })
        .and_then(|connected| connected.map_err(anyhow::Error::from))
        .with_context(|| format!("connecting to the database to {what}"))?;
    tokio::spawn(async move {
        loop {
            match std::future::poll_fn(|cx| conn.poll_message(cx)).await {
                Some(Ok(tokio_postgres::AsyncMessage::Notice(n))) => {
                    let shown = match n.severity() {
                        "NOTICE" => notices == Notices::All,
                        "WARNING" => true,
                        _ => false,
                    };
                    if shown {
                        eprintln!("{}: {}", n.severity(), n.message());
                        if let Some(detail) = n.detail() {
                            eprintln!("DETAIL: {detail}");
                        }
                        if let Some(hint) = n.hint() {
                            eprintln!("HINT: {hint}");
                        }
                    }
                }
                Some(Ok(_)) => {}
                // The command's own statements report what fails while it
                // runs; what is left here is mostly the embedded cluster
                // stopping under an idle connection as the command ends,
                // which is no error of the user's.
                Some(Err(e)) => {
                    tracing::debug!("database connection ended: {e}");
                    break;
                }
                None => break,
            }
        }
    });
    // An operator's command runs as long as its work takes: a
    // statement_timeout the database or the role sets for applications
    // cancelled a large tenant's purge, the doctor and, at a few
    // milliseconds, every command (found by an operations review).
    client
        .batch_execute("SET statement_timeout = 0")
        .await
        .with_context(|| format!("connecting to the database to {what}"))?;
    Ok(client)
}

/// [`connect_with`] the embedded cluster (no TLS settings of its own).
async fn connect(
    config: &Config,
    what: &str,
    notices: Notices,
) -> anyhow::Result<tokio_postgres::Client> {
    connect_with(
        config,
        &tenantry_db::tls::TlsSettings::default(),
        what,
        notices,
    )
    .await
}

/// A connection to the database `url` names (TLS as its sslmode says).
pub async fn connect_url(url: &str, what: &str) -> anyhow::Result<tokio_postgres::Client> {
    connect_url_with(url, what, Notices::Warnings).await
}

/// [`connect_url`], showing `notices`.
async fn connect_url_with(
    url: &str,
    what: &str,
    notices: Notices,
) -> anyhow::Result<tokio_postgres::Client> {
    let (config, tls) =
        tenantry_db::tls::parse(url).map_err(|e| anyhow::anyhow!("DATABASE_URL: {e}"))?;
    connect_with(&config, &tls, what, notices).await
}

/// The newest context key of `target`'s database, read as the migration role.
pub async fn context_key(target: &crate::Target) -> anyhow::Result<tenantry_db::ContextKey> {
    let (client, _cluster) = migration_client(target, "read the context key").await?;
    tenantry_db::ContextKey::newest(&client)
        .await
        .context("reading tenantry.context_keys (as a superuser or the owner role)")?
        .context("the database has no context key: run `tenantry migrate` first")
}

/// Applies pending migrations through `url` (a superuser whenever anything is pending).
pub async fn migrate_url(url: &str) -> anyhow::Result<Migrated> {
    let mut client = connect_url(url, "migrate").await?;
    // The definition files that differ before: applied again below, with no
    // versioned migration pending, they are news too ("up to date" alone
    // misled a DBA's review).
    let definitions = match tenantry_db::migrate::check(&client).await {
        Err(tenantry_db::migrate::MigrateError::DefinitionsPending { names }) => Some(names),
        _ => None,
    };
    let migrated = tenantry_db::migrate::migrate(&mut client)
        .await
        .map(|applied| Migrated {
            applied,
            definitions,
        });
    // A migration file's own SQL refused (not the bookkeeping read before
    // it, which names the role below): it creates roles or grants.
    let in_a_file = matches!(
        migrated,
        Err(tenantry_db::migrate::MigrateError::Failed { .. }
            | tenantry_db::migrate::MigrateError::DefinitionFailed { .. })
    );
    let migrated = migrated.map_err(anyhow::Error::new);
    if in_a_file && migrated.as_ref().is_err_and(privilege_refused) {
        let role = client
            .query_one("SELECT session_user::text", &[])
            .await
            .map(|r| r.get::<_, String>(0))
            .unwrap_or_else(|_| "this login".into());
        return migrated.context(format!(
            "tenantry migrate creates tenantry's roles (one of them BYPASSRLS) and their grants: \
             run it as a superuser (the database URL names {role}, which may not); nothing was changed"
        ));
    }
    needs_migration_role(migrated, "tenantry migrate")
}

/// What `tenantry migrate` applied to the database a URL names.
pub struct Migrated {
    /// The versioned migrations applied, in order.
    pub applied: Vec<tenantry_db::migrate::Migration>,
    /// The definition files that differed from this build's before (applied
    /// again), comma-separated; none when they were the same.
    pub definitions: Option<String>,
}

/// Whether the database refused a privilege (SQLSTATE 42501) anywhere in `e`'s chain.
fn privilege_refused(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<tokio_postgres::Error>()
            .and_then(|e| e.code())
            .is_some_and(|code| *code == tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE)
    })
}

/// `result`, with the role a command needs named when the database refused
/// it a privilege (SQLSTATE 42501): DATABASE_URL then names another role,
/// typically the server's login.
pub fn as_migration_role<T, E>(result: Result<T, E>, command: &str) -> anyhow::Result<T>
where
    E: std::error::Error + Send + Sync + 'static,
{
    needs_migration_role(result.map_err(anyhow::Error::new), command)
}

/// [`as_migration_role`] for a command's whole result: a refused privilege
/// anywhere in its error chain names the role the command needs (once).
pub fn needs_migration_role<T>(result: anyhow::Result<T>, command: &str) -> anyhow::Result<T> {
    result.map_err(|e| {
        let text = format!("{e:#}");
        if (privilege_refused(&e) || text.contains("42501") || text.contains("permission denied"))
            && !text.contains("runs as the role that runs your migrations")
        {
            e.context(format!(
                "{command} runs as the role that runs your migrations (a superuser, or a member of \
                 tenantry_owner), and DATABASE_URL names a role that may not (the server's login?)"
            ))
        } else {
            e
        }
    })
}

/// Tells, for the tenant commands (`tenant`, `key`, `role`, `impersonate`,
/// `usage`), which role they need when DATABASE_URL names one that may not
/// become tenantry's roles (the migration role, a member of tenantry_owner:
/// "permission denied to set role").
pub fn needs_tenant_role<T>(result: anyhow::Result<T>, command: &str) -> anyhow::Result<T> {
    result.map_err(|e| {
        if format!("{e:#}").contains("permission denied to set role \"tenantry_") {
            e.context(format!(
                "{command} acts through tenantry's roles, and DATABASE_URL names a role that may not \
                 become them (the role that runs your migrations?): use a superuser, or the server's \
                 login (tenantry_server) with TENANTRY_CONTEXT_KEY"
            ))
        } else {
            e
        }
    })
}

/// A connection of the migration role for `target`: DATABASE_URL as given (the
/// role that runs your migrations), or the embedded cluster's superuser.
pub async fn migration_client(
    target: &crate::Target,
    what: &str,
) -> anyhow::Result<(tokio_postgres::Client, Option<LocalCluster>)> {
    migration_client_with(target, what, Notices::Warnings).await
}

/// [`migration_client`], showing `notices`.
pub async fn migration_client_with(
    target: &crate::Target,
    what: &str,
    notices: Notices,
) -> anyhow::Result<(tokio_postgres::Client, Option<LocalCluster>)> {
    if target.database_url.as_deref().is_none_or(str::is_empty) {
        existing_cluster(target, what)?;
    }
    let (client, cluster) = migration_client_or_new_with(target, what, notices).await?;
    // A database tenantry was never installed in: said as such, instead of
    // the first query's "relation tenantry.… does not exist".
    let migrated: bool = client
        .query_one(
            "SELECT to_regclass('tenantry.schema_migrations') IS NOT NULL",
            &[],
        )
        .await
        .with_context(|| format!("cannot {what}"))?
        .get(0);
    if !migrated {
        anyhow::bail!(
            "cannot {what}: this database has no tenantry schema yet: run `tenantry migrate` \
             first (with the same DATABASE_URL, a role that may create roles)"
        );
    }
    // What this connection's SQL writes to a tenant's audit log (an export
    // or import recorded, a share ended by `table alter`) names the
    // operator, not only the database login.
    client
        .execute(
            "SELECT set_config('app.actor', $1, false)",
            &[&crate::admin::actor()],
        )
        .await
        .with_context(|| format!("cannot {what}"))?;
    Ok((client, cluster))
}

/// [`migration_client`], making the embedded cluster when there is none
/// (`tenantry migrate`).
pub async fn migration_client_or_new(
    target: &crate::Target,
    what: &str,
) -> anyhow::Result<(tokio_postgres::Client, Option<LocalCluster>)> {
    migration_client_or_new_with(target, what, Notices::Warnings).await
}

/// [`migration_client_or_new`], showing `notices`.
async fn migration_client_or_new_with(
    target: &crate::Target,
    what: &str,
    notices: Notices,
) -> anyhow::Result<(tokio_postgres::Client, Option<LocalCluster>)> {
    match target.database_url.as_deref().filter(|u| !u.is_empty()) {
        Some(url) => Ok((connect_url_with(url, what, notices).await?, None)),
        None => {
            let local = LocalCluster::open(&target.data_dir, None).await?;
            let client = connect(&local.superuser_config(), what, notices).await?;
            Ok((client, Some(local)))
        }
    }
}

/// Refuses a command that would otherwise make a new, empty embedded
/// cluster where none is (a mistyped --data-dir, DATABASE_URL forgotten):
/// it would answer from nothing, as if the operator's tenants were gone.
/// `tenantry serve`, `db start` and `migrate` make one.
fn existing_cluster(target: &crate::Target, what: &str) -> anyhow::Result<()> {
    if LocalCluster::exists(&target.data_dir) {
        return Ok(());
    }
    anyhow::bail!(
        "cannot {what}: DATABASE_URL is unset and there is no embedded cluster in {} \
         (--data-dir, TENANTRY_DATA_DIR): set DATABASE_URL, point --data-dir at the directory \
         `tenantry serve` uses, or start one there with `tenantry serve` or `tenantry db start`",
        target.data_dir.display()
    )
}

/// A pool for `target`: its URL as given, or the embedded cluster (migrated)
/// as `tenantry_server`; `tune` sets the pool's size and modes.
pub async fn database(
    target: &crate::Target,
    tune: impl Fn(tenantry_db::DatabaseConfig) -> tenantry_db::DatabaseConfig,
) -> anyhow::Result<(tenantry_db::Database, Option<LocalCluster>)> {
    use tenantry_db::{ContextKey, Database, DatabaseConfig};
    match target.database_url.as_deref().filter(|u| !u.is_empty()) {
        Some(url) => {
            let mut config = DatabaseConfig::new(url);
            config.context_key = match target.context_key.as_deref().filter(|k| !k.is_empty()) {
                Some(key) => Some(
                    key.parse::<ContextKey>()
                        .map_err(|e| anyhow::anyhow!("TENANTRY_CONTEXT_KEY: {e}"))?,
                ),
                // A role that may read the key (a superuser: the URL your
                // migrations run with) needs no TENANTRY_CONTEXT_KEY.
                None => {
                    let client = connect_url(url, "read the context key").await?;
                    // A database tenantry was never installed in, said as
                    // such (as the migration role's commands say it), not as
                    // a role that may not read the key (a new operator's
                    // review).
                    let migrated: bool = client
                        .query_one(
                            "SELECT to_regclass('tenantry.schema_migrations') IS NOT NULL",
                            &[],
                        )
                        .await
                        .map(|r| r.get(0))
                        .unwrap_or(true);
                    if !migrated {
                        anyhow::bail!(
                            "this database has no tenantry schema yet: run `tenantry migrate` \
                             first (with the same DATABASE_URL, a role that may create roles)"
                        );
                    }
                    match ContextKey::newest(&client).await.ok().flatten() {
                        Some(key) => Some(key),
                        None => anyhow::bail!(
                            "DATABASE_URL names a role that may not read the context key (the server's \
                             login?), or a database not migrated yet: set TENANTRY_CONTEXT_KEY \
                             (`DATABASE_URL=<superuser url> tenantry context-key` prints it), or use a \
                             superuser URL"
                        ),
                    }
                }
            };
            // The tenant commands' statements run to their end too (a
            // purge is one statement per table), whatever statement_timeout
            // the database or the role sets for applications.
            config.timeouts.statement_timeout = Some(std::time::Duration::ZERO);
            let db = Database::connect(&tune(config))?;
            schema_ready(
                &db,
                "run `DATABASE_URL=<the url your migrations run with> tenantry migrate` first",
            )
            .await?;
            Ok((db, None))
        }
        None => {
            existing_cluster(target, "reach the embedded cluster's tenants")?;
            let local = LocalCluster::open(&target.data_dir, None).await?;
            let db = Database::connect(&tune(local.database_config()))?;
            Ok((db, Some(local)))
        }
    }
}

/// The database at `DATABASE_URL` is reached, takes the login's session and
/// is migrated to this build, or why not in words the operator can act on
/// (a wrong context key is not an unreachable database; a database behind
/// this build says `behind`, the way to migrate it for the caller; one
/// tenantry was never installed in says to migrate it; a pooler's refusal
/// of our settings names the setting).
pub async fn schema_ready(db: &tenantry_db::Database, behind: &str) -> anyhow::Result<()> {
    use tenantry_db::migrate::MigrateError;
    match db.check_schema().await {
        Ok(()) => Ok(()),
        Err(e @ (MigrateError::Pending { .. } | MigrateError::DefinitionsPending { .. })) => {
            anyhow::bail!("{e}\n({behind})")
        }
        Err(MigrateError::Unavailable(why)) => {
            anyhow::bail!(
                "cannot reach the database at DATABASE_URL: {why}{}",
                pooler_hint(&why)
            )
        }
        Err(e) => anyhow::bail!(
            "{e}{}{}",
            pooler_hint(&e.to_string()),
            not_migrated_hint(&e.to_string())
        ),
    }
}

/// What to do when an error says tenantry's schema is missing (a database
/// tenantry was never installed in).
fn not_migrated_hint(error: &str) -> &'static str {
    if error.contains("schema \"tenantry\" does not exist")
        || (error.contains("\"tenantry.") && error.contains("does not exist"))
    {
        "\n(this database has no tenantry schema yet: run `DATABASE_URL=<the url your migrations \
         run with> tenantry migrate` first)"
    } else {
        ""
    }
}

/// "database <name> on <host>:<port>" (or "on a local socket") of `client`:
/// what a command that found nothing wrong, or changed nothing, says it
/// looked at.
pub async fn database_name(client: &tokio_postgres::Client) -> anyhow::Result<String> {
    Ok(client
        .query_one(
            "SELECT format('database %s on %s', current_database(),
                           coalesce(host(inet_server_addr()) || ':' || inet_server_port(), 'a local socket'))",
            &[],
        )
        .await?
        .get(0))
}

/// What to change when an error is a pooler's answer to a setting of ours
/// (an operator's review met both at start without a word of what to do).
fn pooler_hint(error: &str) -> &'static str {
    if error.contains("prepared statement") && error.contains("does not exist") {
        "\n(behind a transaction-pooling pgbouncer, set statement_mode = \"unnamed\" \
         (TENANTRY_STATEMENT_MODE=unnamed): README, \"Behind pgbouncer\")"
    } else if error.contains("unsupported startup parameter") {
        "\n(pgbouncer refuses the server's startup options: set ignore_startup_parameters = options \
         in pgbouncer.ini: README, \"Behind pgbouncer\")"
    } else {
        ""
    }
}

#[cfg(test)]
mod tests {
    use super::pooler_hint;

    #[test]
    fn a_poolers_refusal_of_our_settings_says_which_setting_to_change() {
        assert!(
            pooler_hint("26000: prepared statement \"s0\" does not exist")
                .contains("TENANTRY_STATEMENT_MODE=unnamed")
        );
        assert!(pooler_hint("08P01: unsupported startup parameter: options")
            .contains("ignore_startup_parameters = options"));
        assert_eq!(pooler_hint("28P01: password authentication failed"), "");
    }
}
