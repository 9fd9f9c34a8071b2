//! Idempotency keys of tenant writes: the key and request fingerprint types, claiming a key and storing the response in the write's own transaction ([`TenantScope::claim_idempotency_key`], [`TenantScope::commit_with_response`]), the retried unit of work that does both around a write ([`Database::in_tenant_idempotent`]), and the batched expiry ([`AdminScope::expire_idempotency_keys`]). Reading the header and answering HTTP is the web layer's.
//!
//! Why in the write's transaction: the key's row and the write commit
//! together or not at all, so a client whose answer was lost after COMMIT
//! (a crash, a cut connection) and who retries with the same key finds the
//! row and gets the first response back; nothing is written twice
//! (migrations/repeatable/13_idempotency.sql).

use std::{future::Future, ops::ControlFlow};

use sha2::{Digest, Sha256};
use tokio_postgres::types::Type;

use crate::{
    retry::Commit,
    scope::{Stmt, Tx},
    AdminScope, Database, DbError, ScopeFuture, TenantContext, TenantScope,
};

/// How long a stored response is replayed (the expiry in 13_idempotency.sql).
pub const IDEMPOTENCY_KEY_LIFETIME: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// The field name errors about the key name.
const FIELD: &str = "Idempotency-Key";

/// A client's idempotency key: 1 to 255 visible ASCII characters (`!` to
/// `~`; no spaces, no control characters), compared exactly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// Longest key, as Stripe allows.
    pub const MAX_LEN: usize = 255;

    /// The key, if `text` is one.
    pub fn parse(text: &str) -> Option<Self> {
        let fits = (1..=Self::MAX_LEN).contains(&text.len());
        (fits && text.bytes().all(|b| b.is_ascii_graphic())).then(|| Self(text.to_owned()))
    }

    /// The key's text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A write request under an idempotency key: the key and the SHA-256 of what
/// makes two requests the same one (method, path with query, body bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotentRequest {
    key: IdempotencyKey,
    fingerprint: [u8; 32],
    /// Whose namespace the key lives in.
    namespace: Namespace,
}

/// Whose keys an idempotency key is among: a tenant's (the transaction's
/// tenant), the operator's (the admin token's writes), or a signed-in
/// person's before any tenant (creating a tenant of their own).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Namespace {
    Tenant,
    Operator,
    Person,
}

impl IdempotentRequest {
    /// The request `method path` with `body` under `key`. Each part is
    /// length-prefixed, so no two different requests hash the same input.
    pub fn new(key: IdempotencyKey, method: &str, path: &str, body: &[u8]) -> Self {
        Self::with_body_in_pieces(key, method, path, &[body])
    }

    /// [`Self::new`] with the body in the pieces it arrived in: the same
    /// fingerprint as the whole body's, without putting it together.
    pub fn with_body_in_pieces<B: AsRef<[u8]>>(
        key: IdempotencyKey,
        method: &str,
        path: &str,
        body: &[B],
    ) -> Self {
        let mut hash = Sha256::new();
        for part in [method.as_bytes(), path.as_bytes()] {
            hash.update((part.len() as u64).to_be_bytes());
            hash.update(part);
        }
        let length: usize = body.iter().map(|piece| piece.as_ref().len()).sum();
        hash.update((length as u64).to_be_bytes());
        for piece in body {
            hash.update(piece.as_ref());
        }
        Self {
            key,
            fingerprint: hash.finalize().into(),
            namespace: Namespace::Tenant,
        }
    }

    /// The same request made by `caller` (a key id, a member, an
    /// impersonation, the operator): the caller is part of what makes two
    /// requests the same one, so a replay answers only the caller that made
    /// the first request; anyone else reusing its key gets 422, never its
    /// stored response (which may answer a write only the first caller was
    /// allowed to make).
    pub fn by(&self, caller: &str) -> Self {
        let mut hash = Sha256::new();
        for part in [&self.fingerprint[..], caller.as_bytes()] {
            hash.update((part.len() as u64).to_be_bytes());
            hash.update(part);
        }
        Self {
            key: self.key.clone(),
            fingerprint: hash.finalize().into(),
            namespace: self.namespace,
        }
    }

