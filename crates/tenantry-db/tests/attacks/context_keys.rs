//! Context key rotation (`12_context_keys.sql`): the server's login and every role it may assume cannot add, list or retire keys; a key added verifies beside the old one, and a retired key proves nothing any more: its signed contexts and the open sessions of connections that opened with it see no rows, alike for every tenant, never an error.

use tenantry_db::{context_keys, ContextKey, ContextKeyError, SignedContext, TenantId};
use tokio_postgres::Client;
use uuid::Uuid;

use crate::common::{count, describe, exec, strings, SERVER_ROLES};
use crate::helpers::{denied, world, ServerConn, World, READABLE_NAMES};

/// `enter_context_signed` for `t` (any backend), signed with `key`: the
/// tenant's part, `None` when refused. Panics on an error: a refusal must
/// never be one.
async fn enter_signed_with(c: &Client, key: &ContextKey, t: Uuid) -> Option<String> {
    let signed = SignedContext::new(TenantId::from_uuid(t));
    c.query_one(
        "SELECT tenantry.enter_context_signed($1, $2, $3, NULL, NULL, NULL, NULL, NULL, $4, $5)",
        &[
            &signed.pid,
            &signed.expires_at,
            &t,
            &key.id(),
            &key.sign_context(&signed),
        ],
    )
    .await
    .unwrap_or_else(|e| panic!("enter_context_signed: {}", describe(&e)))
    .get(0)
}

/// What `t` reads in one transaction on a pooled connection whose context is
/// signed with `key`; `None` when the database refused the context (and the
/// transaction then read no row).
async fn names_signed_with(c: &Client, key: &ContextKey, t: Uuid) -> Option<Vec<String>> {
    exec(c, "BEGIN").await;
    let part = enter_signed_with(c, key, t).await;
    let names = strings(c, READABLE_NAMES).await;
    exec(c, "COMMIT").await;
    match part {
        Some(_) => Some(names),
        None => {
            assert_eq!(names, Vec::<String>::new(), "a refused context reads rows");
            None
        }
    }
}

/// What `t` reads in one transaction of a server connection; `None` when the
/// database refused its context. A refusal answers NULL (no error), and the
/// transaction reads no row.
async fn names_on(conn: &mut ServerConn, t: Uuid) -> Option<Vec<String>> {
    exec(&conn.client, "BEGIN").await;
    let part = conn
        .enter(Some(t))
        .await
        .unwrap_or_else(|e| panic!("enter_context: {}", describe(&e)));
    let names = strings(&conn.client, READABLE_NAMES).await;
    match part {
        Some(_) => {
            conn.commit().await;
            Some(names)
        }
        None => {
            assert_eq!(names, Vec::<String>::new(), "a refused context reads rows");
            conn.rollback().await;
            None
        }
    }
}

#[tokio::test]
async fn the_servers_login_and_every_role_it_can_assume_cannot_add_list_or_retire_context_keys() {
    let World { tdb, admin, .. } = world().await;
    let calls = [
        "SELECT tenantry.add_context_key()",
        "SELECT * FROM tenantry.list_context_keys()",
        "SELECT tenantry.retire_context_key(1)",
    ];
    for role in SERVER_ROLES {
        let c = tdb.server_client().await;
        if let Some(role) = role {
            exec(&c, &format!("SET ROLE {role}")).await;
        }
        for sql in calls {
            let message = denied(&c, sql, "42501").await;
            assert!(
                message.contains("permission denied for function"),
                "{role:?} {sql}: {message}"
            );
        }
        denied(&c, "SET ROLE tenantry_owner", "42501").await;
    }
    // Nothing was added or removed, and no role but the owner may execute them.
    assert_eq!(
        count(&admin, "SELECT count(*) FROM tenantry.context_keys").await,
        1
    );
    assert_eq!(
        count(
            &admin,
            "SELECT count(*) FROM pg_proc p,
                    aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a
              WHERE p.pronamespace = 'tenantry'::regnamespace
                AND p.proname IN ('add_context_key', 'list_context_keys', 'retire_context_key')
                AND a.grantee <> p.proowner"
        )
        .await,
        0,
        "EXECUTE granted to PUBLIC or a role"
    );
}

