//! Moving a tenant between the shared (pooled) and the schema tier while it keeps working: the steps of `repeatable/07_schemas.sql` (start, copy in batches, catch up, cut over, or abort), each its own administrative transaction, so a move can be interrupted at any point and resumed or aborted.

use serde::Serialize;
use tokio_postgres::types::Type;

use crate::{scope::Stmt, AdminScope, Database, DbError, Isolation, TenantId};

/// What a finished move reports.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TierMove {
    /// The tenant moved.
    pub tenant_id: TenantId,
    /// Its tier now.
    pub isolation: Isolation,
    /// Rows that changed tables in the move (0 when it was in that tier already).
    pub rows_moved: i64,
    /// Work done at the cut-over, under the tenant's lock: rows the batches
    /// before it left (copied or moved), plus each recorded write of the
    /// tenant's that it copied again (a row written twice counts twice).
    pub cutover_rows: i64,
    /// How long the cut-over held back the tenant's own writes, in milliseconds
    /// (nobody else's writes wait for a move).
    pub cutover_ms: f64,
    /// `true` when this call moved nothing: the tenant was in that tier
    /// already (or another caller's move of it finished first).
    pub unchanged: bool,
}

/// Where a move stands, for progress bars.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MoveProgress {
    /// The move began, or an interrupted one resumes.
    Started {
        /// Rows the tenant holds.
        rows: i64,
        /// A move to that tier was under way already.
        resumed: bool,
    },
    /// Towards the shared tier, before the first batch: transactions that
    /// were open when the move began are still running (the batches wait
    /// for them, [`AdminScope::tier_move_wait`]).
    Waiting {
        /// How many are still open.
        transactions: i64,
    },
    /// More rows copied into the new tier (towards the shared tier: moved there).
    Copied {
        /// How many, this batch.
        rows: i64,
    },
    /// Writes the tenant made during the copy applied again.
    CaughtUp {
        /// How many, this batch.
        writes: i64,
    },
    /// The cut-over began: the tenant's writes wait until it ends.
    CuttingOver,
}

/// How a move step answered `tier_move_start`.
fn started(state: &str) -> Result<Option<bool>, DbError> {
    match state {
        "done" => Ok(None),
        "started" => Ok(Some(false)),
        "resumed" => Ok(Some(true)),
        other => Err(DbError::Internal(format!("unknown move state {other}"))),
    }
}

impl AdminScope {
    async fn one<T>(
        &mut self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
        types: &[Type],
    ) -> Result<T, DbError>
    where
        T: for<'a> tokio_postgres::types::FromSql<'a>,
    {
        let rows = self.tx.rows(Stmt { sql, params, types }).await?;
        rows.first()
            .map(|r| r.get(0))
            .ok_or_else(|| DbError::Internal(format!("no answer to {sql}")))
    }

    /// Step 1: marks the tenant as moving to `to` and, towards the schema
    /// tier, creates its empty tables (its writes are recorded from now on).
    /// Returns `None` when it is in that tier already, `Some(resumed)` otherwise.
    pub async fn tier_move_start(
        &mut self,
        id: TenantId,
        to: Isolation,
    ) -> Result<Option<bool>, DbError> {
        // Moving back, its part reads the whole family (,m,h) from now on.
        self.tx.changes_tenant(id);
        self.wait_for_locks().await?;
        let state: String = self
            .one(
                "SELECT tenantry.tier_move_start($1, $2)",
                &[id.as_uuid(), &to.as_str()],
                &[Type::UUID, Type::TEXT],
            )
            .await?;
        started(&state)
    }

    /// How many rows the tenant holds in its tenant tables.
    pub async fn tenant_row_count(&mut self, id: TenantId) -> Result<i64, DbError> {
        self.one(
            "SELECT tenantry.tenant_row_count($1)",
            &[id.as_uuid()],
            &[Type::UUID],
        )
        .await
    }