    /// This request as the operator's (the admin token's): its key is kept in
    /// the operator's namespace, whatever tenant the write acts in.
    pub fn for_operator(&self) -> Self {
        Self {
            namespace: Namespace::Operator,
            ..self.by("operator")
        }
    }

    /// This request as the signed-in person `user`'s, made before any tenant
    /// (creating a tenant of their own): its key is kept in that person's
    /// namespace, and only they replay it.
    pub fn for_person(&self, user: crate::UserId) -> Self {
        Self {
            namespace: Namespace::Person,
            ..self.by(&format!("user:{user}"))
        }
    }

    /// The key.
    pub fn key(&self) -> &IdempotencyKey {
        &self.key
    }
}

/// Claims `request`'s key in its namespace (the transaction's first
/// statement): `None` when the key is now this transaction's, else the stored
/// response of the same request (a different request is 422).
pub(crate) async fn claim(
    tx: &mut Tx,
    request: &IdempotentRequest,
) -> Result<Option<StoredResponse>, DbError> {
    let rows = tx
        .rows(Stmt {
            sql: claim_sql(request),
            params: &[&request.key.as_str(), &request.fingerprint.as_slice()],
            types: &[Type::TEXT, Type::BYTEA],
        })
        .await?;
    let Some(row) = rows.first() else {
        return Ok(None);
    };
    let same: bool = row.try_get(2)?;
    if !same {
        return Err(DbError::Invalid {
            field: Some(FIELD.into()),
            message: "this Idempotency-Key was used for another request (method, path, body or \
                      caller differ) in the last 24 hours; use a new key for a new request"
                .into(),
        });
    }
    let status: Option<i16> = row.try_get(0)?;
    let status = status
        .and_then(|s| u16::try_from(s).ok())
        .ok_or_else(|| DbError::Internal("a committed idempotency key has no status".into()))?;
    Ok(Some(StoredResponse {
        status,
        body: row.try_get(1)?,
    }))
}

/// Stores `response` under the key the transaction claimed and commits, in
/// one flight: the write and its response commit together, or nothing does.
pub(crate) async fn store_and_commit(
    tx: &mut Tx,
    request: &IdempotentRequest,
    response: &StoredResponse,
) -> Result<(), DbError> {
    let status = i16::try_from(response.status)
        .map_err(|_| DbError::Internal(format!("status {} out of range", response.status)))?;
    tx.query_and_commit(Stmt {
        sql: store_sql(request),
        params: &[&request.key.as_str(), &status, &response.body],
        types: &[Type::TEXT, Type::INT2, Type::BYTEA],
    })
    .await
    .map(drop)
}

/// The claim statement of `request`'s namespace.
fn claim_sql(request: &IdempotentRequest) -> &'static str {
    match request.namespace {
        Namespace::Tenant => {
            "SELECT status, body, same_request FROM tenantry.claim_idempotency_key($1, $2)"
        }
        Namespace::Operator => {
            "SELECT status, body, same_request FROM tenantry.claim_operator_idempotency_key($1, $2)"
        }
        Namespace::Person => {
            "SELECT status, body, same_request FROM tenantry.claim_person_idempotency_key($1, $2)"
        }
    }
}

/// The statement storing the response under `request`'s key, sent with
/// COMMIT; it fails (and so nothing commits) unless it stored it: the work
/// must not have left the key's namespace (say, by changing the context).
fn store_sql(request: &IdempotentRequest) -> &'static str {
    match request.namespace {
        Namespace::Tenant => "SELECT tenantry.complete_idempotency_key($1, $2, $3)",
        Namespace::Operator => "SELECT tenantry.complete_operator_idempotency_key($1, $2, $3)",
        Namespace::Person => "SELECT tenantry.complete_person_idempotency_key($1, $2, $3)",
    }
}

/// A response as stored under a key: HTTP status and body bytes (`None`: no body).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResponse {
    /// HTTP status, 200 to 499.
    pub status: u16,
    /// The body exactly as sent (JSON), `None` for none.
    pub body: Option<Vec<u8>>,
}

/// What a write under an idempotency key gave: this request's own result, or
/// the response stored by the first request with the key.
#[derive(Debug)]
pub enum Idempotent<T> {
    /// The write ran now (and its response is stored under the key, when there is one).
    Fresh(T),
    /// A committed request with the same key and the same fingerprint: its response.
    Replayed(StoredResponse),
}

