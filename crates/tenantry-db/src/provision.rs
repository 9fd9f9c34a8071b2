//! Provisioning a database for tenantry, given a superuser: create the database if missing, migrate it, let the server's login role in, and hand back both roles' connection settings; plus the one place that turns settings into a libpq string. Starting a server is not here (`tenantry-embedded` does that).

use tokio_postgres::{config::Host, error::SqlState, Client, Config};

use crate::{
    migrate::{self, MigrateError, Migration},
    ContextKey,
};

/// The login role the HTTP server and the library's pool use (created by the migrations).
pub const SERVER_ROLE: &str = "tenantry_server";

/// The database a superuser connects to first, to create the target database.
const MAINTENANCE_DATABASE: &str = "postgres";

/// How the server role will log in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerLogin {
    /// Without a password: the server trusts local logins (the embedded
    /// cluster's unix socket). The role's password is left as it is.
    Trust,
    /// With a password made for this call, set on the role and returned in
    /// [`Provisioned::server`] (TCP logins, servers tenantry did not start).
    /// It replaces the role's previous password.
    NewPassword,
}

/// What [`provision`] hands back.
#[derive(Debug, Clone)]
pub struct Provisioned {
    /// The superuser, connected to the provisioned database (setup only: a
    /// superuser skips row-level security).
    pub superuser: Config,
    /// The server's login role [`SERVER_ROLE`], on the same server and database.
    pub server: Config,
    /// Migrations this call applied (empty when the schema was up to date).
    pub applied: Vec<Migration>,
    /// The database's newest context key: the pool of [`Provisioned::server`]
    /// needs it to act for tenants ([`crate::DatabaseConfig::context_key`]).
    pub context_key: ContextKey,
}

/// Why provisioning failed; each message names the step.
#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    /// The superuser could not connect.
    #[error("could not connect to database {database} as {user}: {source}")]
    Connect {
        /// Database we tried.
        database: String,
        /// Role we connected as.
        user: String,
        /// The driver's error.
        #[source]
        source: tokio_postgres::Error,
    },
    /// Checking for or creating the database failed.
    #[error("could not create database {database}: {source}")]
    CreateDatabase {
        /// The database.
        database: String,
        /// The driver's error.
        #[source]
        source: tokio_postgres::Error,
    },
    /// Migrating failed.
    #[error(transparent)]
    Migrate(#[from] MigrateError),
    /// Reading the context key failed (or the migrations made none).
    #[error("could not read the context key: {0}")]
    ContextKey(String),
    /// Closing the embedded cluster's other databases to the server's login failed.
    #[error("could not close the cluster's other databases to non-superusers: {source}")]
    CloseDatabases {
        /// The driver's error.
        #[source]
        source: tokio_postgres::Error,
    },
    /// Setting the server role's password failed.
    #[error("could not set the password of role {SERVER_ROLE}: {source}")]
    ServerPassword {
        /// The driver's error.
        #[source]
        source: tokio_postgres::Error,
    },
}

/// Makes `database` ready for tenantry: connects as `superuser` (its `dbname`
/// is ignored: first to the maintenance database `postgres`), creates
/// `database` if it does not exist, applies pending migrations there, and
/// sets the server role's password when `login` asks for one.
///
/// Safe to run again and from several processes at once (a concurrent
/// creation of the same database is not an error; migrations take a lock).
pub async fn provision(
    superuser: &Config,
    database: &str,
    login: ServerLogin,
) -> Result<Provisioned, ProvisionError> {
    let maintenance = connect(&with_dbname(superuser, MAINTENANCE_DATABASE)).await?;
    create_database(&maintenance, database).await?;
    drop(maintenance);

    let superuser = with_dbname(superuser, database);
    let mut client = connect(&superuser).await?;
    let applied = migrate::migrate(&mut client).await?;

    let mut server = same_server(&superuser);
    server.user(SERVER_ROLE).dbname(database);
    if login == ServerLogin::NewPassword {
        // Hex only: safe inside the literal.
        let password = uuid::Uuid::new_v4().simple().to_string();
        client
            .batch_execute(&format!("ALTER ROLE {SERVER_ROLE} PASSWORD '{password}'"))
            .await
            .map_err(|source| ProvisionError::ServerPassword { source })?;
        server.password(password);
    }
    let context_key = ContextKey::newest(&client)
        .await
        .map_err(|e| ProvisionError::ContextKey(e.to_string()))?
        .ok_or_else(|| ProvisionError::ContextKey("tenantry.context_keys is empty".into()))?;
    Ok(Provisioned {
        superuser,
        server,
        applied,
        context_key,
    })
}

