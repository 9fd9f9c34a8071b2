//! The cache under the key and membership caches: entries indexed by the invalidation tags of what they were built from (their tenant, their key), so that a notification drops exactly its entries, in time proportional to their number (a tenant's entries are a list through the entries, linked both ways), and a database read that raced a removal naming its own tenant or key is answered but not kept.

use std::{
    borrow::Borrow,
    collections::HashMap,
    hash::Hash,
    sync::{
        atomic::{AtomicU64, Ordering},
        RwLock,
    },
    time::{Duration, Instant},
};

use tenantry_db::{
    invalidation::{ListeningFlag, Tag},
    Invalidation, KeyId, TenantId,
};

use crate::auth::UNLISTENED_TTL;

/// Removals are remembered per tag shard (a tag's first byte: tags are
/// hashes, so shards are even): a read is refused by a removal of its own
/// tenant or key, or of one in the same shard, 1 in 256 of the others.
const SHARDS: usize = 256;

/// An entry with the tags it is dropped by.
struct Entry<K, V> {
    value: V,
    fetched: Instant,
    tenant: Tag<TenantId>,
    key: Option<Tag<KeyId>>,
    /// The entries of the same tenant before and after this one: a tenant's
    /// entries are a list from [`Inner::tenant_heads`] (links in the entry,
    /// where a set per tenant cost hundreds of bytes per entry, most tenants
    /// having one key), linked both ways so that any entry leaves it at once.
    prev: Option<K>,
    next: Option<K>,
}

/// Where the removals stood when a database read began ([`TaggedCache::ticket`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ticket(u64);

/// Entries by `K`, each under its tenant's tag and, optionally, its key's
/// (one entry per key tag: a key has one prefix).
pub(crate) struct TaggedCache<K, V> {
    inner: RwLock<Inner<K, V>>,
    /// Most entries held: past it, those older than `ttl` go first, then all.
    capacity: usize,
    /// How long an entry is trusted while the invalidation listener listens.
    ttl: Duration,
    /// Whether the invalidation listener is listening; `None` without one.
    listening: Option<ListeningFlag>,
    /// Removals so far; each removal's number is stamped on its shards.
    removals: AtomicU64,
}

struct Inner<K, V> {
    entries: HashMap<K, Entry<K, V>>,
    /// Each tenant's most recent entry, the head of its list.
    tenant_heads: HashMap<Tag<TenantId>, K>,
    by_key: HashMap<Tag<KeyId>, K>,
    /// The number of the last removal of a tenant (a key) in each shard.
    tenant_removed: Box<[u64; SHARDS]>,
    key_removed: Box<[u64; SHARDS]>,
    /// The number of the last removal of everything.
    all_removed: u64,
}

fn shard(bytes: &[u8; 16]) -> usize {
    usize::from(bytes[0])
}

impl<K: Eq + Hash + Clone, V> Inner<K, V> {
    /// Drops `k`'s entry and takes it out of its tenant's list and the key
    /// index, in constant time.
    fn remove(&mut self, k: &K) {
        let Some(entry) = self.entries.remove(k) else {
            return;
        };
        if let Some(tag) = entry.key {
            if self.by_key.get(&tag) == Some(k) {
                self.by_key.remove(&tag);
            }
        }
        let linked = match &entry.prev {
            Some(prev) => self
                .entries
                .get_mut(prev)
                .map(|p| p.next.clone_from(&entry.next)),
            None if self.tenant_heads.get(&entry.tenant) != Some(k) => None,
            None => {
                match &entry.next {
                    Some(next) => self.tenant_heads.insert(entry.tenant, next.clone()),
                    None => self.tenant_heads.remove(&entry.tenant),
                };
                Some(())
            }
        };
        let linked = linked.and(match &entry.next {
            Some(next) => self
                .entries
                .get_mut(next)
                .map(|n| n.prev.clone_from(&entry.prev)),
            None => Some(()),
        });
        if linked.is_none() {
            self.relink_broken();
        }
    }