impl TenantScope {
    /// Claims `request`'s key for this transaction (first statement of the
    /// transaction). `None`: the key is this transaction's, and its row
    /// commits with it. `Some`: a committed request used the key, this is
    /// its response. Another request under the same key is
    /// [`DbError::Invalid`] (field `Idempotency-Key`, 422); the same key held
    /// by a transaction still running is [`DbError::Conflict`] (409).
    pub async fn claim_idempotency_key(
        &mut self,
        request: &IdempotentRequest,
    ) -> Result<Option<StoredResponse>, DbError> {
        claim(&mut self.tx, request).await
    }

    /// Stores `response` under the key this transaction claimed and commits,
    /// in one flight: the write and its response commit together.
    pub async fn commit_with_response(
        mut self,
        request: &IdempotentRequest,
        response: &StoredResponse,
    ) -> Result<(), DbError> {
        store_and_commit(&mut self.tx, request, response).await
    }
}

impl AdminScope {
    /// [`TenantScope::claim_idempotency_key`] for the operator's writes (the
    /// key in the operator's namespace; `request` made with
    /// [`IdempotentRequest::for_operator`]).
    pub async fn claim_idempotency_key(
        &mut self,
        request: &IdempotentRequest,
    ) -> Result<Option<StoredResponse>, DbError> {
        claim(&mut self.tx, request).await
    }

    /// [`TenantScope::commit_with_response`] for the operator's writes.
    pub async fn commit_with_response(
        mut self,
        request: &IdempotentRequest,
        response: &StoredResponse,
    ) -> Result<(), DbError> {
        store_and_commit(&mut self.tx, request, response).await
    }

    /// Deletes up to `batch` idempotency keys older than 24 hours (any
    /// tenant) and returns how many; row locks only. Call it until it
    /// returns less than `batch`, a transaction each.
    pub async fn expire_idempotency_keys(&mut self, batch: i32) -> Result<i32, DbError> {
        let rows = self
            .tx
            .rows(Stmt {
                sql: "SELECT tenantry.expire_idempotency_keys($1)",
                params: &[&batch],
                types: &[Type::INT4],
            })
            .await?;
        rows.first()
            .map(|r| r.try_get(0))
            .transpose()?
            .ok_or_else(|| DbError::Internal("expire_idempotency_keys returned no row".into()))
    }
}

/// A scope that keeps idempotency keys: the transaction its key is claimed
/// and stored in, and its plain commit ([`Commit`]) for a replay.
trait KeepsKeys: Commit + Sized + Send {
    fn tx(&mut self) -> &mut Tx;
}

impl KeepsKeys for TenantScope {
    fn tx(&mut self) -> &mut Tx {
        &mut self.tx
    }
}

impl KeepsKeys for AdminScope {
    fn tx(&mut self) -> &mut Tx {
        &mut self.tx
    }
}

impl Database {
    /// [`Database::in_tenant`] under an optional idempotency key: in one
    /// transaction, claims the key (a committed request with it answers
    /// [`Idempotent::Replayed`] without running `work`), runs `work`, stores
    /// what `respond` makes of its result, and commits. Without a key it is
    /// `in_tenant`. Collisions with concurrent transactions run it all again,
    /// claim included; errors store nothing (the key stays free).
    pub async fn in_tenant_idempotent<A: Sync + ?Sized, T>(
        &self,
        ctx: &TenantContext,
        request: Option<&IdempotentRequest>,
        args: &A,
        work: impl for<'s> FnMut(&'s mut TenantScope, &'s A) -> ScopeFuture<'s, T>,
        respond: impl Fn(&T) -> Result<StoredResponse, DbError>,
    ) -> Result<Idempotent<T>, DbError> {
        let Some(request) = request else {
            return self.in_tenant(ctx, args, work).await.map(Idempotent::Fresh);
        };
        self.idempotently(|| self.tenant(ctx.clone()), request, args, work, respond)
            .await
    }