/// On a cluster of tenantry's own (the embedded default): no login but the
/// superuser connects to the cluster's databases other than `database`
/// (`postgres`, `template1`, any made by hand), where PostgreSQL's defaults
/// let every login read the server's activity, its locks, the transaction
/// counter and WAL position that migrations take from PUBLIC in `database`
/// (found by a red-team review: the server's login read there which schema
/// tenant's tables were in use). Idempotent; not for a cluster of yours,
/// whose other databases are yours to close (docs/operations.md).
#[cfg(feature = "embedded")]
pub(crate) async fn close_other_databases(
    superuser: &Config,
    database: &str,
) -> Result<(), ProvisionError> {
    let client = connect(superuser).await?;
    // A DO block takes no parameters: the name as a literal.
    let database = format!("'{}'", database.replace('\'', "''"));
    let close = format!(
        "DO $close$
         DECLARE d name;
         BEGIN
             FOR d IN SELECT datname FROM pg_catalog.pg_database
                      WHERE datallowconn AND datname <> {database}
                        AND has_database_privilege('public', oid, 'CONNECT')
             LOOP
                 EXECUTE format('REVOKE CONNECT ON DATABASE %I FROM PUBLIC', d);
             END LOOP;
         END $close$"
    );
    // Two processes opening a new data directory at once revoke on the same
    // pg_database rows: the loser's REVOKE fails "tuple concurrently
    // updated" (XX000) and, tried again, finds them closed.
    let mut tries = 0;
    loop {
        match client.batch_execute(&close).await {
            Ok(()) => return Ok(()),
            Err(source)
                if tries < 5
                    && source.as_db_error().is_some_and(|db| {
                        *db.code() == SqlState::INTERNAL_ERROR
                            && db.message().starts_with("tuple concurrently")
                    }) =>
            {
                tries += 1;
                tokio::time::sleep(std::time::Duration::from_millis(50 * tries)).await;
            }
            Err(source) => return Err(ProvisionError::CloseDatabases { source }),
        }
    }
}

/// A copy of `config` naming another database.
pub(crate) fn with_dbname(config: &Config, dbname: &str) -> Config {
    let mut config = config.clone();
    config.dbname(dbname);
    config
}

/// Settings that reach the same server as `config`, without its role,
/// password or database.
fn same_server(config: &Config) -> Config {
    let mut out = Config::new();
    for host in config.get_hosts() {
        match host {
            Host::Tcp(name) => out.host(name),
            Host::Unix(path) => out.host_path(path),
        };
    }
    for port in config.get_ports() {
        out.port(*port);
    }
    for addr in config.get_hostaddrs() {
        out.hostaddr(*addr);
    }
    out.ssl_mode(config.get_ssl_mode());
    if let Some(timeout) = config.get_connect_timeout() {
        out.connect_timeout(*timeout);
    }
    if let Some(name) = config.get_application_name() {
        out.application_name(name);
    }
    out
}

async fn connect(config: &Config) -> Result<Client, ProvisionError> {
    let (client, connection) = config
        // TLS as the settings' sslmode says, without verification
        // (prefer, require: crate::tls).
        .connect(
            crate::tls::connector(&crate::tls::TlsSettings::default())
                .expect("the default TLS settings need no file"),
        )
        .await
        .map_err(|source| ProvisionError::Connect {
            database: config.get_dbname().unwrap_or_default().to_owned(),
            user: config.get_user().unwrap_or_default().to_owned(),
            source,
        })?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!("provisioning connection: {e}");
        }
    });
    Ok(client)
}

async fn create_database(client: &Client, database: &str) -> Result<(), ProvisionError> {
    let failed = |source| ProvisionError::CreateDatabase {
        database: database.to_owned(),
        source,
    };
    let exists = client
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&database])
        .await
        .map_err(failed)?
        .is_some();
    if exists {
        return Ok(());
    }
    let sql = format!("CREATE DATABASE {}", quote_identifier(database));
    match client.batch_execute(&sql).await {
        Ok(()) => {
            tracing::info!("created database {database}");
            Ok(())
        }
        // Another process created it meanwhile: after our check (42P04), or
        // while our CREATE ran, which then waited for the other's commit and
        // failed on pg_database's unique name index (23505; found by two
        // `tenantry migrate` runs on a brand-new data directory, one of which
        // failed and stopped the embedded cluster under the other).
        Err(e)
            if e.code() == Some(&SqlState::DUPLICATE_DATABASE)
                || (e.code() == Some(&SqlState::UNIQUE_VIOLATION)
                    && e.as_db_error().and_then(|d| d.constraint())
                        == Some("pg_database_datname_index")) =>
        {
            Ok(())
        }
        Err(e) => Err(failed(e)),
    }
}

