//! What the tracker reads from its environment at start-up: where to listen, which database (`DATABASE_URL` with `ISSUE_TRACKER_MIGRATION_URL`, or the embedded default in `TENANTRY_DATA_DIR` when `DATABASE_URL` is unset, as `tenantry serve` decides), and whose sign-in tokens to accept (the `TENANTRY_JWT_*` variables `tenantry serve` reads).
//!
//! Every reader takes `get` (a variable's value, `None` when unset) instead of
//! the process environment, so the tests give it one of their own.

use std::{net::SocketAddr, path::PathBuf};

use anyhow::{bail, Context};
use tenantry_axum::jwt::JwtConfig;
use tenantry_db::local::DEFAULT_DATA_DIR;

/// Where the tracker listens unless `ISSUE_TRACKER_LISTEN` says otherwise.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8090";

/// The database the tracker serves from.
#[derive(Clone)]
pub enum DatabaseSource {
    /// `DATABASE_URL` unset: the embedded PostgreSQL in this data directory
    /// (`TENANTRY_DATA_DIR`, default `.tenantry`), the one `tenantry serve`
    /// and the CLI use.
    Embedded {
        /// The data directory.
        data_dir: PathBuf,
    },
    /// `DATABASE_URL` set: a PostgreSQL of the operator's, already migrated
    /// by `tenantry migrate`.
    Url {
        /// `DATABASE_URL`: the server's login role (`tenantry_server`), as
        /// for `tenantry serve`; every request's transaction goes through it.
        server: Box<tokio_postgres::Config>,
        /// `ISSUE_TRACKER_MIGRATION_URL`: the role that runs the tracker's
        /// migration and adopts its tables (a superuser, or a member of
        /// `tenantry_owner`), as `DATABASE_URL` is for the CLI.
        migration: Box<tokio_postgres::Config>,
    },
}

/// Neither URL is printed: both may hold a password.
impl std::fmt::Debug for DatabaseSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Embedded { data_dir } => f
                .debug_struct("Embedded")
                .field("data_dir", data_dir)
                .finish(),
            Self::Url { .. } => f.write_str("Url(DATABASE_URL, ISSUE_TRACKER_MIGRATION_URL)"),
        }
    }
}

impl DatabaseSource {
    /// `DATABASE_URL` (with `ISSUE_TRACKER_MIGRATION_URL`), else the embedded
    /// cluster in `TENANTRY_DATA_DIR`. An empty variable counts as unset, as
    /// for `tenantry serve`.
    pub fn from_env(get: impl Fn(&str) -> Option<String>) -> anyhow::Result<Self> {
        let set = |name: &str| get(name).filter(|v| !v.is_empty());
        let Some(server) = set("DATABASE_URL") else {
            return Ok(Self::Embedded {
                data_dir: set("TENANTRY_DATA_DIR")
                    .unwrap_or_else(|| DEFAULT_DATA_DIR.into())
                    .into(),
            });
        };
        let Some(migration) = set("ISSUE_TRACKER_MIGRATION_URL") else {
            bail!(
                "DATABASE_URL is set (the server's login, tenantry_server, as for `tenantry serve`), \
                 but ISSUE_TRACKER_MIGRATION_URL is not: the tracker creates and adopts its tables \
                 at start-up as the role that runs migrations (a superuser, or a member of \
                 tenantry_owner); set it to that role's URL, or unset DATABASE_URL for the \
                 embedded database"
            );
        };
        // The values may hold passwords: errors name the variable only.
        // sslmode as libpq reads it (tenantry_db::tls); this example
        // encrypts without checking certificates (prefer, require) only.
        let parse = |url: &str, name: &str| {
            let (config, tls) = tenantry_db::tls::parse(url)
                .ok()
                .with_context(|| format!("{name} is not a PostgreSQL connection string"))?;
            if tls != tenantry_db::tls::TlsSettings::default() {
                bail!(
                    "{name}: sslmode verify-ca/verify-full and sslrootcert are not read by this \
                     example (tenantry serve and the library's DatabaseConfig::new read them); use \
                     sslmode=require"
                );
            }
            Ok(Box::new(config))
        };
        Ok(Self::Url {
            server: parse(&server, "DATABASE_URL")?,
            migration: parse(&migration, "ISSUE_TRACKER_MIGRATION_URL")?,
        })
    }
}

