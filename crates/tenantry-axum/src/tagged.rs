//! The cache under the key and membership caches: entries indexed by the invalidation tags of what they were built from (their tenant, their key), so that a notification drops exactly its entries, in time proportional to their number, and a database read that raced a removal naming its own tenant or key is answered but not kept.

use std::{
    borrow::Borrow,
    collections::{HashMap, HashSet},
    hash::Hash,
    sync::{
        atomic::{AtomicU64, Ordering},
        RwLock,
    },
    time::{Duration, Instant},
};

use tenantry_db::{invalidation::Tag, Invalidation, KeyId, TenantId};

/// Removals are remembered per tag shard (a tag's first byte: tags are
/// hashes, so shards are even): a read is refused by a removal of its own
/// tenant or key, or of one in the same shard, 1 in 256 of the others.
const SHARDS: usize = 256;

/// An entry with the tags it is dropped by.
pub(crate) struct Entry<V> {
    pub(crate) value: V,
    pub(crate) fetched: Instant,
    tenant: Tag<TenantId>,
    key: Option<Tag<KeyId>>,
}

/// Where the removals stood when a database read began ([`TaggedCache::ticket`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ticket(u64);

/// Entries by `K`, each under its tenant's tag and, optionally, its key's.
pub(crate) struct TaggedCache<K, V> {
    inner: RwLock<Inner<K, V>>,
    /// Most entries held: past it, those older than `ttl` go first, then all.
    capacity: usize,
    ttl: Duration,
    /// Removals so far; each removal's number is stamped on its shards.
    removals: AtomicU64,
}

struct Inner<K, V> {
    entries: HashMap<K, Entry<V>>,
    by_tenant: HashMap<Tag<TenantId>, HashSet<K>>,
    by_key: HashMap<Tag<KeyId>, HashSet<K>>,
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
    fn unlink(&mut self, k: &K, entry: &Entry<V>) {
        if let Some(set) = self.by_tenant.get_mut(&entry.tenant) {
            set.remove(k);
            if set.is_empty() {
                self.by_tenant.remove(&entry.tenant);
            }
        }
        if let Some(tag) = entry.key {
            if let Some(set) = self.by_key.get_mut(&tag) {
                set.remove(k);
                if set.is_empty() {
                    self.by_key.remove(&tag);
                }
            }
        }
    }

    fn remove(&mut self, k: &K) {
        if let Some(entry) = self.entries.remove(k) {
            self.unlink(k, &entry);
        }
    }

    fn reindex(&mut self) {
        self.by_tenant.clear();
        self.by_key.clear();
        for (k, e) in &self.entries {
            self.by_tenant
                .entry(e.tenant)
                .or_default()
                .insert(k.clone());
            if let Some(tag) = e.key {
                self.by_key.entry(tag).or_default().insert(k.clone());
            }
        }
    }
}

impl<K: Eq + Hash + Clone, V> TaggedCache<K, V> {
    /// Empty; at most `capacity` entries, of which those older than `ttl`
    /// are dropped first when it is reached.
    pub(crate) fn new(capacity: usize, ttl: Duration) -> Self {
        Self {
            capacity,
            ttl,
            inner: RwLock::new(Inner {
                entries: HashMap::new(),
                by_tenant: HashMap::new(),
                by_key: HashMap::new(),
                tenant_removed: Box::new([0; SHARDS]),
                key_removed: Box::new([0; SHARDS]),
                all_removed: 0,
            }),
            removals: AtomicU64::new(0),
        }
    }