    /// Step 1b, towards the shared tier (repeat until 0, each call its own
    /// transaction): waits up to a second for the transactions that were
    /// open in the database when the move's batches were about to begin
    /// (they may have routed the tenant to its schema's tables, from which
    /// the batches move rows); returns how many are still open. Towards the
    /// schema tier: 0.
    pub async fn tier_move_wait(&mut self, id: TenantId) -> Result<i64, DbError> {
        let open: i32 = self
            .one(
                "SELECT tenantry.tier_move_wait($1)",
                &[id.as_uuid()],
                &[Type::UUID],
            )
            .await?;
        Ok(i64::from(open))
    }

    /// Step 2 (repeat until 0): copies up to `batch` more rows into the new
    /// tier; towards the shared tier, moves them there, holding back the
    /// tenant's own transactions for the batch only.
    pub async fn tier_move_copy(&mut self, id: TenantId, batch: i32) -> Result<i64, DbError> {
        self.wait_for_locks().await?;
        self.one(
            "SELECT tenantry.tier_move_copy($1, $2)",
            &[id.as_uuid(), &batch],
            &[Type::UUID, Type::INT4],
        )
        .await
    }

    /// Step 3 (repeat while it returns `batch`): copies again what the tenant
    /// wrote since its rows were copied; returns how many writes it applied.
    pub async fn tier_move_catch_up(&mut self, id: TenantId, batch: i32) -> Result<i64, DbError> {
        self.wait_for_locks().await?;
        self.one(
            "SELECT tenantry.tier_move_catch_up($1, $2)",
            &[id.as_uuid(), &batch],
            &[Type::UUID, Type::INT4],
        )
        .await
    }

    /// Step 4, the cut-over: the tenant's writes wait while the rest is
    /// copied and its tier switches; nobody else's do.
    pub async fn tier_move_finish(&mut self, id: TenantId) -> Result<TierMove, DbError> {
        self.tx.changes_tenant(id);
        self.wait_for_locks().await?;
        let report: serde_json::Value = self
            .one(
                "SELECT tenantry.tier_move_finish($1)",
                &[id.as_uuid()],
                &[Type::UUID],
            )
            .await?;
        let isolation = report["isolation"]
            .as_str()
            .ok_or_else(|| DbError::Internal("tier_move_finish: no isolation".into()))?;
        Ok(TierMove {
            tenant_id: id,
            isolation: Isolation::parse(isolation)?,
            rows_moved: report["rows_moved"].as_i64().unwrap_or(0),
            cutover_rows: report["cutover_rows"].as_i64().unwrap_or(0),
            cutover_ms: report["cutover_ms"].as_f64().unwrap_or(0.0),
            unchanged: false,
        })
    }

    /// Drops the empty tables a tenant that moved to the shared tier left in
    /// its schema, when that needs no wait; `false`: try again later.
    pub async fn tier_move_cleanup(&mut self, id: TenantId) -> Result<bool, DbError> {
        self.one(
            "SELECT tenantry.tier_move_cleanup($1)",
            &[id.as_uuid()],
            &[Type::UUID],
        )
        .await
    }

    /// Whether a move of the tenant is under way (started, neither finished
    /// nor aborted): where a move that failed half-way left it.
    pub async fn tier_move_under_way(&mut self, id: TenantId) -> Result<bool, DbError> {
        self.one(
            "SELECT moving_to IS NOT NULL FROM tenantry.tenants WHERE tenant_id = $1",
            &[id.as_uuid()],
            &[Type::UUID],
        )
        .await
    }

    /// Gives up a move under way: the tenant stays in its tier with every row.
    /// Returns whether a move was under way.
    pub async fn tier_move_abort(&mut self, id: TenantId) -> Result<bool, DbError> {
        self.tx.changes_tenant(id);
        self.wait_for_locks().await?;
        let state: String = self
            .one(
                "SELECT tenantry.tier_move_abort($1)",
                &[id.as_uuid()],
                &[Type::UUID],
            )
            .await?;
        Ok(state == "aborted")
    }
}

