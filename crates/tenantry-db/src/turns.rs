//! Each tenant's share of something every tenant shares: at most so many of its transactions holding the pool's connections at once (so that one tenant's slow work, a listing over a thousand descendants or a hot row, waits its turn instead of taking every connection from the others), or, in the HTTP layer, of its requests in flight.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::{DbError, TenantId};

/// The turns of every tenant with one open (an entry lives while one of its
/// permits does, so the map holds only tenants at work).
pub struct TenantTurns {
    per_tenant: usize,
    open: Mutex<HashMap<TenantId, Arc<Semaphore>>>,
}

/// A hold on one turn of a tenant's share; released on drop.
pub struct Turn {
    // Dropped in this order: the permit (and its reference to the
    // semaphore), then the entry's hold, which may forget the entry.
    _permit: OwnedSemaphorePermit,
    _held: Held,
}

/// A reference to a tenant's entry, taken for a turn or a wait for one:
/// dropped (a turn ended, a wait given up or cancelled), it forgets the
/// entry when nobody else holds or waits for a turn of that tenant.
struct Held {
    semaphore: Option<Arc<Semaphore>>,
    tenant: TenantId,
    turns: Arc<TenantTurns>,
}

impl Drop for Held {
    fn drop(&mut self) {
        drop(self.semaphore.take());
        let mut open = self.turns.open.lock().expect("tenant turns");
        if open
            .get(&self.tenant)
            .is_some_and(|s| Arc::strong_count(s) == 1)
        {
            open.remove(&self.tenant);
        }
    }
}

impl TenantTurns {
    /// `per_tenant`: how many turns one tenant may hold at once (at least 1).
    pub fn new(per_tenant: usize) -> Arc<Self> {
        Arc::new(Self {
            per_tenant: per_tenant.max(1),
            open: Mutex::new(HashMap::new()),
        })
    }

    /// How many turns one tenant may hold at once.
    pub fn per_tenant(&self) -> usize {
        self.per_tenant
    }

    /// The tenant's semaphore, and a hold on its entry while a turn is
    /// taken or waited for.
    fn hold(self: &Arc<Self>, tenant: TenantId) -> (Arc<Semaphore>, Held) {
        let semaphore = self
            .open
            .lock()
            .expect("tenant turns")
            .entry(tenant)
            .or_insert_with(|| Arc::new(Semaphore::new(self.per_tenant)))
            .clone();
        let held = Held {
            semaphore: Some(semaphore.clone()),
            tenant,
            turns: self.clone(),
        };
        (semaphore, held)
    }

    /// A turn of the tenant's if one is free now; `None` while it holds all.
    pub fn try_take(self: &Arc<Self>, tenant: TenantId) -> Option<Turn> {
        let (semaphore, held) = self.hold(tenant);
        let permit = semaphore.try_acquire_owned().ok()?;
        Some(Turn {
            _permit: permit,
            _held: held,
        })
    }

    /// The tenant's next turn, waiting up to `wait` (None: no bound) while
    /// its share is taken; [`DbError::TenantBusy`] after that.
    pub(crate) async fn take(
        self: &Arc<Self>,
        tenant: TenantId,
        wait: Option<Duration>,
    ) -> Result<Turn, DbError> {
        let (semaphore, held) = self.hold(tenant);
        // A turn free now is taken without a timer.
        let permit = match semaphore.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                let waiting = semaphore.acquire_owned();
                let acquired = match wait {
                    Some(limit) => tokio::time::timeout(limit, waiting).await.map_err(|_| {
                        DbError::TenantBusy(format!(
                            "tenant {tenant} has {} transactions holding connections, the most one \
                             tenant may hold at once (DatabaseConfig::max_connections_per_tenant); \
                             its next one waited {} ms (a handler that holds a scope of the tenant \
                             while it opens another waits for itself once as many requests do so: \
                             one scope per request, helpers take `&mut TenantScope`)",
                            self.per_tenant,
                            limit.as_millis()
                        ))
                    })?,
                    None => waiting.await,
                };
                acquired.expect("the semaphore is never closed")
            }
        };
        Ok(Turn {
            _permit: permit,
            _held: held,
        })
    }

    /// Tenants with a transaction open or waiting.
    #[cfg(test)]
    fn tenants(&self) -> usize {
        self.open.lock().expect("tenant turns").len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(n: u128) -> TenantId {
        TenantId::from_uuid(uuid::Uuid::from_u128(n))
    }

    #[tokio::test]
    async fn a_tenant_past_its_share_waits_while_another_tenant_takes_a_turn_at_once() {
        let turns = TenantTurns::new(2);
        let wait = Some(Duration::from_millis(50));
        let first = turns.take(tenant(1), wait).await.unwrap();
        let second = turns.take(tenant(1), wait).await.unwrap();
        let refused = turns.take(tenant(1), wait).await;
        assert!(
            matches!(&refused, Err(DbError::TenantBusy(m)) if m.contains("max_connections_per_tenant")),
            "{:?}",
            refused.err()
        );
        let other = turns.take(tenant(2), wait).await.unwrap();
        drop(first);
        let third = turns.take(tenant(1), wait).await.unwrap();
        drop((second, third, other));
        assert_eq!(turns.tenants(), 0, "no entry outlives its turns");
    }

    #[test]
    fn a_turn_tried_past_the_share_is_none_and_leaves_no_entry_behind() {
        let turns = TenantTurns::new(2);
        let held = [turns.try_take(tenant(1)), turns.try_take(tenant(1))];
        assert!(held.iter().all(Option::is_some));
        assert!(turns.try_take(tenant(1)).is_none());
        let other = turns.try_take(tenant(2));
        assert!(other.is_some(), "another tenant's share is its own");
        let [first, second] = held;
        drop(first);
        let again = turns.try_take(tenant(1));
        assert!(again.is_some());
        drop((second, again, other));
        assert_eq!(turns.tenants(), 0, "no entry outlives its turns");
    }

    #[tokio::test]
    async fn a_waiting_turn_is_served_when_one_is_released() {
        let turns = TenantTurns::new(1);
        let held = turns.take(tenant(1), None).await.unwrap();
        let waiting = {
            let turns = turns.clone();
            tokio::spawn(async move { turns.take(tenant(1), Some(Duration::from_secs(5))).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiting.is_finished());
        drop(held);
        let served = waiting.await.unwrap().unwrap();
        drop(served);
        assert_eq!(turns.tenants(), 0);
    }

    #[tokio::test]
    async fn a_wait_given_up_or_cancelled_leaves_no_entry_behind() {
        let turns = TenantTurns::new(1);
        let held = turns.take(tenant(1), None).await.unwrap();
        assert!(turns
            .take(tenant(1), Some(Duration::from_millis(10)))
            .await
            .is_err());
        let cancelled = {
            let turns = turns.clone();
            tokio::spawn(async move { turns.take(tenant(1), None).await.map(drop) })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        cancelled.abort();
        let _ = cancelled.await;
        drop(held);
        assert_eq!(turns.tenants(), 0);
    }
}