    /// What `read` makes of `k`'s entry, under the read lock.
    pub(crate) fn get<Q, R>(&self, k: &Q, read: impl FnOnce(&Entry<V>) -> Option<R>) -> Option<R>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.inner
            .read()
            .expect("tagged cache lock")
            .entries
            .get(k)
            .and_then(read)
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
        if inner.entries.len() >= self.capacity {
            let ttl = self.ttl;
            inner.entries.retain(|_, e| e.fetched.elapsed() < ttl);
            if inner.entries.len() >= self.capacity {
                inner.entries.clear();
            }
            inner.reindex();
        }
        inner.by_tenant.entry(tenant).or_default().insert(k.clone());
        if let Some(tag) = key {
            inner.by_key.entry(tag).or_default().insert(k.clone());
        }
        inner.entries.insert(
            k,
            Entry {
                value,
                fetched: Instant::now(),
                tenant,
                key,
            },
        );
        true
    }

    /// Drops `k`'s entry when `drop` says so.
    pub(crate) fn remove_if<Q>(&self, k: &Q, drop: impl FnOnce(&Entry<V>) -> bool)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let mut inner = self.inner.write().expect("tagged cache lock");
        if let Some((k, _)) = inner.entries.get_key_value(k).filter(|(_, e)| drop(e)) {
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
                for k in inner.by_key.remove(&tag).unwrap_or_default() {
                    inner.remove(&k);
                }
            }
            Invalidation::Tenant(tag) => {
                inner.tenant_removed[shard(tag.as_bytes())] = number;
                for k in inner.by_tenant.remove(&tag).unwrap_or_default() {
                    inner.remove(&k);
                }
            }
            Invalidation::All => {
                inner.all_removed = number;
                inner.entries.clear();
                inner.by_tenant.clear();
                inner.by_key.clear();
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

    /// Every entry is in its tags' sets, and every set holds only entries of its tag.
    fn assert_indexed<V>(cache: &TaggedCache<u32, V>) {
        let inner = cache.inner.read().unwrap();
        for (k, e) in &inner.entries {
            assert!(inner.by_tenant[&e.tenant].contains(k));
            if let Some(tag) = e.key {
                assert!(inner.by_key[&tag].contains(k));
            }
        }
        for (tag, set) in &inner.by_tenant {
            assert!(!set.is_empty());
            assert!(set.iter().all(|k| inner.entries[k].tenant == *tag));
        }
        for (tag, set) in &inner.by_key {
            assert!(!set.is_empty());
            assert!(set.iter().all(|k| inner.entries[k].key == Some(*tag)));
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
        let cache = TaggedCache::new(100, HOUR);
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
        // A replaced entry leaves its old tags' sets.
        assert!(put(&cache, 0, 7, None));
        assert_indexed(&cache);
        cache.apply(Invalidation::tenant(tenant(0)));
        assert!(cache.get(&0, |_| Some(())).is_some(), "now under tenant 7");
        cache.remove_if(&0, |_| true);
        cache.apply(Invalidation::All);
        assert_eq!(cache.len(), 0);
        assert_indexed(&cache);
    }

    #[test]
    fn a_read_raced_by_a_removal_of_its_own_tenant_or_key_is_not_kept_but_one_raced_by_others_is() {
        let cache: TaggedCache<u32, ()> = TaggedCache::new(100, HOUR);
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
        let cache: TaggedCache<u32, ()> = TaggedCache::new(3, Duration::from_millis(500));
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
        for k in 0..2u32 {
            assert!(cache.insert(cache.ticket(), k, (), Tag::of(tenant(1)), None));
        }
        std::thread::sleep(Duration::from_millis(600));
        assert!(cache.insert(cache.ticket(), 2, (), Tag::of(tenant(2)), None));
        // Full: the two expired entries go, the fresh one stays.
        assert!(cache.insert(cache.ticket(), 3, (), Tag::of(tenant(2)), None));
        assert_eq!(held(&cache), [2, 3]);
        assert_indexed(&cache);
        assert!(cache.insert(cache.ticket(), 4, (), Tag::of(tenant(3)), None));
        // Full, nothing expired: everything goes.
        assert!(cache.insert(cache.ticket(), 5, (), Tag::of(tenant(3)), None));
        assert_eq!(held(&cache), [5]);
        assert_indexed(&cache);
        cache.apply(Invalidation::tenant(tenant(3)));
        assert_eq!(cache.len(), 0);
        assert_indexed(&cache);
    }
}