impl Database {
    /// Moves a tenant to another tier online: its rows are copied in batches
    /// of `batch` while it keeps reading and writing, then the cut-over holds
    /// back its writes only (docs/architecture.md, "Tiers"). Each step is its
    /// own transaction (retried on contention); an interrupted move resumes
    /// when this is called again, or is undone by [`AdminScope::tier_move_abort`].
    pub async fn move_tenant(
        &self,
        actor: &str,
        id: TenantId,
        to: Isolation,
        batch: i32,
        mut progress: impl FnMut(MoveProgress),
    ) -> Result<TierMove, DbError> {
        let batch = batch.max(1);
        let args = (id, to, batch);
        let start = self
            .in_admin(actor, &args, |scope, (id, to, _)| {
                Box::pin(async move {
                    let state = scope.tier_move_start(*id, *to).await?;
                    let rows = scope.tenant_row_count(*id).await?;
                    Ok((state, rows))
                })
            })
            .await?;
        let (Some(resumed), rows) = start else {
            return Ok(TierMove {
                tenant_id: id,
                isolation: to,
                rows_moved: 0,
                cutover_rows: 0,
                cutover_ms: 0.0,
                unchanged: true,
            });
        };
        progress(MoveProgress::Started { rows, resumed });
        match self.move_steps(actor, &args, &mut progress).await {
            Ok(moved) => Ok(moved),
            // Another caller (a second request for the same move, a resumed
            // CLI run) finished the move first: its record is gone. When the
            // tenant is now where it was asked to go, the move is done.
            Err(DbError::NotFound(message)) => {
                let now = self
                    .in_admin(actor, &args, |scope, (id, _, _)| {
                        Box::pin(async move { Ok(scope.get_tenant(*id).await?.isolation) })
                    })
                    .await?;
                if now == to {
                    Ok(TierMove {
                        tenant_id: id,
                        isolation: to,
                        rows_moved: 0,
                        cutover_rows: 0,
                        cutover_ms: 0.0,
                        unchanged: true,
                    })
                } else {
                    // Given up by another caller (`tier_move_abort`) while
                    // this one ran: the tenant exists, so not a 404 (found
                    // by a concurrency review).
                    tracing::debug!(%message, "a tier move's record went while it ran");
                    Err(DbError::conflict(format!(
                        "the move of tenant {id} was given up while it ran: its rows stay in the {} tier; ask again to move it",
                        now.as_str()
                    )))
                }
            }
            Err(e) => Err(e),
        }
    }

    /// The steps of [`Database::move_tenant`] after its start.
    async fn move_steps(
        &self,
        actor: &str,
        args: &(TenantId, Isolation, i32),
        progress: &mut impl FnMut(MoveProgress),
    ) -> Result<TierMove, DbError> {
        let batch = args.2;
        loop {
            let open = self
                .in_admin(actor, args, |scope, (id, _, _)| {
                    Box::pin(scope.tier_move_wait(*id))
                })
                .await?;
            if open == 0 {
                break;
            }
            progress(MoveProgress::Waiting { transactions: open });
        }
        loop {
            let copied = self
                .in_admin(actor, args, |scope, (id, _, batch)| {
                    Box::pin(scope.tier_move_copy(*id, *batch))
                })
                .await?;
            if copied == 0 {
                break;
            }
            progress(MoveProgress::Copied { rows: copied });
        }
        loop {
            let writes = self
                .in_admin(actor, args, |scope, (id, _, batch)| {
                    Box::pin(scope.tier_move_catch_up(*id, *batch))
                })
                .await?;
            if writes > 0 {
                progress(MoveProgress::CaughtUp { writes });
            }
            if writes < i64::from(batch) {
                break;
            }
        }
        progress(MoveProgress::CuttingOver);
        let moved = self
            .in_admin(actor, args, |scope, (id, _, _)| {
                Box::pin(scope.tier_move_finish(*id))
            })
            .await?;
        // Towards the shared tier the tenant's emptied tables leave their
        // families when no query holds them; what is left is harmless and
        // goes with the next move or cleanup.
        for _ in 0..20 {
            let done = self
                .in_admin(actor, args, |scope, (id, _, _)| {
                    Box::pin(scope.tier_move_cleanup(*id))
                })
                .await?;
            if done {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        Ok(moved)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn move_states_read_as_done_started_or_resumed_and_nothing_else() {
        assert_eq!(started("done").unwrap(), None);
        assert_eq!(started("started").unwrap(), Some(false));
        assert_eq!(started("resumed").unwrap(), Some(true));
        assert!(started("moved").is_err());
    }
}
