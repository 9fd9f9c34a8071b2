//! Bounded retries of transactions that a concurrent one rolled back (deadlock, serialization failure, lock timeout: [`DbError::Contention`]): [`Database::in_tenant`] and [`Database::in_admin`] run a unit of work in a fresh scope, commit it, and run it again a few times with jittered backoff when the database reports such a collision. Nothing else is retried.
//!
//! Why retrying is safe here: a [`DbError::Contention`] is the server's own
//! report that it rolled the transaction back, at a statement or at COMMIT
//! (a serialization failure at COMMIT means "not committed"). A connection
//! lost mid-flight, at COMMIT included, is [`DbError::Unavailable`]: whether
//! it committed is unknown, so it is never retried.

use std::{
    future::Future,
    hash::{BuildHasher, Hasher},
    ops::ControlFlow,
    pin::Pin,
    time::Duration,
};

use crate::{AdminScope, Database, DbError, TenantContext, TenantScope};

/// The future of one run of a unit of work: it borrows the scope and the
/// arguments for as long as it runs.
pub type ScopeFuture<'s, T> = Pin<Box<dyn Future<Output = Result<T, DbError>> + Send + 's>>;

/// How many times, and how far apart, a collided transaction runs again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Runs in all, the first included (1: never retry).
    pub attempts: u32,
    /// Backoff before the first retry; doubled before each further one.
    pub base_delay: Duration,
    /// Longest backoff.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    /// 4 runs; backoffs of about 10, 20 and 40 ms (each between half and all
    /// of that, at random), so a request that keeps colliding answers within
    /// ~70 ms of waiting more than a lone one.
    fn default() -> Self {
        Self {
            attempts: 4,
            base_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(200),
        }
    }
}

impl RetryPolicy {
    /// The backoff before retry number `retry` (1-based): the doubled base,
    /// capped, then a random point in its upper half, so that transactions
    /// that collided do not collide again in lockstep.
    pub fn backoff(&self, retry: u32) -> Duration {
        let cap = self
            .base_delay
            .saturating_mul(1 << retry.saturating_sub(1).min(16))
            .min(self.max_delay);
        let half = cap / 2;
        half + half.mul_f64(unit_random())
    }

    /// After run number `attempt` ended with `result`: `Break` with the
    /// answer to give, or — when the database rolled the transaction back for
    /// colliding and attempts remain — sleeps the backoff, counts the attempt
    /// and says `Continue`.
    pub(crate) async fn settle<T>(
        &self,
        attempt: &mut u32,
        result: Result<T, DbError>,
    ) -> ControlFlow<Result<T, DbError>> {
        match result {
            Err(DbError::Contention(message)) if *attempt < self.attempts.max(1) => {
                tracing::debug!(attempt = *attempt, error = %message, "transaction rolled back by a concurrent one; running it again");
                tokio::time::sleep(self.backoff(*attempt)).await;
                *attempt += 1;
                ControlFlow::Continue(())
            }
            other => ControlFlow::Break(other),
        }
    }
}

/// A number in [0, 1) that differs between calls: SipHash under fresh
/// random keys (std's `RandomState`), enough for jitter, no dependency.
fn unit_random() -> f64 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64
}

impl Database {
    /// Runs `work` in a fresh [`TenantScope`] for `ctx` and commits; when the
    /// database rolls it back for colliding with a concurrent transaction
    /// (deadlock, serialization failure, lock timeout), runs it again in a new
    /// scope, up to the pool's [`RetryPolicy`], and then returns the
    /// [`DbError::Contention`]. Any other error returns at once; nothing was
    /// committed then.
    ///
    /// `work` gets the scope and `args` (what it needs from the caller,
    /// borrowed for each run), and may run more than once: it must not commit
    /// anything itself nor have effects outside the scope (send no mail from it).
    ///
    /// This is trusted code's entry point (a background job, a migration of
    /// data): it takes the context it is given. A deleted tenant is refused;
    /// a **suspended** one is not (an operator's export or clean-up still
    /// reaches its rows), so a job that acts on a tenant's behalf checks
    /// [`Tenant::status`](crate::Tenant) first, as the API's keys are. A
    /// context without `permissions` holds every permission.
    ///
    /// ```no_run
    /// # async fn demo(db: tenantry_db::Database, tenant: tenantry_db::TenantId) -> Result<(), tenantry_db::DbError> {
    /// use tenantry_db::{NewResource, TenantContext};
    /// let new = NewResource { name: "report".into(), data: serde_json::json!({}).into() };
    /// let created = db
    ///     .in_tenant(&TenantContext::new(tenant), &new, |scope, new| {
    ///         Box::pin(scope.create_resource(new))
    ///     })
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub async fn in_tenant<A: Sync + ?Sized, T>(
        &self,
        ctx: &TenantContext,
        args: &A,
        work: impl for<'s> FnMut(&'s mut TenantScope, &'s A) -> ScopeFuture<'s, T>,
    ) -> Result<T, DbError> {
        self.retrying(|| self.tenant(ctx.clone()), args, work).await
    }