    /// Drops every entry of the tenant `tag`, head after head.
    fn remove_tenant(&mut self, tag: Tag<TenantId>) {
        while let Some(k) = self.tenant_heads.get(&tag).cloned() {
            if !self.entries.contains_key(&k) {
                // A broken list must not leave the rest of the tenant's
                // entries in place, unreachable (a revoked key served on).
                self.entries.retain(|_, e| e.tenant != tag);
                self.relink_broken();
                return;
            }
            self.remove(&k);
        }
    }

    /// Builds the lists and the key index again from the entries alone.
    fn relink(&mut self) {
        self.tenant_heads.clear();
        self.by_key.clear();
        let keys: Vec<K> = self.entries.keys().cloned().collect();
        for k in keys {
            let entry = self.entries.get_mut(&k).expect("listed just now");
            let (tenant, key) = (entry.tenant, entry.key);
            entry.prev = None;
            let head = self.tenant_heads.insert(tenant, k.clone());
            entry.next = head.clone();
            if let Some(head) = head {
                self.entries.get_mut(&head).expect("an entry").prev = Some(k.clone());
            }
            if let Some(tag) = key {
                self.by_key.insert(tag, k);
            }
        }
    }

    /// A link that names no entry: a bug, never expected; the lists are
    /// built again so that no entry is left where a removal cannot reach it.
    fn relink_broken(&mut self) {
        debug_assert!(false, "a tenant's list named an entry that is gone");
        tracing::error!("the key or membership cache's index was inconsistent; rebuilt");
        self.relink();
    }

    fn clear(&mut self) {
        self.entries.clear();
        self.tenant_heads.clear();
        self.by_key.clear();
    }
}

impl<K: Eq + Hash + Clone, V> TaggedCache<K, V> {
    /// Empty; at most `capacity` entries, of which those older than `ttl`
    /// are dropped first when it is reached. Entries are trusted for `ttl`
    /// while `listening` says the invalidation listener listens (always,
    /// without one), for at most [`UNLISTENED_TTL`] while it does not.
    pub(crate) fn new(capacity: usize, ttl: Duration, listening: Option<ListeningFlag>) -> Self {
        Self {
            capacity,
            ttl,
            listening,
            inner: RwLock::new(Inner {
                entries: HashMap::new(),
                tenant_heads: HashMap::new(),
                by_key: HashMap::new(),
                tenant_removed: Box::new([0; SHARDS]),
                key_removed: Box::new([0; SHARDS]),
                all_removed: 0,
            }),
            removals: AtomicU64::new(0),
        }
    }

    /// How long an entry is trusted now: changes made elsewhere go unseen
    /// while the listener does not listen.
    fn lifetime(&self) -> Duration {
        match &self.listening {
            Some(flag) if !flag.get() => self.ttl.min(UNLISTENED_TTL),
            _ => self.ttl,
        }
    }

