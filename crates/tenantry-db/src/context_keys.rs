//! Rotating the context keys (`migrations/repeatable/12_context_keys.sql`): add a key, list them, retire one, through the operator's connection (the owner role or a superuser; the server's login may not). Signing and verifying with a key is [`crate::ContextKey`]'s.
//!
//! A rotation without downtime: [`add`] a key; restart each server with it
//! (`TENANTRY_CONTEXT_KEY`) while the others keep verifying with the old one;
//! then [`retire`] the old key. From that commit on, every context proven
//! with it is refused: signed contexts, and the open sessions of connections
//! that opened with it, which the library closes and answers
//! [`crate::DbError::Unavailable`] (503).

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio_postgres::Client;

use crate::ContextKey;

/// A context key as `tenantry.list_context_keys()` shows it: never its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ContextKeyInfo {
    /// Its id, the part before `:` in `TENANTRY_CONTEXT_KEY`.
    pub key_id: i32,
    /// When it was added.
    pub created_at: DateTime<Utc>,
}

/// Why a context key could not be retired.
#[derive(Debug, thiserror::Error)]
pub enum ContextKeyError {
    /// No key has this id.
    #[error("context key {0} not found (`tenantry context-key list` shows the keys)")]
    NotFound(i32),
    /// It is the only key: retiring it would leave no server able to prove a context.
    #[error("context key {0} is the last one: run `tenantry context-key rotate` and move the servers to the new key first")]
    LastKey(i32),
    /// The driver's error (a role that may not manage keys gets permission denied).
    #[error(transparent)]
    Database(#[from] tokio_postgres::Error),
}

/// Adds a random key (the newest from now on) and returns it, to give to the
/// servers as `TENANTRY_CONTEXT_KEY`; the older keys keep verifying.
pub async fn add(client: &Client) -> Result<ContextKey, tokio_postgres::Error> {
    let id: i32 = client
        .query_one("SELECT tenantry.add_context_key()", &[])
        .await?
        .get(0);
    let row = client
        .query_one(
            "SELECT secret FROM tenantry.context_keys WHERE key_id = $1",
            &[&id],
        )
        .await?;
    let secret: Vec<u8> = row.get(0);
    let secret = secret
        .try_into()
        .expect("tenantry.context_keys checks that secrets are 32 bytes");
    Ok(ContextKey::new(id, secret))
}

/// Every context key, oldest first, without secrets.
pub async fn list(client: &Client) -> Result<Vec<ContextKeyInfo>, tokio_postgres::Error> {
    Ok(client
        .query(
            "SELECT key_id, created_at FROM tenantry.list_context_keys()",
            &[],
        )
        .await?
        .iter()
        .map(|row| ContextKeyInfo {
            key_id: row.get(0),
            created_at: row.get(1),
        })
        .collect())
}

/// Retires (deletes) key `id`: contexts and sessions proven with it are
/// refused from now on. Refuses an unknown id and the last key.
pub async fn retire(client: &Client, id: i32) -> Result<(), ContextKeyError> {
    match client
        .execute("SELECT tenantry.retire_context_key($1)", &[&id])
        .await
    {
        Ok(_) => Ok(()),
        Err(e) => Err(match e.as_db_error().map(|db| db.code().code()) {
            Some("TN404") => ContextKeyError::NotFound(id),
            Some("TN409") => ContextKeyError::LastKey(id),
            _ => ContextKeyError::Database(e),
        }),
    }
}