/// Which people's tokens are accepted next to API keys: the `TENANTRY_JWT_*`
/// variables of `tenantry serve` (docs/people.md), read into tenantry's own
/// [`JwtConfig`] and checked with its [`JwtConfig::validate`].
///
/// `TENANTRY_JWT_ISSUER` turns it on; then `TENANTRY_JWT_AUDIENCE`
/// (comma-separated, required), `TENANTRY_JWT_JWKS_URL` and/or
/// `TENANTRY_JWT_HS256_SECRET`, `TENANTRY_JWT_TENANT_CLAIM`,
/// `TENANTRY_JWT_USER_CLAIM`, `TENANTRY_JWT_LEEWAY_SECS`,
/// `TENANTRY_JWT_EMAIL_CLAIM`, `TENANTRY_JWT_EMAIL_VERIFIED_CLAIM`,
/// `TENANTRY_JWT_TRUST_EMAIL_WITHOUT_VERIFIED_CLAIM`,
/// `TENANTRY_JWT_JWKS_REFRESH_SECS`, `TENANTRY_JWT_JWKS_MIN_REFETCH_SECS` and
/// `TENANTRY_JWT_JWKS_CA_FILE`
/// (every one of [`JwtConfig::ENV_VARIABLES`]), read by
/// [`JwtConfig::apply_env`] as `tenantry serve` reads them: any of them set
/// without the issuer is refused (a misspelt issuer variable would otherwise
/// leave people locked out without a word). Unset: API keys only.
pub fn jwt_from_env(get: impl Fn(&str) -> Option<String>) -> anyhow::Result<Option<JwtConfig>> {
    let mut jwt = None;
    JwtConfig::apply_env(&mut jwt, &get).map_err(|e| anyhow::anyhow!(e))?;
    let Some(jwt) = jwt else {
        return Ok(None);
    };
    jwt.validate()
        .map_err(|e| anyhow::anyhow!("TENANTRY_JWT_*: {e}"))?;
    Ok(Some(jwt))
}

/// The tracker's own variables: every other `ISSUE_TRACKER_*` is refused.
pub const VARIABLES: [&str; 2] = ["ISSUE_TRACKER_LISTEN", "ISSUE_TRACKER_MIGRATION_URL"];

/// Refuses an `ISSUE_TRACKER_*` variable among `names` (the process's
/// environment) that is none of [`VARIABLES`]: misspelt, it would be ignored
/// while the setting it meant keeps its default (the tracker listening on
/// another port, say), as `tenantry serve` refuses a misspelt
/// `TENANTRY_JWT_*` (found by a review of the example).
pub fn refuse_unknown(names: impl IntoIterator<Item = String>) -> anyhow::Result<()> {
    match names
        .into_iter()
        .filter(|n| n.starts_with("ISSUE_TRACKER_") && !VARIABLES.contains(&n.as_str()))
        .min()
    {
        Some(name) => anyhow::bail!(
            "{name} is not a variable the tracker reads; its variables are {}",
            VARIABLES.join(", ")
        ),
        None => Ok(()),
    }
}