#[tokio::test]
async fn an_operator_adds_lists_and_retires_context_keys_but_never_the_last_one() {
    let World { tdb, admin, .. } = world().await;
    let old = tenantry_db::testing::context_key().clone();
    // As the owner role, the way an operator who is its member runs them.
    exec(&admin, "SET ROLE tenantry_owner").await;
    let new = context_keys::add(&admin).await.unwrap();
    assert_eq!(new.id(), old.id() + 1);
    assert_eq!(ContextKey::newest(&admin).await.unwrap(), Some(new.clone()));
    let listed = context_keys::list(&admin).await.unwrap();
    assert_eq!(
        listed.iter().map(|k| k.key_id).collect::<Vec<_>>(),
        [old.id(), new.id()]
    );
    let columns = strings(
        &admin,
        "SELECT unnest(p.proargnames)::text FROM pg_proc p
          WHERE p.pronamespace = 'tenantry'::regnamespace AND p.proname = 'list_context_keys'",
    )
    .await;
    assert_eq!(
        columns,
        ["created_at", "key_id"],
        "the list shows no secret"
    );

    assert!(matches!(
        context_keys::retire(&admin, 99).await,
        Err(ContextKeyError::NotFound(99))
    ));
    context_keys::retire(&admin, old.id()).await.unwrap();
    assert!(matches!(
        context_keys::retire(&admin, new.id()).await,
        Err(ContextKeyError::LastKey(id)) if id == new.id()
    ));
    assert_eq!(
        context_keys::list(&admin)
            .await
            .unwrap()
            .iter()
            .map(|k| k.key_id)
            .collect::<Vec<_>>(),
        [new.id()]
    );
    // A retired key's id is never given again (found by an operator's audit:
    // the next key took it, and a session opened with the retired key
    // would have lived on under it).
    let newest = context_keys::add(&admin).await.unwrap();
    assert_eq!(newest.id(), new.id() + 1);
    context_keys::retire(&admin, newest.id()).await.unwrap();
    let after = context_keys::add(&admin).await.unwrap();
    assert_eq!(after.id(), newest.id() + 1, "not the retired key's id");
    context_keys::retire(&admin, after.id()).await.unwrap();
    // Two added at once get two ids.
    let (x, y) = tokio::join!(
        async { context_keys::add(&tdb.superuser_client().await).await },
        async { context_keys::add(&tdb.superuser_client().await).await }
    );
    assert_ne!(x.unwrap().id(), y.unwrap().id());
}

#[tokio::test]
async fn a_context_key_added_verifies_beside_the_old_one_and_a_retired_one_proves_nothing_for_any_tenant(
) {
    let World {
        tdb, admin, a, b, ..
    } = world().await;
    let old = tenantry_db::testing::context_key().clone();
    let mut old_session = ServerConn::open(&tdb).await;
    let pooled = tdb.server_client().await;
    exec(&pooled, "SET ROLE tenantry_app").await;
    assert_eq!(names_on(&mut old_session, a).await.unwrap(), ["a-doc"]);

    // Rotate: the old key's session and signatures keep working, the new key works.
    let new = context_keys::add(&admin).await.unwrap();
    assert_eq!(names_on(&mut old_session, a).await.unwrap(), ["a-doc"]);
    assert_eq!(
        names_signed_with(&pooled, &old, b).await.unwrap(),
        ["b-secret"]
    );
    let mut new_session = ServerConn::open_with(&tdb, &new).await.unwrap();
    assert_eq!(names_on(&mut new_session, a).await.unwrap(), ["a-doc"]);
    assert_eq!(
        names_signed_with(&pooled, &new, b).await.unwrap(),
        ["b-secret"]
    );

    // Retire the old key: everything proven with it fails closed, alike for A and B.
    context_keys::retire(&admin, old.id()).await.unwrap();
    for t in [a, b, Uuid::new_v4()] {
        assert_eq!(
            names_on(&mut old_session, t).await,
            None,
            "open session, {t}"
        );
        assert_eq!(
            names_signed_with(&pooled, &old, t).await,
            None,
            "signed, {t}"
        );
    }
    assert_eq!(
        ServerConn::open_with(&tdb, &old).await.err().as_deref(),
        Some("unknown key")
    );
    // A forged key with the retired id is no better.
    let forged = ContextKey::new(old.id(), rand::random());
    assert_eq!(names_signed_with(&pooled, &forged, a).await, None);

    // The new key keeps proving contexts, on its open session and signed.
    assert_eq!(names_on(&mut new_session, a).await.unwrap(), ["a-doc"]);
    assert_eq!(names_on(&mut new_session, b).await.unwrap(), ["b-secret"]);
    assert_eq!(
        names_signed_with(&pooled, &new, a).await.unwrap(),
        ["a-doc"]
    );
}