    /// [`Database::in_tenant`] for an administrative transaction audited as `actor`.
    pub async fn in_admin<A: Sync + ?Sized, T>(
        &self,
        actor: &str,
        args: &A,
        work: impl for<'s> FnMut(&'s mut AdminScope, &'s A) -> ScopeFuture<'s, T>,
    ) -> Result<T, DbError> {
        self.retrying(|| self.admin(actor), args, work).await
    }

    /// Opens a scope with `open`, runs `work` in it and commits, as long as
    /// the retry policy says to.
    async fn retrying<S: Commit, A: Sync + ?Sized, T, Open>(
        &self,
        mut open: impl FnMut() -> Open,
        args: &A,
        mut work: impl for<'s> FnMut(&'s mut S, &'s A) -> ScopeFuture<'s, T>,
    ) -> Result<T, DbError>
    where
        Open: Future<Output = Result<S, DbError>>,
    {
        let mut attempt = 1;
        loop {
            let result = async {
                let mut scope = open().await?;
                let value = work(&mut scope, args).await?;
                scope.commit().await?;
                Ok(value)
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

/// The scopes a unit of work runs in.
pub(crate) trait Commit {
    fn commit(self) -> impl Future<Output = Result<(), DbError>> + Send;
}

impl Commit for TenantScope {
    fn commit(self) -> impl Future<Output = Result<(), DbError>> + Send {
        TenantScope::commit(self)
    }
}

impl Commit for AdminScope {
    fn commit(self) -> impl Future<Output = Result<(), DbError>> + Send {
        AdminScope::commit(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoffs_double_stay_in_their_upper_half_and_are_capped() {
        let policy = RetryPolicy::default();
        for _ in 0..100 {
            for (retry, ms) in [(1, 10), (2, 20), (3, 40), (8, 200), (40, 200)] {
                let d = policy.backoff(retry);
                let cap = Duration::from_millis(ms);
                assert!(d >= cap / 2 && d <= cap, "retry {retry}: {d:?}");
            }
        }
        let spread: std::collections::HashSet<Duration> =
            (0..20).map(|_| policy.backoff(3)).collect();
        assert!(spread.len() > 1, "no jitter: {spread:?}");
    }

    /// Runs `results` in order through `settle`, as `in_tenant` does; returns
    /// the answer and how many ran.
    async fn settle_all(
        policy: RetryPolicy,
        results: Vec<Result<u32, DbError>>,
    ) -> (Result<u32, DbError>, usize) {
        let mut attempt = 1;
        for (ran, result) in results.into_iter().enumerate() {
            if let ControlFlow::Break(answer) = policy.settle(&mut attempt, result).await {
                return (answer, ran + 1);
            }
        }
        panic!("ran out of results at attempt {attempt}");
    }

    #[tokio::test]
    async fn contention_is_retried_up_to_the_attempts_and_nothing_else_is_retried() {
        let policy = RetryPolicy {
            attempts: 3,
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(1),
        };
        let contention = || Err(DbError::Contention("deadlock detected".into()));
        let (answer, ran) = settle_all(
            policy,
            vec![contention(), contention(), contention(), Ok(4)],
        )
        .await;
        assert!(matches!(answer, Err(DbError::Contention(_))), "{answer:?}");
        assert_eq!(ran, 3);

        let (answer, ran) = settle_all(policy, vec![contention(), contention(), Ok(3)]).await;
        assert_eq!((answer.unwrap(), ran), (3, 3));

        for err in [
            DbError::Unavailable("connection lost at COMMIT".into()),
            DbError::conflict("duplicate"),
            DbError::QuotaExceeded("at most 1".into()),
        ] {
            let (answer, ran) = settle_all(policy, vec![Err(err), Ok(2)]).await;
            assert!(answer.is_err());
            assert_eq!(ran, 1);
        }
    }
}