    /// [`Database::in_admin`] under an optional idempotency key of the
    /// operator's ([`IdempotentRequest::for_operator`]), as
    /// [`Database::in_tenant_idempotent`] does for a tenant's.
    pub async fn in_admin_idempotent<A: Sync + ?Sized, T>(
        &self,
        actor: &str,
        request: Option<&IdempotentRequest>,
        args: &A,
        work: impl for<'s> FnMut(&'s mut AdminScope, &'s A) -> ScopeFuture<'s, T>,
        respond: impl Fn(&T) -> Result<StoredResponse, DbError>,
    ) -> Result<Idempotent<T>, DbError> {
        let Some(request) = request else {
            return self
                .in_admin(actor, args, work)
                .await
                .map(Idempotent::Fresh);
        };
        self.idempotently(|| self.admin(actor), request, args, work, respond)
            .await
    }

    async fn idempotently<S: KeepsKeys, A: Sync + ?Sized, T, Open>(
        &self,
        mut open: impl FnMut() -> Open,
        request: &IdempotentRequest,
        args: &A,
        mut work: impl for<'s> FnMut(&'s mut S, &'s A) -> ScopeFuture<'s, T>,
        respond: impl Fn(&T) -> Result<StoredResponse, DbError>,
    ) -> Result<Idempotent<T>, DbError>
    where
        Open: Future<Output = Result<S, DbError>>,
    {
        let mut attempt = 1;
        loop {
            let result = async {
                let mut scope = open().await?;
                if let Some(stored) = claim(scope.tx(), request).await? {
                    scope.commit().await?;
                    return Ok(Idempotent::Replayed(stored));
                }
                let value = work(&mut scope, args).await?;
                let response = respond(&value)?;
                store_and_commit(scope.tx(), request, &response).await?;
                Ok(Idempotent::Fresh(value))
            }
            .await;
            if let ControlFlow::Break(answer) =
                self.retry_policy().settle(&mut attempt, result).await
            {
                return answer;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_one_to_255_visible_ascii_characters() {
        assert!(IdempotencyKey::parse("a").is_some());
        assert!(IdempotencyKey::parse(&"k".repeat(255)).is_some());
        assert!(IdempotencyKey::parse("order-42_retry:1/~!").is_some());
        for bad in ["", " ", "a b", "tab\t", "é", "line\n", &"k".repeat(256)] {
            assert!(IdempotencyKey::parse(bad).is_none(), "{bad:?} accepted");
        }
    }

    #[test]
    fn the_fingerprint_tells_method_path_and_body_apart() {
        let key = || IdempotencyKey::parse("k").unwrap();
        let base = IdempotentRequest::new(key(), "POST", "/v1/resources", b"{}");
        assert_eq!(
            base,
            IdempotentRequest::new(key(), "POST", "/v1/resources", b"{}")
        );
        for other in [
            IdempotentRequest::new(key(), "PATCH", "/v1/resources", b"{}"),
            IdempotentRequest::new(key(), "POST", "/v1/resource", b"s{}"),
            IdempotentRequest::new(key(), "POST", "/v1/resources", b"{} "),
        ] {
            assert_ne!(base.fingerprint, other.fingerprint);
        }
        // The stored format, pinned: each part's length as 8 big-endian
        // bytes, then the part. Keys stored by earlier versions replay only
        // while it stays so.
        assert_eq!(
            hex::encode(base.fingerprint),
            "da5cfd64c6adcc25e5ba772ceba053ba218f317435f2c937a4de4f839e38cdfd"
        );
        // And the caller's layer over it, as a key's and the operator's
        // requests are stored (the label's format is TenantCaller's).
        assert_eq!(
            hex::encode(
                base.by("key:00000000-0000-0000-0000-000000000001")
                    .fingerprint
            ),
            "a683d83ef71da00154ad3a4ad80b435e3f81bd6a1ad96277ec3c5c8cf92efb96"
        );
        assert_eq!(
            hex::encode(base.for_operator().fingerprint),
            "c53c453207204f674178864ca744df795214fb36601680617a02535e07c760e5"
        );
        assert_eq!(
            IdempotentRequest::with_body_in_pieces(
                key(),
                "POST",
                "/v1/resources",
                &[&b"{"[..], b"", b"}"]
            ),
            base
        );
    }
}