/// `"name"` with embedded quotes doubled.
fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The libpq `key=value` form of `config` (host, port, user, password,
/// dbname, options, application_name, connect_timeout), for what cannot take
/// a [`Config`]: a person reading it, `psql`, `pgbench`, a child process's
/// environment. Contains the password when there is one.
pub fn conninfo(config: &Config) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut push = |key: &str, value: &str| parts.push(format!("{key}={}", quote_value(value)));
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .map(|host| match host {
            Host::Tcp(name) => name.clone(),
            Host::Unix(path) => path.to_string_lossy().into_owned(),
        })
        .collect();
    if !hosts.is_empty() {
        push("host", &hosts.join(","));
    }
    let ports: Vec<String> = config.get_ports().iter().map(u16::to_string).collect();
    if !ports.is_empty() {
        push("port", &ports.join(","));
    }
    if let Some(user) = config.get_user() {
        push("user", user);
    }
    if let Some(password) = config.get_password() {
        push("password", &String::from_utf8_lossy(password));
    }
    if let Some(dbname) = config.get_dbname() {
        push("dbname", dbname);
    }
    if let Some(options) = config.get_options() {
        push("options", options);
    }
    if let Some(name) = config.get_application_name() {
        push("application_name", name);
    }
    if let Some(timeout) = config.get_connect_timeout() {
        push("connect_timeout", &timeout.as_secs().max(1).to_string());
    }
    parts.join(" ")
}

/// Quotes a libpq conninfo value: empty values and values containing
/// whitespace, `'` or `\` are single-quoted with `'` and `\` escaped.
fn quote_value(value: &str) -> String {
    if !value.is_empty()
        && !value
            .chars()
            .any(|c| c.is_whitespace() || c == '\'' || c == '\\')
    {
        return value.to_string();
    }
    let mut out = String::with_capacity(value.len() + 2);
    out.push('\'');
    for c in value.chars() {
        if c == '\'' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('\'');
    out
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn quotes_conninfo_values() {
        assert_eq!(quote_value("tenantry"), "tenantry");
        assert_eq!(quote_value(""), "''");
        assert_eq!(quote_value("a b"), "'a b'");
        assert_eq!(quote_value(r"it's\"), r"'it\'s\\'");
        assert_eq!(quote_identifier(r#"a"b"#), r#""a""b""#);
    }

    #[test]
    fn conninfo_round_trips_through_the_driver() {
        let mut config = Config::new();
        config
            .host_path("/tmp/dir with space")
            .port(5433)
            .user("tenantry_server")
            .password(r"p'w\d")
            .dbname("db")
            .options("-c synchronous_commit=off")
            .connect_timeout(Duration::from_secs(10));
        let text = conninfo(&config);
        assert_eq!(
            text,
            r"host='/tmp/dir with space' port=5433 user=tenantry_server password='p\'w\\d' dbname=db options='-c synchronous_commit=off' connect_timeout=10"
        );
        let parsed: Config = text.parse().unwrap();
        assert_eq!(parsed.get_hosts(), config.get_hosts());
        assert_eq!(parsed.get_ports(), config.get_ports());
        assert_eq!(parsed.get_user(), config.get_user());
        assert_eq!(parsed.get_password(), config.get_password());
        assert_eq!(parsed.get_dbname(), config.get_dbname());
        assert_eq!(parsed.get_options(), config.get_options());
    }

    #[test]
    fn server_settings_keep_the_server_and_drop_the_role() {
        let config: Config = "host=db.example port=6432 user=admin password=secret dbname=x"
            .parse()
            .unwrap();
        let server = same_server(&config);
        assert_eq!(server.get_hosts(), config.get_hosts());
        assert_eq!(server.get_ports(), config.get_ports());
        assert_eq!(server.get_user(), None);
        assert_eq!(server.get_password(), None);
        assert_eq!(server.get_dbname(), None);
    }
}