    /// What `read` makes of `k`'s value while its entry is trusted, under
    /// the read lock.
    pub(crate) fn get<Q, R>(&self, k: &Q, read: impl FnOnce(&V) -> Option<R>) -> Option<R>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let lifetime = self.lifetime();
        self.inner
            .read()
            .expect("tagged cache lock")
            .entries
            .get(k)
            .filter(|e| e.fetched.elapsed() < lifetime)
            .and_then(|e| read(&e.value))
    }

    /// What `read` makes of `k`'s value however old its entry, under the
    /// read lock: never a value to act on (it may be untrusted by now), only
    /// a hint, such as whose share of the pool a fresh read should wait in.
    pub(crate) fn get_any_age<Q, R>(&self, k: &Q, read: impl FnOnce(&V) -> Option<R>) -> Option<R>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.inner
            .read()
            .expect("tagged cache lock")
            .entries
            .get(k)
            .and_then(|e| read(&e.value))
    }

    /// Taken before a database read whose answer is to be cached.
    pub(crate) fn ticket(&self) -> Ticket {
        Ticket(self.removals.load(Ordering::Acquire))
    }

    /// Keeps `value` for `k` unless a removal since `ticket` named its tenant
    /// or key (or everything): that removal may have been about what the
    /// read returned. Whether it was kept.
    pub(crate) fn insert(
        &self,
        ticket: Ticket,
        k: K,
        value: V,
        tenant: Tag<TenantId>,
        key: Option<Tag<KeyId>>,
    ) -> bool {
        let mut inner = self.inner.write().expect("tagged cache lock");
        let raced = inner.all_removed > ticket.0
            || inner.tenant_removed[shard(tenant.as_bytes())] > ticket.0
            || key.is_some_and(|tag| inner.key_removed[shard(tag.as_bytes())] > ticket.0);
        if raced {
            return false;
        }
        inner.remove(&k);
        if let Some(other) = key.and_then(|tag| inner.by_key.get(&tag).cloned()) {
            inner.remove(&other);
        }
        // Expired entries stay until the capacity is reached: the key
        // cache's say in whose share of the pool a key's next check waits
        // (`get_any_age`; `a_key_whose_cache_entry_expired_is_checked_in_its_tenants_share_not_behind_unknown_credentials`).
        if inner.entries.len() >= self.capacity {
            let ttl = self.ttl;
            inner.entries.retain(|_, e| e.fetched.elapsed() < ttl);
            if inner.entries.len() >= self.capacity {
                inner.clear();
            } else {
                inner.relink();
            }
        }
        if let Some(tag) = key {
            inner.by_key.insert(tag, k.clone());
        }
        let next = inner.tenant_heads.insert(tenant, k.clone());
        if let Some(head) = &next {
            if let Some(e) = inner.entries.get_mut(head) {
                e.prev = Some(k.clone());
            }
        }
        inner.entries.insert(
            k,
            Entry {
                value,
                fetched: Instant::now(),
                tenant,
                key,
                prev: None,
                next,
            },
        );
        true
    }

    /// Drops `k`'s entry when `drop` says so.
    pub(crate) fn remove_if<Q>(&self, k: &Q, drop: impl FnOnce(&V) -> bool)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let mut inner = self.inner.write().expect("tagged cache lock");
        if let Some((k, _)) = inner
            .entries
            .get_key_value(k)
            .filter(|(_, e)| drop(&e.value))
        {
            let k = k.clone();
            inner.remove(&k);
        }
    }

    /// Drops what `invalidation` names, and refuses to keep what reads in
    /// flight return about it.
    pub(crate) fn apply(&self, invalidation: Invalidation) {
        let mut inner = self.inner.write().expect("tagged cache lock");
        let number = self.removals.fetch_add(1, Ordering::AcqRel) + 1;
        match invalidation {
            Invalidation::Key(tag) => {
                inner.key_removed[shard(tag.as_bytes())] = number;
                if let Some(k) = inner.by_key.get(&tag).cloned() {
                    inner.remove(&k);
                }
            }
            Invalidation::Tenant(tag) => {
                inner.tenant_removed[shard(tag.as_bytes())] = number;
                inner.remove_tenant(tag);
            }
            Invalidation::All => {
                inner.all_removed = number;
                inner.clear();
            }
        }
    }

    /// How many entries are held.
    pub(crate) fn len(&self) -> usize {
        self.inner.read().expect("tagged cache lock").entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    fn tenant(n: u128) -> TenantId {
        TenantId::from_uuid(uuid::Uuid::from_u128(n))
    }

    fn key(n: u128) -> KeyId {
        KeyId::from_uuid(uuid::Uuid::from_u128(n))
    }

    /// Every entry is on its tenant's list exactly once, linked both ways,
    /// every list holds only its tenant's entries, and the key index names
    /// each keyed entry.
    fn assert_indexed<V>(cache: &TaggedCache<u32, V>) {
        let inner = cache.inner.read().unwrap();
        let mut listed = std::collections::HashSet::new();
        for (tag, head) in &inner.tenant_heads {
            let (mut at, mut before) = (Some(*head), None);
            while let Some(k) = at {
                let e = &inner.entries[&k];
                assert_eq!(e.tenant, *tag, "{k} on another tenant's list");
                assert_eq!(e.prev, before, "{k}'s link back");
                assert!(listed.insert(k), "{k} listed twice");
                (before, at) = (Some(k), e.next);
            }
        }
        assert_eq!(listed.len(), inner.entries.len(), "an entry on no list");
        for (k, e) in &inner.entries {
            if let Some(tag) = e.key {
                assert_eq!(inner.by_key[&tag], *k);
            }
        }
        for (tag, k) in &inner.by_key {
            assert_eq!(inner.entries[k].key, Some(*tag));
        }
    }

    fn put(cache: &TaggedCache<u32, ()>, k: u32, t: u128, key_n: Option<u128>) -> bool {
        let ticket = cache.ticket();
        cache.insert(
            ticket,
            k,
            (),
            Tag::of(tenant(t)),
            key_n.map(|n| Tag::of(key(n))),
        )
    }

    #[test]
    fn a_tenant_or_key_removal_drops_exactly_its_entries() {
        let cache = TaggedCache::new(100, HOUR, None);
        for k in 0..10u32 {
            assert!(put(&cache, k, u128::from(k % 3), Some(u128::from(k))));
        }
        assert_indexed(&cache);
        cache.apply(Invalidation::tenant(tenant(1)));
        let left: Vec<u32> = (0..10)
            .filter(|k| cache.get(k, |_| Some(())).is_some())
            .collect();
        assert_eq!(left, [0, 2, 3, 5, 6, 8, 9]);
        cache.apply(Invalidation::key(key(5)));
        assert!(cache.get(&5, |_| Some(())).is_none());
        assert_eq!(cache.len(), 6);
        assert_indexed(&cache);
        // A replaced entry leaves its old tenant's list.
        assert!(put(&cache, 0, 7, None));
        assert_indexed(&cache);
        cache.apply(Invalidation::tenant(tenant(0)));
        assert!(cache.get(&0, |_| Some(())).is_some(), "now under tenant 7");
        assert_indexed(&cache);
        // Entries in the middle and at the end of a tenant's list go alone.
        for k in [10, 11, 12] {
            assert!(put(&cache, k, 7, Some(u128::from(k))));
        }
        cache.remove_if(&0, |_| false);
        assert!(cache.get(&0, |_| Some(())).is_some());
        for k in [11, 0] {
            cache.remove_if(&k, |_| true);
            assert!(cache.get(&k, |_| Some(())).is_none());
            assert_indexed(&cache);
        }
        cache.apply(Invalidation::key(key(12)));
        assert!(cache.get(&12, |_| Some(())).is_none());
        assert_indexed(&cache);
        cache.apply(Invalidation::tenant(tenant(7)));
        assert!(cache.get(&10, |_| Some(())).is_none());
        assert_indexed(&cache);
        // A key has one entry: another under its tag replaces it.
        assert!(put(&cache, 20, 8, Some(5)));
        assert!(put(&cache, 21, 9, Some(5)));
        assert!(cache.get(&20, |_| Some(())).is_none());
        assert_indexed(&cache);
        cache.apply(Invalidation::key(key(5)));
        assert!(cache.get(&21, |_| Some(())).is_none());
        cache.apply(Invalidation::All);
        assert_eq!(cache.len(), 0);
        assert_indexed(&cache);
    }

    #[test]
    fn a_read_raced_by_a_removal_of_its_own_tenant_or_key_is_not_kept_but_one_raced_by_others_is() {
        let cache: TaggedCache<u32, ()> = TaggedCache::new(100, HOUR, None);
        // Another tenant's removal between the ticket and the insert: kept
        // (before, any removal refused every read in flight). Find another
        // tenant in another shard, as most are.
        let mine = Tag::of(tenant(1));
        let other = (2..)
            .map(tenant)
            .find(|t| shard(Tag::of(*t).as_bytes()) != shard(mine.as_bytes()))
            .unwrap();
        let ticket = cache.ticket();
        cache.apply(Invalidation::tenant(other));
        cache.apply(Invalidation::key(key(99)));
        assert!(cache.insert(ticket, 1, (), mine, Some(Tag::of(key(1)))));
        for removal in [
            Invalidation::tenant(tenant(1)),
            Invalidation::key(key(1)),
            Invalidation::All,
        ] {
            let ticket = cache.ticket();
            cache.apply(removal);
            assert!(
                !cache.insert(ticket, 1, (), mine, Some(Tag::of(key(1)))),
                "{removal:?}"
            );
            // A read that began after the removal is kept.
            assert!(put(&cache, 1, 1, Some(1)));
        }
        assert_indexed(&cache);
    }

    #[test]
    fn past_its_capacity_the_cache_drops_expired_entries_first_then_all_and_stays_indexed() {
        let cache: TaggedCache<u32, ()> = TaggedCache::new(3, Duration::from_secs(1), None);
        let held = |cache: &TaggedCache<u32, ()>| -> Vec<u32> {
            let mut v: Vec<u32> = cache
                .inner
                .read()
                .unwrap()
                .entries
                .keys()
                .copied()
                .collect();
            v.sort_unstable();
            v
        };
        for k in 0..3u32 {
            assert!(put(&cache, k, u128::from(k % 2), None));
        }
        // Entries 0 and 1 fetched two seconds ago: past their time to live.
        for k in [0, 1] {
            let mut inner = cache.inner.write().unwrap();
            let e = inner.entries.get_mut(&k).unwrap();
            e.fetched = e.fetched.checked_sub(Duration::from_secs(2)).unwrap();
        }
        // Full: the two expired entries go, the fresh one stays.
        assert!(put(&cache, 3, 0, None));
        assert_eq!(held(&cache), [2, 3]);
        assert_indexed(&cache);
        assert!(put(&cache, 4, 3, None));
        // Full, nothing expired: everything goes.
        assert!(put(&cache, 5, 3, None));
        assert_eq!(held(&cache), [5]);
        assert_indexed(&cache);
        cache.apply(Invalidation::tenant(tenant(3)));
        assert_eq!(cache.len(), 0);
        assert_indexed(&cache);
    }

    /// One step of [`random_steps_keep_every_entry_reachable_from_its_tenant`].
    #[derive(Debug, Clone)]
    enum Step {
        Put { k: u32, t: u8, key: Option<u8> },
        Remove(u32),
        DropTenant(u8),
        DropKey(u8),
        DropAll,
        Expire(u32),
    }

    fn step() -> impl proptest::strategy::Strategy<Value = Step> {
        use proptest::prelude::*;
        prop_oneof![
            6 => (0..40u32, 0..5u8, proptest::option::of(0..30u8))
                .prop_map(|(k, t, key)| Step::Put { k, t, key }),
            2 => (0..40u32).prop_map(Step::Remove),
            1 => (0..5u8).prop_map(Step::DropTenant),
            1 => (0..30u8).prop_map(Step::DropKey),
            1 => Just(Step::DropAll),
            2 => (0..40u32).prop_map(Step::Expire),
        ]
    }

    proptest::proptest! {
        /// Whatever the order of inserts, removals, invalidations and
        /// evictions (capacity 12, few tenants: long lists), every entry
        /// stays on its tenant's list, so that a tenant's removal reaches
        /// every entry of it: none is served after its tenant was dropped.
        #[test]
        fn random_steps_keep_every_entry_reachable_from_its_tenant(
            steps in proptest::collection::vec(step(), 1..200)
        ) {
            let cache: TaggedCache<u32, ()> = TaggedCache::new(12, Duration::from_secs(1), None);
            for step in steps {
                match step {
                    Step::Put { k, t, key } => {
                        put(&cache, k, u128::from(t), key.map(u128::from));
                    }
                    Step::Remove(k) => cache.remove_if(&k, |_| true),
                    Step::DropTenant(t) => {
                        cache.apply(Invalidation::tenant(tenant(u128::from(t))));
                        let inner = cache.inner.read().unwrap();
                        let tag = Tag::of(tenant(u128::from(t)));
                        proptest::prop_assert!(inner.entries.values().all(|e| e.tenant != tag));
                    }
                    Step::DropKey(n) => {
                        cache.apply(Invalidation::key(key(u128::from(n))));
                        let inner = cache.inner.read().unwrap();
                        let tag = Tag::of(key(u128::from(n)));
                        proptest::prop_assert!(inner.entries.values().all(|e| e.key != Some(tag)));
                    }
                    Step::DropAll => cache.apply(Invalidation::All),
                    Step::Expire(k) => {
                        let mut inner = cache.inner.write().unwrap();
                        if let Some(e) = inner.entries.get_mut(&k) {
                            e.fetched = e.fetched.checked_sub(Duration::from_secs(2)).unwrap();
                        }
                    }
                }
                assert_indexed(&cache);
            }
        }
    }
}