/// `ISSUE_TRACKER_LISTEN`, default [`DEFAULT_LISTEN`].
pub fn listen_from_env(get: impl Fn(&str) -> Option<String>) -> anyhow::Result<SocketAddr> {
    let listen = get("ISSUE_TRACKER_LISTEN")
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| DEFAULT_LISTEN.into());
    listen
        .parse()
        .with_context(|| format!("ISSUE_TRACKER_LISTEN={listen:?} is not an address:port"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An environment holding only `pairs`.
    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        }
    }

    const SECRET: &str = "a shared secret of at least thirty-two bytes";

    #[test]
    fn without_database_url_the_tracker_uses_the_embedded_database_of_tenantry_data_dir() {
        match DatabaseSource::from_env(env(&[])).unwrap() {
            DatabaseSource::Embedded { data_dir } => {
                assert_eq!(data_dir, PathBuf::from(".tenantry"))
            }
            other => panic!("{other:?}"),
        }
        let empty = env(&[
            ("DATABASE_URL", ""),
            ("TENANTRY_DATA_DIR", ".tenantry-tracker"),
        ]);
        match DatabaseSource::from_env(empty).unwrap() {
            DatabaseSource::Embedded { data_dir } => {
                assert_eq!(data_dir, PathBuf::from(".tenantry-tracker"))
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn with_database_url_the_tracker_connects_there_and_migrates_through_the_migration_url() {
        let vars = env(&[
            (
                "DATABASE_URL",
                "postgres://tenantry_server:pw@db.example.test:6543/app",
            ),
            (
                "ISSUE_TRACKER_MIGRATION_URL",
                "postgres://migrator:pw@db.example.test/app",
            ),
            ("TENANTRY_DATA_DIR", "ignored"),
        ]);
        match DatabaseSource::from_env(vars).unwrap() {
            DatabaseSource::Url { server, migration } => {
                assert_eq!(server.get_user(), Some("tenantry_server"));
                assert_eq!(server.get_ports(), [6543]);
                assert_eq!(migration.get_user(), Some("migrator"));
                assert_eq!(migration.get_dbname(), Some("app"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn database_url_without_a_migration_url_or_unparsable_is_refused_without_echoing_it() {
        let alone = env(&[("DATABASE_URL", "postgres://u:hunter2@h/db")]);
        let e = format!("{:#}", DatabaseSource::from_env(alone).unwrap_err());
        assert!(e.contains("ISSUE_TRACKER_MIGRATION_URL is not"), "{e}");
        let bad = env(&[
            ("DATABASE_URL", "postgres://u:hunter2@h:notaport/db"),
            ("ISSUE_TRACKER_MIGRATION_URL", "postgres://u:hunter2@h/db"),
        ]);
        let e = format!("{:#}", DatabaseSource::from_env(bad).unwrap_err());
        assert!(e.contains("DATABASE_URL is not a PostgreSQL"), "{e}");
        assert!(!e.contains("hunter2"), "{e}");
    }

    #[test]
    fn without_tenantry_jwt_issuer_only_api_keys_are_accepted() {
        assert!(jwt_from_env(env(&[])).unwrap().is_none());
        assert!(jwt_from_env(env(&[("TENANTRY_JWT_ISSUER", "")]))
            .unwrap()
            .is_none());
    }

    #[test]
    fn the_tenantry_jwt_variables_are_read_as_tenantry_serve_reads_them() {
        let jwt = jwt_from_env(env(&[
            ("TENANTRY_JWT_ISSUER", "https://idp.example.test/"),
            ("TENANTRY_JWT_AUDIENCE", "tracker, other ,"),
            ("TENANTRY_JWT_HS256_SECRET", SECRET),
            (
                "TENANTRY_JWT_JWKS_URL",
                "https://idp.example.test/jwks.json",
            ),
            ("TENANTRY_JWT_TENANT_CLAIM", "tid"),
            ("TENANTRY_JWT_USER_CLAIM", "uid"),
            ("TENANTRY_JWT_LEEWAY_SECS", "5"),
            ("TENANTRY_JWT_EMAIL_VERIFIED_CLAIM", "verified"),
            ("TENANTRY_JWT_TRUST_EMAIL_WITHOUT_VERIFIED_CLAIM", "true"),
        ]))
        .unwrap()
        .expect("configured");
        assert_eq!(jwt.issuer, "https://idp.example.test/");
        assert_eq!(jwt.audience, ["tracker", "other"]);
        assert_eq!(jwt.hs256_secret.as_deref(), Some(SECRET));
        assert_eq!(
            jwt.jwks_url.as_deref(),
            Some("https://idp.example.test/jwks.json")
        );
        assert_eq!(jwt.tenant_claim.as_deref(), Some("tid"));
        assert_eq!(jwt.user_claim, "uid");
        assert_eq!(jwt.leeway_secs, 5);
        assert_eq!(jwt.email_verified_claim, "verified");
        assert!(jwt.trust_email_without_verified_claim);
        // The rest keep JwtConfig's defaults.
        assert_eq!(jwt.email_claim, "email");
    }

    #[test]
    fn an_incomplete_or_invalid_jwt_configuration_is_refused_at_start_up() {
        let refused = |pairs: &[(&str, &str)]| {
            format!(
                "{:#}",
                jwt_from_env(env(pairs)).expect_err(&format!("{pairs:?} was accepted"))
            )
        };
        let issuer = ("TENANTRY_JWT_ISSUER", "https://idp.example.test/");
        let secret = ("TENANTRY_JWT_HS256_SECRET", SECRET);
        let audience = ("TENANTRY_JWT_AUDIENCE", "tracker");
        assert!(refused(&[issuer, secret]).contains("audience"));
        assert!(refused(&[issuer, audience]).contains("jwks_url or hs256_secret"));
        assert!(
            refused(&[issuer, audience, ("TENANTRY_JWT_HS256_SECRET", "short")])
                .contains("at least 32")
        );
        assert!(refused(&[
            issuer,
            audience,
            secret,
            ("TENANTRY_JWT_LEEWAY_SECS", "soon")
        ])
        .contains("TENANTRY_JWT_LEEWAY_SECS"));
        assert!(refused(&[audience, secret]).contains("is set but no issuer is"));
    }

    #[test]
    fn the_listen_address_defaults_to_port_8090_on_loopback() {
        assert_eq!(
            listen_from_env(env(&[])).unwrap(),
            "127.0.0.1:8090".parse().unwrap()
        );
        assert_eq!(
            listen_from_env(env(&[("ISSUE_TRACKER_LISTEN", "0.0.0.0:9000")]))
                .unwrap()
                .port(),
            9000
        );
        assert!(listen_from_env(env(&[("ISSUE_TRACKER_LISTEN", "nowhere")])).is_err());
    }

    #[test]
    fn a_misspelt_tracker_variable_is_refused_naming_it_and_the_real_ones_pass() {
        let names = |list: &[&str]| list.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>();
        let e = refuse_unknown(names(&[
            "PATH",
            "ISSUE_TRACKER_LISTN",
            "ISSUE_TRACKER_LISTEN",
        ]))
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("ISSUE_TRACKER_LISTN is not"), "{e}");
        assert!(e.contains("ISSUE_TRACKER_MIGRATION_URL"), "{e}");
        refuse_unknown(names(&[
            "ISSUE_TRACKER_LISTEN",
            "ISSUE_TRACKER_MIGRATION_URL",
            "HOME",
        ]))
        .unwrap();
    }
}
