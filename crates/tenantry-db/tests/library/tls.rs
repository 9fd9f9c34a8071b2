//! TLS to PostgreSQL: a cluster of its own that listens on TCP with a certificate of a test authority, reached by the pool and by a plain connection as `sslmode` and `sslrootcert` say.

use std::os::unix::fs::MetadataExt;

use tenantry_db::{
    provision,
    testing::certificates::{authority, openssl, server_certificate},
    Database, DatabaseConfig, DbError, NewTenant, ServerLogin,
};
use tenantry_embedded::{ClusterOptions, EmbeddedCluster};

/// Creates a tenant through `db` (a connection of its pool, as the server's login).
async fn create(db: &Database) -> Result<(), DbError> {
    let mut admin = db.admin("tls test").await?;
    admin
        .create_tenant(&NewTenant {
            name: "over tls".into(),
            ..Default::default()
        })
        .await?;
    admin.commit().await
}

async fn tls_in_use(superuser: &tokio_postgres::Client) -> i64 {
    superuser
        .query_one(
            "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)
              WHERE a.usename = 'tenantry_server' AND s.ssl",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn the_pool_connects_over_tls_as_sslmode_says_and_verify_full_refuses_another_authority_or_host(
) {
    let certs = tempfile::tempdir().unwrap();
    authority(certs.path(), "ca");
    authority(certs.path(), "other_ca");
    server_certificate(certs.path(), "ca");
    let data = tenantry_embedded::temp_data_dir("tenantry-tls").unwrap();
    let mut options = ClusterOptions::new(data);
    options.tcp = Some(("127.0.0.1".into(), 0));
    options.extra_settings.push(("fsync".into(), "off".into()));
    let cluster = EmbeddedCluster::start(options).unwrap();
    // The certificate in the data directory, owned as PostgreSQL wants its key.
    let pgdata = cluster.data_dir().join("pgdata");
    let owner = std::fs::metadata(&pgdata).unwrap();
    for file in ["server.crt", "server.key"] {
        let to = pgdata.join(file);
        std::fs::copy(certs.path().join(file), &to).unwrap();
        std::os::unix::fs::chown(&to, Some(owner.uid()), Some(owner.gid())).unwrap();
    }
    std::fs::set_permissions(
        pgdata.join("server.key"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let superuser = cluster.tcp_superuser_config("postgres").unwrap();
    let (su, conn) = superuser.connect(tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    su.batch_execute("ALTER SYSTEM SET ssl = on").await.unwrap();
    su.batch_execute("SELECT pg_reload_conf()").await.unwrap();
    drop(su);
    let provisioned = provision(&superuser, "tls_app", ServerLogin::NewPassword)
        .await
        .unwrap();
    let (su, conn) = provisioned
        .superuser
        .connect(tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let server = tenantry_db::conninfo(&provisioned.server);
    let ca = certs.path().join("ca.crt");
    let other = certs.path().join("other_ca.crt");
    let db_at = |conninfo: String| {
        Database::connect(
            &DatabaseConfig::new(conninfo).with_context_key(provisioned.context_key.clone()),
        )
        .unwrap()
    };
    let db = |extra: String| {
        Database::connect(
            &DatabaseConfig::new(format!("{server} {extra}"))
                .with_context_key(provisioned.context_key.clone()),
        )
        .unwrap()
    };

    // require: encrypted, the certificate not checked (libpq's meaning).
    let required = db("sslmode=require".into());
    create(&required).await.unwrap();
    assert!(tls_in_use(&su).await > 0);
    drop(required);
    // verify-full against the authority that issued it, by IP address.
    create(&db(format!(
        "sslmode=verify-full sslrootcert={}",
        ca.display()
    )))
    .await
    .unwrap();
    // Another authority: refused, as an outage (503), never a plain connection.
    match create(&db(format!(
        "sslmode=verify-full sslrootcert={}",
        other.display()
    )))
    .await
    {
        Err(DbError::Unavailable(message)) => assert!(message.contains("TLS"), "{message}"),
        other => panic!("{other:?}"),
    }
    // A host name the certificate does not hold: verify-full refuses it,
    // verify-ca (the chain only) takes it.
    let login = &provisioned.server;
    let by_name = |mode: &str| {
        tenantry_db::conninfo(login.clone().host("db.invalid"))
            .replace("host=127.0.0.1,db.invalid", "host=db.invalid")
            + &format!(
                " hostaddr=127.0.0.1 sslmode={mode} sslrootcert={}",
                ca.display()
            )
    };
    assert!(
        by_name("x").contains("host=db.invalid "),
        "{}",
        by_name("x")
    );
    match create(&db_at(by_name("verify-full"))).await {
        Err(DbError::Unavailable(message)) => assert!(message.contains("TLS"), "{message}"),
        other => panic!("{other:?}"),
    }
    create(&db_at(by_name("verify-ca"))).await.unwrap();
    // The invalidation listener connects the same way.
    let listening = db(format!("sslmode=verify-full sslrootcert={}", ca.display()));
    let feed = tenantry_db::Invalidations::start(
        &listening,
        &tenantry_db::ListenTo::Database,
        Default::default(),
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !feed.is_listening() {
        assert!(
            std::time::Instant::now() < deadline,
            "the listener never connected"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // A certificate webpki does not read (X.509 v1, as Citus makes its
    // own): require still connects, encrypted, as libpq does.
    openssl(
        certs.path(),
        &[
            "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=old", "-keyout", "v1.key",
            "-out", "v1.csr",
        ],
    );
    openssl(
        certs.path(),
        &[
            "x509",
            "-req",
            "-in",
            "v1.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-out",
            "v1.crt",
        ],
    );
    for (from, to) in [("v1.crt", "server.crt"), ("v1.key", "server.key")] {
        std::fs::copy(certs.path().join(from), pgdata.join(to)).unwrap();
    }
    su.batch_execute("SELECT pg_reload_conf()").await.unwrap();
    let old = db("sslmode=require".into());
    create(&old).await.unwrap();
    assert!(tls_in_use(&su).await > 0);
    drop(old);
}
