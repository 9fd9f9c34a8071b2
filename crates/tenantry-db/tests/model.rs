//! Model-based test: random sequences of tenant, hierarchy, sharing, role and key operations, applied both to tenantry (through the library as `tenantry_app` / `tenantry_admin`) and to a plain in-memory model of who may see and do what; after every step each outcome and every tenant's visible set must agree.
//!
//! `TENANTRY_MODEL_CASES=N` sets the number of generated sequences (default
//! [`DEFAULT_CASES`]). A failure shrinks to a short op list and prints the
//! resolved trace (which tenant, resource, role and key each op touched and
//! what each side answered).
//!
//! Performance: one database for the whole test, not one per case (creating a
//! database costs far more than a case). Every case creates fresh tenants and
//! only ever names its own tenants, resources, roles and keys, so the model of
//! a case is complete for the rows its tenants can reach: anything left over by
//! earlier cases is foreign to them, and a listing that showed such a row would
//! be a leak this test reports (each case also probes one resource id of an
//! earlier case, which must stay invisible). Schema-isolated tenants are moved
//! back to the pooled model at the end of their case so partitions do not pile up.
//!
//! Model semantics (read from migrations 0002–0006 and the library): a tenant
//! reads and writes its own and its live descendants' resources and only reads
//! those shared with it; a suspended tenant still acts through the library
//! (suspension is enforced where keys are accepted: `KeyIdentity::tenant_status`)
//! but cannot create children or receive new shares; a deleted tenant cannot
//! act at all, drops out of its ancestors' view, and its keys still verify with
//! status `deleted` for callers to refuse; a resource shared by a tenant stays
//! readable by the target after its owner is suspended, but deleting a tenant
//! revokes every share of its resources and every share made to it.

use std::{
    cell::{Cell, RefCell},
    collections::{BTreeMap, BTreeSet},
    fmt,
    time::Instant,
};

use proptest::{
    prelude::*,
    strategy::Union,
    test_runner::{Config as ProptestConfig, TestCaseError, TestError, TestRunner},
};
use tenantry_db::{
    testing::TestDatabase, Access, Database, DbError, Isolation, KeyId, NewKeyOptions, NewResource,
    NewTenant, OwnerFilter, ResourceId, ResourceQuery, ResourceUpdate, RoleId, StatementMode,
    TenantContext, TenantId, TenantStatus,
};

/// Cases of a normal `cargo test` run.
const DEFAULT_CASES: u32 = 100;
/// Tenants per case at most (later creations are skipped), keeping checks cheap.
const MAX_TENANTS: usize = 6;
/// The permission catalogue (migration 0004), in name order.
const PERMS: [&str; 14] = [
    "audit.read",
    "keys.read",
    "keys.write",
    "members.read",
    "members.write",
    "resources.delete",
    "resources.read",
    "resources.share",
    "resources.write",
    "roles.read",
    "roles.write",
    "tenant.read",
    "tenants.create",
    "usage.read",
];
/// Index of a permission name that is not in the catalogue.
const UNKNOWN_PERM: u8 = PERMS.len() as u8;

// ---------------------------------------------------------------------------
// Operations
// ---------------------------------------------------------------------------

/// A tenant reference: the n-th tenant of the case (modulo how many exist) or
/// a tenant id that was never created.
#[derive(Clone, Copy)]
enum T {
    Slot(u8),
    /// Unshare only: the n-th tenant the resource is shared with (else like `Slot`).
    ShareTarget(u8),
    /// The owner of the n-th live resource, or (every third n) its parent, so
    /// that resource ops often act where they may; like `Slot` without resources.
    Owner(u8),
    /// The owner of the n-th live resource that is shared with someone (else like `Owner`).
    Sharer(u8),
    /// The tenant of the n-th role (else like `Slot`).
    RoleHolder(u8),
    /// The tenant of the n-th key, or (every third n) its parent (else like `Slot`).
    KeyHolder(u8),
    Ghost,
}

/// A resource reference: the n-th resource created in the case (deleted ones
/// included), an id nobody ever had, or a resource of an earlier case.
#[derive(Clone, Copy)]
enum R {
    Known(u8),
    /// The n-th resource the acting tenant may write (own or a descendant's).
    Mine(u8),
    /// The n-th resource the acting tenant may read (shares included).
    Readable(u8),
    /// The n-th resource the acting tenant may write that is shared with someone (else like `Mine`).
    Shared(u8),
    Unseen,
    Foreign,
}

/// A role reference: the n-th role created in the case (any tenant's), or an unknown id.
#[derive(Clone, Copy)]
enum Ro {
    Known(u8),
    /// The n-th role of the tenant the op concerns (the actor, or a key's holder).
    Own(u8),
    Unseen,
}

/// A key reference: the n-th key created in the case, or an unknown id.
#[derive(Clone, Copy)]
enum K {
    Known(u8),
    /// The n-th key held in the acting tenant's subtree.
    Mine(u8),
    Unseen,
}

impl fmt::Debug for T {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            T::Slot(n) => write!(f, "t{n}"),
            T::ShareTarget(n) => write!(f, "share-target{n}"),
            T::Owner(n) => write!(f, "owner{n}"),
            T::Sharer(n) => write!(f, "sharer{n}"),
            T::RoleHolder(n) => write!(f, "role-holder{n}"),
            T::KeyHolder(n) => write!(f, "key-holder{n}"),
            T::Ghost => write!(f, "ghost"),
        }
    }
}
impl fmt::Debug for R {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            R::Known(n) => write!(f, "r{n}"),
            R::Mine(n) => write!(f, "mine{n}"),
            R::Readable(n) => write!(f, "readable{n}"),
            R::Shared(n) => write!(f, "shared{n}"),
            R::Unseen => write!(f, "unseen"),
            R::Foreign => write!(f, "foreign"),
        }
    }
}
impl fmt::Debug for Ro {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ro::Known(n) => write!(f, "role{n}"),
            Ro::Own(n) => write!(f, "own-role{n}"),
            Ro::Unseen => write!(f, "unseen-role"),
        }
    }
}
impl fmt::Debug for K {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            K::Known(n) => write!(f, "k{n}"),
            K::Mine(n) => write!(f, "my-k{n}"),
            K::Unseen => write!(f, "unseen-key"),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum St {
    Active,
    Suspended,
    Deleted,
}

#[derive(Clone, Copy, Debug)]
enum Filter {
    All,
    Own,
    Descendants,
    Shared,
}

#[derive(Clone, Debug)]
enum Op {
    /// Admin creates a tenant (root or under `parent`), pooled or schema-isolated.
    CreateTenant {
        parent: Option<T>,
        schema: bool,
    },
    /// A tenant creates a child of itself.
    CreateChild {
        parent: T,
    },
    /// Admin re-parents (`Some`) or detaches (`None`) a tenant.
    SetParent {
        tenant: T,
        parent: Option<T>,
    },
    /// Admin suspends, activates or deletes a tenant.
    SetStatus {
        tenant: T,
        status: St,
    },
    /// Admin moves a tenant between pooled and schema isolation.
    SetIsolation {
        tenant: T,
        schema: bool,
    },
    CreateResource {
        tenant: T,
        valid: bool,
    },
    UpdateResource {
        tenant: T,
        res: R,
        valid: bool,
    },
    DeleteResource {
        tenant: T,
        res: R,
    },
    Share {
        tenant: T,
        res: R,
        target: T,
    },
    Unshare {
        tenant: T,
        res: R,
        target: T,
    },
    /// Creates a role with the permissions of bit mask `perms`; `dup` reuses
    /// the name of one of the tenant's roles (if it has one).
    CreateRole {
        tenant: T,
        perms: u16,
        dup: bool,
    },
    Grant {
        tenant: T,
        role: Ro,
        perm: u8,
    },
    Revoke {
        tenant: T,
        role: Ro,
        perm: u8,
    },
    /// Creates a key for `tenant` (or for `for_tenant`), optionally bound to a role.
    CreateKey {
        tenant: T,
        for_tenant: Option<T>,
        role: Option<Ro>,
    },
    RevokeKey {
        tenant: T,
        key: K,
    },
    KeyPermissions {
        tenant: T,
        key: K,
    },
    Get {
        tenant: T,
        res: R,
    },
    List {
        tenant: T,
        filter: Filter,
    },
}

/// The actor of a resource op: mostly a tenant that owns (or is the parent of
/// the owner of) some resource, so that allowed paths are exercised as often as denied ones.
fn actor_ref() -> impl Strategy<Value = T> {
    prop_oneof![
        3 => (0u8..8).prop_map(T::Owner),
        2 => (0u8..8).prop_map(T::Slot),
        1 => Just(T::Ghost)
    ]
}

/// The actor of a role or key op: often a tenant that holds roles or keys.
fn holder_ref(holder: fn(u8) -> T) -> impl Strategy<Value = T> {
    prop_oneof![2 => (0u8..8).prop_map(holder), 1 => t_ref()]
}

fn t_ref() -> impl Strategy<Value = T> {
    prop_oneof![
        8 => (0u8..8).prop_map(T::Slot),
        5 => (0u8..8).prop_map(T::Owner),
        1 => Just(T::Ghost)
    ]
}

fn r_ref() -> impl Strategy<Value = R> {
    prop_oneof![
        6 => (0u8..16).prop_map(R::Known),
        6 => (0u8..8).prop_map(R::Mine),
        3 => (0u8..8).prop_map(R::Readable),
        1 => Just(R::Unseen),
        1 => Just(R::Foreign)
    ]
}

fn role_ref() -> impl Strategy<Value = Ro> {
    prop_oneof![
        4 => (0u8..8).prop_map(Ro::Known),
        6 => (0u8..4).prop_map(Ro::Own),
        1 => Just(Ro::Unseen)
    ]
}

fn key_ref() -> impl Strategy<Value = K> {
    prop_oneof![
        4 => (0u8..8).prop_map(K::Known),
        6 => (0u8..4).prop_map(K::Mine),
        1 => Just(K::Unseen)
    ]
}

fn status() -> impl Strategy<Value = St> {
    prop_oneof![4 => Just(St::Active), 4 => Just(St::Suspended), 1 => Just(St::Deleted)]
}

fn filter() -> impl Strategy<Value = Filter> {
    prop_oneof![
        Just(Filter::All),
        Just(Filter::Own),
        Just(Filter::Descendants),
        Just(Filter::Shared)
    ]
}

fn create_tenant_op() -> BoxedStrategy<Op> {
    (proptest::option::of(t_ref()), proptest::bool::weighted(0.1))
        .prop_map(|(parent, schema)| Op::CreateTenant { parent, schema })
        .boxed()
}

fn op() -> impl Strategy<Value = Op> {
    let perm = 0u8..=UNKNOWN_PERM;
    Union::new_weighted(vec![
        (4, create_tenant_op()),
        (
            2,
            t_ref()
                .prop_map(|parent| Op::CreateChild { parent })
                .boxed(),
        ),
        (
            5,
            (t_ref(), proptest::option::of(t_ref()))
                .prop_map(|(tenant, parent)| Op::SetParent { tenant, parent })
                .boxed(),
        ),
        (
            4,
            (t_ref(), status())
                .prop_map(|(tenant, status)| Op::SetStatus { tenant, status })
                .boxed(),
        ),
        (
            1,
            (t_ref(), any::<bool>())
                .prop_map(|(tenant, schema)| Op::SetIsolation { tenant, schema })
                .boxed(),
        ),
        (
            10,
            (t_ref(), proptest::bool::weighted(0.9))
                .prop_map(|(tenant, valid)| Op::CreateResource { tenant, valid })
                .boxed(),
        ),
        (
            4,
            (actor_ref(), r_ref(), proptest::bool::weighted(0.9))
                .prop_map(|(tenant, res, valid)| Op::UpdateResource { tenant, res, valid })
                .boxed(),
        ),
        (
            3,
            (actor_ref(), r_ref())
                .prop_map(|(tenant, res)| Op::DeleteResource { tenant, res })
                .boxed(),
        ),
        (
            10,
            (actor_ref(), r_ref(), t_ref())
                .prop_map(|(tenant, res, target)| Op::Share {
                    tenant,
                    res,
                    target,
                })
                .boxed(),
        ),
        (
            4,
            (
                prop_oneof![3 => (0u8..8).prop_map(T::Sharer), 1 => actor_ref()],
                prop_oneof![3 => (0u8..8).prop_map(R::Shared), 1 => r_ref()],
                prop_oneof![2 => (0u8..4).prop_map(T::ShareTarget), 1 => t_ref()],
            )
                .prop_map(|(tenant, res, target)| Op::Unshare {
                    tenant,
                    res,
                    target,
                })
                .boxed(),
        ),
        (
            3,
            (
                t_ref(),
                0u16..(1 << PERMS.len()),
                proptest::bool::weighted(0.15),
            )
                .prop_map(|(tenant, perms, dup)| Op::CreateRole { tenant, perms, dup })
                .boxed(),
        ),
        (
            2,
            (holder_ref(T::RoleHolder), role_ref(), perm.clone())
                .prop_map(|(tenant, role, perm)| Op::Grant { tenant, role, perm })
                .boxed(),
        ),
        (
            2,
            (holder_ref(T::RoleHolder), role_ref(), perm)
                .prop_map(|(tenant, role, perm)| Op::Revoke { tenant, role, perm })
                .boxed(),
        ),
        (
            4,
            (
                holder_ref(T::RoleHolder),
                proptest::option::of(t_ref()),
                proptest::option::of(role_ref()),
            )
                .prop_map(|(tenant, for_tenant, role)| Op::CreateKey {
                    tenant,
                    for_tenant,
                    role,
                })
                .boxed(),
        ),
        (
            2,
            (holder_ref(T::KeyHolder), key_ref())
                .prop_map(|(tenant, key)| Op::RevokeKey { tenant, key })
                .boxed(),
        ),
        (
            2,
            (holder_ref(T::KeyHolder), key_ref())
                .prop_map(|(tenant, key)| Op::KeyPermissions { tenant, key })
                .boxed(),
        ),
        (
            4,
            (t_ref(), r_ref())
                .prop_map(|(tenant, res)| Op::Get { tenant, res })
                .boxed(),
        ),
        (
            3,
            (t_ref(), filter())
                .prop_map(|(tenant, filter)| Op::List { tenant, filter })
                .boxed(),
        ),
    ])
}

/// What the after-step check covers besides every tenant's visible set (list
/// and get-by-id, checked after every step): the rest only after the ops that
/// can change it, and all of it at the end of every case.
#[derive(Clone, Copy)]
struct Extra {
    /// Verify every key (revocation, tenant status, permissions).
    keys: bool,
    /// Every tenant's descendants with their depth.
    tree: bool,
    /// Every tenant's roles and their permissions.
    roles: bool,
}

const ALL: Extra = Extra {
    keys: true,
    tree: true,
    roles: true,
};

impl Op {
    fn extra(&self) -> Extra {
        let tree = matches!(
            self,
            Op::CreateTenant { .. }
                | Op::CreateChild { .. }
                | Op::SetParent { .. }
                | Op::SetStatus { .. }
                | Op::SetIsolation { .. }
        );
        let roles = matches!(
            self,
            Op::CreateRole { .. } | Op::Grant { .. } | Op::Revoke { .. }
        );
        let keys = roles
            || matches!(
                self,
                Op::SetStatus { .. } | Op::CreateKey { .. } | Op::RevokeKey { .. }
            );
        Extra { keys, tree, roles }
    }
}

/// A case: a first root tenant, a few more tenants and resources, then random operations.
fn sequence() -> impl Strategy<Value = Vec<Op>> {
    (
        proptest::collection::vec(create_tenant_op(), 1..4),
        proptest::collection::vec(
            (0u8..8).prop_map(|n| Op::CreateResource {
                tenant: T::Slot(n),
                valid: true,
            }),
            1..4,
        ),
        proptest::collection::vec(op(), 1..20),
    )
        .prop_map(|(tenants, resources, ops)| {
            let mut all = vec![Op::CreateTenant {
                parent: None,
                schema: false,
            }];
            all.extend(tenants);
            all.extend(resources);
            all.extend(ops);
            all
        })
}

// ---------------------------------------------------------------------------
// The model
// ---------------------------------------------------------------------------

/// What an operation answered, in the library's terms.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Outcome {
    Ok,
    NotFound,
    Forbidden,
    Conflict,
    Invalid,
    /// Unavailable or internal: never expected.
    Other(String),
}

fn outcome(e: &DbError) -> Outcome {
    match e {
        DbError::NotFound(_) => Outcome::NotFound,
        DbError::Forbidden(_) => Outcome::Forbidden,
        DbError::Conflict(_) => Outcome::Conflict,
        DbError::Invalid { .. } => Outcome::Invalid,
        other => Outcome::Other(format!("{other:?}")),
    }
}

fn of<X>(r: &Result<X, DbError>) -> Outcome {
    match r {
        Ok(_) => Outcome::Ok,
        Err(e) => outcome(e),
    }
}

#[derive(Debug)]
struct MTenant {
    id: TenantId,
    parent: Option<usize>,
    status: St,
    schema: bool,
}

#[derive(Debug)]
struct MResource {
    id: ResourceId,
    owner: usize,
    name: String,
    shared: BTreeSet<usize>,
    live: bool,
}

#[derive(Debug)]
struct MRole {
    id: RoleId,
    tenant: usize,
    name: String,
    perms: BTreeSet<u8>,
}

#[derive(Debug)]
struct MKey {
    id: KeyId,
    secret: String,
    tenant: usize,
    role: Option<usize>,
    revoked: bool,
}

/// A resolved tenant: one of the case's tenants, or the never-created ghost.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Who {
    Tenant(usize),
    Ghost,
}

/// A resolved resource: one of the case's, or an id it must never see.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Res {
    Known(usize),
    Unseen,
    Foreign,
}

impl fmt::Debug for Who {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Who::Tenant(i) => write!(f, "t{i}"),
            Who::Ghost => write!(f, "ghost"),
        }
    }
}

impl fmt::Debug for Res {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Res::Known(i) => write!(f, "r{i}"),
            Res::Unseen => write!(f, "unseen"),
            Res::Foreign => write!(f, "foreign"),
        }
    }
}

struct Model {
    tenants: Vec<MTenant>,
    resources: Vec<MResource>,
    roles: Vec<MRole>,
    keys: Vec<MKey>,
    ghost: TenantId,
    unseen_resource: ResourceId,
    /// A resource of an earlier case (still existing or not): never visible here.
    foreign_resource: ResourceId,
    unseen_role: RoleId,
    unseen_key: KeyId,
    counter: usize,
}

impl Model {
    fn new(foreign_resource: Option<ResourceId>) -> Self {
        let rand = uuid::Uuid::new_v4;
        Self {
            tenants: Vec::new(),
            resources: Vec::new(),
            roles: Vec::new(),
            keys: Vec::new(),
            ghost: TenantId::from_uuid(rand()),
            unseen_resource: ResourceId::from_uuid(rand()),
            foreign_resource: foreign_resource.unwrap_or_else(|| ResourceId::from_uuid(rand())),
            unseen_role: RoleId::from_uuid(rand()),
            unseen_key: KeyId::from_uuid(rand()),
            counter: 0,
        }
    }

    fn next(&mut self, prefix: &str) -> String {
        self.counter += 1;
        format!("{prefix}{}", self.counter)
    }

    fn who(&self, t: T) -> Option<Who> {
        match t {
            T::Ghost => Some(Who::Ghost),
            _ if self.tenants.is_empty() => None,
            T::Sharer(n)
                if self
                    .resources
                    .iter()
                    .any(|r| r.live && !r.shared.is_empty()) =>
            {
                let c: Vec<&MResource> = self
                    .resources
                    .iter()
                    .filter(|r| r.live && !r.shared.is_empty())
                    .collect();
                Some(Who::Tenant(c[n as usize % c.len()].owner))
            }
            T::Sharer(n) => self.who(T::Owner(n)),
            T::RoleHolder(n) if !self.roles.is_empty() => Some(Who::Tenant(
                self.roles[n as usize % self.roles.len()].tenant,
            )),
            T::KeyHolder(n) if !self.keys.is_empty() => {
                let holder = self.keys[n as usize % self.keys.len()].tenant;
                match self.tenants[holder].parent {
                    Some(p) if n % 3 == 2 => Some(Who::Tenant(p)),
                    _ => Some(Who::Tenant(holder)),
                }
            }
            T::RoleHolder(n) | T::KeyHolder(n) => self.who(T::Slot(n)),
            T::Owner(n) if self.resources.iter().any(|r| r.live) => {
                let live: Vec<&MResource> = self.resources.iter().filter(|r| r.live).collect();
                let owner = live[n as usize % live.len()].owner;
                match self.tenants[owner].parent {
                    Some(p) if n % 3 == 2 => Some(Who::Tenant(p)),
                    _ => Some(Who::Tenant(owner)),
                }
            }
            T::Slot(n) | T::ShareTarget(n) | T::Owner(n) => {
                Some(Who::Tenant(n as usize % self.tenants.len()))
            }
        }
    }

    fn tid(&self, w: Who) -> TenantId {
        match w {
            Who::Tenant(i) => self.tenants[i].id,
            Who::Ghost => self.ghost,
        }
    }

    /// Resolves a resource reference for an op of `actor`.
    fn res(&self, r: R, actor: Who) -> Res {
        let pick = |n: u8, ok: &dyn Fn(usize) -> bool| {
            let c: Vec<usize> = (0..self.resources.len()).filter(|i| ok(*i)).collect();
            (!c.is_empty()).then(|| Res::Known(c[n as usize % c.len()]))
        };
        let t = match actor {
            Who::Tenant(t) => Some(t),
            Who::Ghost => None,
        };
        match r {
            R::Mine(n) => t
                .and_then(|t| pick(n, &|i| self.writable(t, Res::Known(i))))
                .unwrap_or_else(|| self.res(R::Known(n), actor)),
            R::Readable(n) => t
                .and_then(|t| pick(n, &|i| self.access(t, i).is_some()))
                .unwrap_or_else(|| self.res(R::Known(n), actor)),
            R::Shared(n) => t
                .and_then(|t| {
                    pick(n, &|i| {
                        self.writable(t, Res::Known(i)) && !self.resources[i].shared.is_empty()
                    })
                })
                .unwrap_or_else(|| self.res(R::Mine(n), actor)),
            R::Known(_) if self.resources.is_empty() => Res::Unseen,
            R::Known(n) => Res::Known(n as usize % self.resources.len()),
            R::Unseen => Res::Unseen,
            R::Foreign => Res::Foreign,
        }
    }

    fn rid(&self, r: Res) -> ResourceId {
        match r {
            Res::Known(i) => self.resources[i].id,
            Res::Unseen => self.unseen_resource,
            Res::Foreign => self.foreign_resource,
        }
    }

    /// Resolves a role reference; `Own` picks among the roles of `owner`.
    fn role(&self, r: Ro, owner: Option<usize>) -> Option<usize> {
        match r {
            Ro::Own(n) => {
                let c: Vec<usize> = (0..self.roles.len())
                    .filter(|i| Some(self.roles[*i].tenant) == owner)
                    .collect();
                if c.is_empty() {
                    self.role(Ro::Known(n), None)
                } else {
                    Some(c[n as usize % c.len()])
                }
            }
            Ro::Known(_) if self.roles.is_empty() => None,
            Ro::Known(n) => Some(n as usize % self.roles.len()),
            Ro::Unseen => None,
        }
    }

    fn role_id(&self, r: Option<usize>) -> RoleId {
        r.map_or(self.unseen_role, |i| self.roles[i].id)
    }

    /// Resolves a key reference; `Mine` picks among keys in `actor`'s subtree.
    fn key(&self, k: K, actor: Who) -> Option<usize> {
        match k {
            K::Mine(n) => {
                let c: Vec<usize> = match actor {
                    Who::Tenant(t) => {
                        let vis = self.visible(t);
                        (0..self.keys.len())
                            .filter(|i| vis.contains(&self.keys[*i].tenant))
                            .collect()
                    }
                    Who::Ghost => Vec::new(),
                };
                if c.is_empty() {
                    self.key(K::Known(n), actor)
                } else {
                    Some(c[n as usize % c.len()])
                }
            }
            K::Known(_) if self.keys.is_empty() => None,
            K::Known(n) => Some(n as usize % self.keys.len()),
            K::Unseen => None,
        }
    }

    fn key_id(&self, k: Option<usize>) -> KeyId {
        k.map_or(self.unseen_key, |i| self.keys[i].id)
    }

    /// Descendants of `t` (any status) with their depth, from the parent links.
    fn descendants(&self, t: usize) -> BTreeMap<usize, i32> {
        let mut out = BTreeMap::new();
        for u in 0..self.tenants.len() {
            let mut depth = 0;
            let mut cur = self.tenants[u].parent;
            while let Some(p) = cur {
                depth += 1;
                if p == t {
                    out.insert(u, depth);
                    break;
                }
                cur = self.tenants[p].parent;
            }
        }
        out
    }

    /// The tenant and its descendants that are not deleted: whose rows it reaches.
    fn visible(&self, t: usize) -> BTreeSet<usize> {
        let mut v: BTreeSet<usize> = self
            .descendants(t)
            .into_keys()
            .filter(|d| self.tenants[*d].status != St::Deleted)
            .collect();
        v.insert(t);
        v
    }

    /// Can a transaction act for this tenant at all? Ghost: not found; deleted: forbidden.
    fn context(&self, w: Who) -> Result<usize, Outcome> {
        match w {
            Who::Ghost => Err(Outcome::NotFound),
            Who::Tenant(i) if self.tenants[i].status == St::Deleted => Err(Outcome::Forbidden),
            Who::Tenant(i) => Ok(i),
        }
    }

    /// Resources `t` may write (own and live descendants').
    fn writable(&self, t: usize, r: Res) -> bool {
        match r {
            Res::Known(i) => {
                let res = &self.resources[i];
                res.live && self.visible(t).contains(&res.owner)
            }
            _ => false,
        }
    }

    fn access(&self, t: usize, r: usize) -> Option<Access> {
        let res = &self.resources[r];
        if !res.live {
            return None;
        }
        if res.owner == t {
            Some(Access::Own)
        } else if self.visible(t).contains(&res.owner) {
            Some(Access::Descendant)
        } else if res.shared.contains(&t) {
            Some(Access::Shared)
        } else {
            None
        }
    }

    /// What a listing with `filter` must return for `t`: id -> (owner, access, name).
    fn listing(&self, t: usize, filter: Filter) -> Listing {
        let vis = self.visible(t);
        let mut out = BTreeMap::new();
        for (i, r) in self.resources.iter().enumerate() {
            let Some(access) = self.access(t, i) else {
                continue;
            };
            let include = match filter {
                Filter::All => true,
                Filter::Own => r.owner == t,
                Filter::Descendants => r.owner != t && vis.contains(&r.owner),
                Filter::Shared => r.owner != t && r.shared.contains(&t),
            };
            if include {
                out.insert(r.id, (self.tenants[r.owner].id, access, r.name.clone()));
            }
        }
        out
    }

    fn key_perms(&self, k: usize) -> Vec<String> {
        match self.keys[k].role {
            Some(role) => self.roles[role]
                .perms
                .iter()
                .map(|p| PERMS[*p as usize].to_owned())
                .collect(),
            None => PERMS.iter().map(|p| (*p).to_owned()).collect(),
        }
    }

    fn status_str(&self, t: usize) -> &'static str {
        match self.tenants[t].status {
            St::Active => "active",
            St::Suspended => "suspended",
            St::Deleted => "deleted",
        }
    }
}

type Listing = BTreeMap<ResourceId, (TenantId, Access, String)>;

fn listing_of(items: Vec<tenantry_db::Resource>) -> Listing {
    items
        .into_iter()
        .map(|r| (r.id, (r.tenant_id, r.access, r.name)))
        .collect()
}

/// `role3` / `k0` for a resolved reference, `unseen-role` / `unseen-k` for an unknown id.
fn label(prefix: &str, i: Option<usize>) -> String {
    match i {
        Some(i) => format!("{prefix}{i}"),
        None => format!("unseen-{prefix}"),
    }
}

fn perm_name(p: u8) -> &'static str {
    PERMS.get(p as usize).copied().unwrap_or("nope.unknown")
}

// ---------------------------------------------------------------------------
// Running a case
// ---------------------------------------------------------------------------

struct Case<'a> {
    db: &'a Database,
    stats: &'a RefCell<BTreeMap<String, u64>>,
    m: Model,
    trace: Vec<String>,
}

impl Case<'_> {
    fn count(&self, key: String) {
        *self.stats.borrow_mut().entry(key).or_default() += 1;
    }

    /// Compares an outcome with the model's and counts it for the summary.
    fn expect(&mut self, expected: &Outcome, got: &Outcome, what: &str) -> Result<(), String> {
        self.count(format!("{what} -> {expected:?}"));
        if let Some(line) = self.trace.last_mut() {
            line.push_str(&format!(" => {got:?}"));
        }
        if expected == got {
            Ok(())
        } else {
            Err(format!(
                "{what}: model expects {expected:?}, tenantry answered {got:?}"
            ))
        }
    }
}

fn ctx(id: TenantId) -> TenantContext {
    TenantContext::new(id).with_actor("model")
}

impl Case<'_> {
    /// Applies one op to both sides. `Ok(false)` when the op was skipped
    /// (it names something the case does not have yet).
    async fn step(&mut self, op: &Op) -> Result<bool, String> {
        let db = self.db;
        match *op {
            Op::CreateTenant { parent, schema } => {
                if self.m.tenants.len() >= MAX_TENANTS {
                    return Ok(false);
                }
                let parent = match parent {
                    None => None,
                    Some(p) => match self.m.who(p) {
                        None => return Ok(false),
                        Some(w) => Some(w),
                    },
                };
                let expected = match parent {
                    Some(Who::Ghost) => Outcome::NotFound,
                    Some(Who::Tenant(p)) if self.m.tenants[p].status == St::Deleted => {
                        Outcome::NotFound
                    }
                    _ => Outcome::Ok,
                };
                let name = self.m.next("tenant-");
                let mut admin = db.admin("model").await.map_err(|e| e.to_string())?;
                let r = admin
                    .create_tenant(&NewTenant {
                        name,
                        parent_id: parent.map(|w| self.m.tid(w)),
                        isolation: if schema {
                            Isolation::Schema
                        } else {
                            Isolation::Shared
                        },
                        settings: None,
                    })
                    .await;
                let r = match r {
                    Ok(t) => admin.commit().await.map(|()| t),
                    Err(e) => Err(e),
                };
                self.note(format!(
                    "create tenant t{} under {parent:?}{}",
                    self.m.tenants.len(),
                    if schema { " (schema)" } else { "" }
                ));
                self.expect(&expected, &of(&r), "create tenant")?;
                if let Ok(t) = r {
                    self.m.tenants.push(MTenant {
                        id: t.tenant_id,
                        parent: match parent {
                            Some(Who::Tenant(p)) => Some(p),
                            _ => None,
                        },
                        status: St::Active,
                        schema,
                    });
                }
            }
            Op::CreateChild { parent } => {
                if self.m.tenants.len() >= MAX_TENANTS {
                    return Ok(false);
                }
                let Some(w) = self.m.who(parent) else {
                    return Ok(false);
                };
                let expected = match self.m.context(w) {
                    Err(o) => o,
                    Ok(p) if self.m.tenants[p].status != St::Active => Outcome::Forbidden,
                    Ok(_) => Outcome::Ok,
                };
                let name = self.m.next("child-");
                let mut s = db
                    .tenant(ctx(self.m.tid(w)))
                    .await
                    .map_err(|e| e.to_string())?;
                let r = s.create_child_tenant(&name, Isolation::Shared, None).await;
                let r = match r {
                    Ok(t) => s.commit().await.map(|()| t),
                    Err(e) => Err(e),
                };
                self.note(format!("{w:?} creates child t{}", self.m.tenants.len()));
                self.expect(&expected, &of(&r), "create child tenant")?;
                if let (Ok(id), Who::Tenant(p)) = (r, w) {
                    self.m.tenants.push(MTenant {
                        id,
                        parent: Some(p),
                        status: St::Active,
                        schema: false,
                    });
                }
            }
            Op::SetParent { tenant, parent } => {
                let Some(w) = self.m.who(tenant) else {
                    return Ok(false);
                };
                let parent = match parent {
                    None => None,
                    Some(p) => match self.m.who(p) {
                        None => return Ok(false),
                        Some(w) => Some(w),
                    },
                };
                let expected = match w {
                    Who::Ghost => Outcome::NotFound,
                    Who::Tenant(t) if self.m.tenants[t].status == St::Deleted => Outcome::Conflict,
                    Who::Tenant(t) => match parent {
                        None => Outcome::Ok,
                        Some(Who::Tenant(p)) if self.m.tenants[t].parent == Some(p) => Outcome::Ok,
                        Some(Who::Ghost) => Outcome::NotFound,
                        Some(Who::Tenant(p)) if self.m.tenants[p].status == St::Deleted => {
                            Outcome::NotFound
                        }
                        Some(Who::Tenant(p)) if p == t => Outcome::Invalid,
                        Some(Who::Tenant(p)) if self.m.descendants(t).contains_key(&p) => {
                            Outcome::Conflict
                        }
                        Some(Who::Tenant(_)) => Outcome::Ok,
                    },
                };
                let cycle = match (w, parent) {
                    (Who::Tenant(t), Some(Who::Tenant(p))) => {
                        expected == Outcome::Conflict && self.m.descendants(t).contains_key(&p)
                    }
                    _ => false,
                };
                let mut admin = db.admin("model").await.map_err(|e| e.to_string())?;
                let r = admin
                    .set_parent(self.m.tid(w), parent.map(|p| self.m.tid(p)))
                    .await;
                let r = match r {
                    Ok(t) => admin.commit().await.map(|()| t),
                    Err(e) => Err(e),
                };
                self.note(format!("set parent of {w:?} to {parent:?}"));
                self.expect(
                    &expected,
                    &of(&r),
                    if cycle {
                        "set parent into a cycle"
                    } else {
                        "set parent"
                    },
                )?;
                if let (Ok(_), Who::Tenant(t)) = (r, w) {
                    self.m.tenants[t].parent = match parent {
                        Some(Who::Tenant(p)) => Some(p),
                        _ => None,
                    };
                }
            }
            Op::SetStatus { tenant, status } => {
                let Some(w) = self.m.who(tenant) else {
                    return Ok(false);
                };
                let expected = match w {
                    Who::Ghost => Outcome::NotFound,
                    Who::Tenant(t) if self.m.tenants[t].status == St::Deleted => Outcome::Conflict,
                    Who::Tenant(t)
                        if status == St::Deleted
                            && self
                                .m
                                .tenants
                                .iter()
                                .any(|c| c.parent == Some(t) && c.status != St::Deleted) =>
                    {
                        Outcome::Conflict
                    }
                    Who::Tenant(_) => Outcome::Ok,
                };
                let mut admin = db.admin("model").await.map_err(|e| e.to_string())?;
                let r = admin
                    .set_status(
                        self.m.tid(w),
                        match status {
                            St::Active => TenantStatus::Active,
                            St::Suspended => TenantStatus::Suspended,
                            St::Deleted => TenantStatus::Deleted,
                        },
                    )
                    .await;
                let r = match r {
                    Ok(t) => admin.commit().await.map(|()| t),
                    Err(e) => Err(e),
                };
                self.note(format!("set status of {w:?} to {status:?}"));
                self.expect(&expected, &of(&r), "set status")?;
                if let (Ok(_), Who::Tenant(t)) = (r, w) {
                    self.m.tenants[t].status = status;
                    if status == St::Deleted {
                        // Deletion revokes its shares, both ways (0007).
                        for res in &mut self.m.resources {
                            if res.owner == t {
                                res.shared.clear();
                            }
                            res.shared.remove(&t);
                        }
                    }
                }
            }
            Op::SetIsolation { tenant, schema } => {
                let Some(w) = self.m.who(tenant) else {
                    return Ok(false);
                };
                let expected = match w {
                    Who::Ghost => Outcome::NotFound,
                    Who::Tenant(t) if self.m.tenants[t].status == St::Deleted => Outcome::NotFound,
                    Who::Tenant(_) => Outcome::Ok,
                };
                let mut admin = db.admin("model").await.map_err(|e| e.to_string())?;
                let r = admin
                    .set_isolation(
                        self.m.tid(w),
                        if schema {
                            Isolation::Schema
                        } else {
                            Isolation::Shared
                        },
                    )
                    .await;
                let r = match r {
                    Ok(t) => admin.commit().await.map(|()| t),
                    Err(e) => Err(e),
                };
                self.note(format!("set isolation of {w:?} to schema={schema}"));
                self.expect(&expected, &of(&r), "set isolation")?;
                if let (Ok(_), Who::Tenant(t)) = (r, w) {
                    self.m.tenants[t].schema = schema;
                }
            }
            Op::CreateResource { tenant, valid } => {
                let Some(w) = self.m.who(tenant) else {
                    return Ok(false);
                };
                // The library validates input before it opens the transaction.
                let expected = if !valid {
                    Outcome::Invalid
                } else {
                    match self.m.context(w) {
                        Err(o) => o,
                        Ok(_) => Outcome::Ok,
                    }
                };
                let name = if valid {
                    self.m.next("res-")
                } else {
                    String::new()
                };
                let mut s = db
                    .tenant(ctx(self.m.tid(w)))
                    .await
                    .map_err(|e| e.to_string())?;
                let r = s
                    .create_resource(&NewResource {
                        name: name.clone(),
                        data: serde_json::json!({"n": name}),
                    })
                    .await;
                let r = match r {
                    Ok(x) => s.commit().await.map(|()| x),
                    Err(e) => Err(e),
                };
                self.note(format!(
                    "{w:?} creates r{} (valid: {valid})",
                    self.m.resources.len()
                ));
                self.expect(&expected, &of(&r), "create resource")?;
                if let (Ok(res), Who::Tenant(t)) = (r, w) {
                    if res.tenant_id != self.m.tenants[t].id || res.access != Access::Own {
                        return Err(format!("new resource came back as {res:?}"));
                    }
                    self.m.resources.push(MResource {
                        id: res.id,
                        owner: t,
                        name,
                        shared: BTreeSet::new(),
                        live: true,
                    });
                }
            }
            Op::UpdateResource { tenant, res, valid } => {
                let Some(w) = self.m.who(tenant) else {
                    return Ok(false);
                };
                let r = self.m.res(res, w);
                let expected = if !valid {
                    Outcome::Invalid
                } else {
                    match self.m.context(w) {
                        Err(o) => o,
                        Ok(t) if self.m.writable(t, r) => Outcome::Ok,
                        Ok(_) => Outcome::NotFound,
                    }
                };
                let name = if valid {
                    self.m.next("upd-")
                } else {
                    String::new()
                };
                let mut s = db
                    .tenant(ctx(self.m.tid(w)))
                    .await
                    .map_err(|e| e.to_string())?;
                let got = s
                    .update_resource(
                        self.m.rid(r),
                        &ResourceUpdate {
                            name: Some(name.clone()),
                            data: None,
                        },
                    )
                    .await;
                let got = match got {
                    Ok(x) => s.commit().await.map(|()| x),
                    Err(e) => Err(e),
                };
                self.note(format!("{w:?} updates {r:?} (valid: {valid})"));
                self.expect(&expected, &of(&got), "update resource")?;
                if let (Ok(_), Res::Known(i)) = (got, r) {
                    self.m.resources[i].name = name;
                }
            }
            Op::DeleteResource { tenant, res } => {
                let Some(w) = self.m.who(tenant) else {
                    return Ok(false);
                };
                let r = self.m.res(res, w);
                let expected = match self.m.context(w) {
                    Err(o) => o,
                    Ok(t) if self.m.writable(t, r) => Outcome::Ok,
                    Ok(_) => Outcome::NotFound,
                };
                let mut s = db
                    .tenant(ctx(self.m.tid(w)))
                    .await
                    .map_err(|e| e.to_string())?;
                let got = s.delete_resource(self.m.rid(r)).await;
                let got = match got {
                    Ok(()) => s.commit().await,
                    Err(e) => Err(e),
                };
                self.note(format!("{w:?} deletes {r:?}"));
                self.expect(&expected, &of(&got), "delete resource")?;
                if let (Ok(()), Res::Known(i)) = (got, r) {
                    // Its shares go with it.
                    self.m.resources[i].live = false;
                    self.m.resources[i].shared.clear();
                }
            }
            Op::Share {
                tenant,
                res,
                target,
            } => {
                let (Some(w), Some(to)) = (self.m.who(tenant), self.m.who(target)) else {
                    return Ok(false);
                };
                let r = self.m.res(res, w);
                let expected = match self.m.context(w) {
                    Err(o) => o,
                    Ok(t) if !self.m.writable(t, r) => Outcome::NotFound,
                    Ok(_) => {
                        let Res::Known(i) = r else { unreachable!() };
                        let owner = self.m.resources[i].owner;
                        match to {
                            Who::Ghost => Outcome::NotFound,
                            Who::Tenant(x) => match self.m.tenants[x].status {
                                St::Deleted => Outcome::NotFound,
                                St::Suspended => Outcome::Conflict,
                                St::Active if x == owner => Outcome::Invalid,
                                St::Active if self.m.resources[i].shared.contains(&x) => {
                                    Outcome::Conflict
                                }
                                St::Active => Outcome::Ok,
                            },
                        }
                    }
                };
                let mut s = db
                    .tenant(ctx(self.m.tid(w)))
                    .await
                    .map_err(|e| e.to_string())?;
                let got = s.share_resource(self.m.rid(r), self.m.tid(to)).await;
                let got = match got {
                    Ok(x) => s.commit().await.map(|()| x),
                    Err(e) => Err(e),
                };
                self.note(format!("{w:?} shares {r:?} with {to:?}"));
                self.expect(&expected, &of(&got), "share")?;
                if let (Ok(share), Res::Known(i), Who::Tenant(x)) = (got, r, to) {
                    let owner = self.m.tenants[self.m.resources[i].owner].id;
                    if share.owner_tenant_id != owner || share.tenant_id != self.m.tenants[x].id {
                        return Err(format!("share came back as {share:?}"));
                    }
                    self.m.resources[i].shared.insert(x);
                }
            }
            Op::Unshare {
                tenant,
                res,
                target,
            } => {
                let Some(w) = self.m.who(tenant) else {
                    return Ok(false);
                };
                let r = self.m.res(res, w);
                let to = match (target, r) {
                    (T::ShareTarget(n), Res::Known(i))
                        if !self.m.resources[i].shared.is_empty() =>
                    {
                        let c: Vec<usize> = self.m.resources[i].shared.iter().copied().collect();
                        Who::Tenant(c[n as usize % c.len()])
                    }
                    _ => match self.m.who(target) {
                        Some(to) => to,
                        None => return Ok(false),
                    },
                };
                let expected = match self.m.context(w) {
                    Err(o) => o,
                    Ok(t) if !self.m.writable(t, r) => Outcome::NotFound,
                    Ok(_) => {
                        let Res::Known(i) = r else { unreachable!() };
                        match to {
                            Who::Tenant(x) if self.m.resources[i].shared.contains(&x) => {
                                Outcome::Ok
                            }
                            _ => Outcome::NotFound,
                        }
                    }
                };
                let mut s = db
                    .tenant(ctx(self.m.tid(w)))
                    .await
                    .map_err(|e| e.to_string())?;
                let got = s.unshare_resource(self.m.rid(r), self.m.tid(to)).await;
                let got = match got {
                    Ok(()) => s.commit().await,
                    Err(e) => Err(e),
                };
                self.note(format!("{w:?} unshares {r:?} from {to:?}"));
                self.expect(&expected, &of(&got), "unshare")?;
                if let (Ok(()), Res::Known(i), Who::Tenant(x)) = (got, r, to) {
                    self.m.resources[i].shared.remove(&x);
                }
            }
            Op::CreateRole { tenant, perms, dup } => {
                let Some(w) = self.m.who(tenant) else {
                    return Ok(false);
                };
                let existing = match w {
                    Who::Tenant(t) => self.m.roles.iter().find(|r| r.tenant == t),
                    Who::Ghost => None,
                };
                let (name, expected) = match (dup, existing) {
                    (true, Some(role)) => (
                        role.name.clone(),
                        self.m.context(w).err().unwrap_or(Outcome::Conflict),
                    ),
                    _ => (
                        self.m.next("role-"),
                        self.m.context(w).err().unwrap_or(Outcome::Ok),
                    ),
                };
                let wanted: BTreeSet<u8> = (0..PERMS.len() as u8)
                    .filter(|p| perms & (1 << p) != 0)
                    .collect();
                let mut s = db
                    .tenant(ctx(self.m.tid(w)))
                    .await
                    .map_err(|e| e.to_string())?;
                let got = async {
                    let mut role = s.create_role(&name, "model role").await?;
                    for p in &wanted {
                        role = s.grant_permission(role.role_id, perm_name(*p)).await?;
                    }
                    Ok(role)
                }
                .await;
                let got = match got {
                    Ok(x) => s.commit().await.map(|()| x),
                    Err(e) => Err(e),
                };
                self.note(format!(
                    "{w:?} creates role{} {name:?} with {:?}",
                    self.m.roles.len(),
                    wanted.iter().map(|p| perm_name(*p)).collect::<Vec<_>>()
                ));
                self.expect(&expected, &of(&got), "create role")?;
                if let (Ok(role), Who::Tenant(t)) = (got, w) {
                    let names: Vec<String> = wanted.iter().map(|p| perm_name(*p).into()).collect();
                    if role.permissions != names {
                        return Err(format!(
                            "role came back with {:?}, granted {names:?}",
                            role.permissions
                        ));
                    }
                    self.m.roles.push(MRole {
                        id: role.role_id,
                        tenant: t,
                        name,
                        perms: wanted,
                    });
                }
            }
            Op::Grant { tenant, role, perm } | Op::Revoke { tenant, role, perm } => {
                let grant = matches!(op, Op::Grant { .. });
                let Some(w) = self.m.who(tenant) else {
                    return Ok(false);
                };
                let actor = match w {
                    Who::Tenant(t) => Some(t),
                    Who::Ghost => None,
                };
                let role = self.m.role(role, actor);
                let expected = match self.m.context(w) {
                    Err(o) => o,
                    // Only roles of the current tenant itself (not of descendants).
                    Ok(t) if role.is_none_or(|r| self.m.roles[r].tenant != t) => Outcome::NotFound,
                    Ok(_) if perm == UNKNOWN_PERM => Outcome::NotFound,
                    Ok(_) => Outcome::Ok,
                };
                let mut s = db
                    .tenant(ctx(self.m.tid(w)))
                    .await
                    .map_err(|e| e.to_string())?;
                let role_id = self.m.role_id(role);
                let got = if grant {
                    s.grant_permission(role_id, perm_name(perm)).await
                } else {
                    s.revoke_permission(role_id, perm_name(perm)).await
                };
                let got = match got {
                    Ok(x) => s.commit().await.map(|()| x),
                    Err(e) => Err(e),
                };
                self.note(format!(
                    "{w:?} {} {} on {}",
                    if grant { "grants" } else { "revokes" },
                    perm_name(perm),
                    label("role", role)
                ));
                self.expect(&expected, &of(&got), "grant/revoke permission")?;
                if let (Ok(r), Some(i)) = (got, role) {
                    if grant {
                        self.m.roles[i].perms.insert(perm);
                    } else {
                        self.m.roles[i].perms.remove(&perm);
                    }
                    let names: Vec<String> = self.m.roles[i]
                        .perms
                        .iter()
                        .map(|p| perm_name(*p).into())
                        .collect();
                    if r.permissions != names {
                        return Err(format!("role has {:?}, model {names:?}", r.permissions));
                    }
                }
            }
            Op::CreateKey {
                tenant,
                for_tenant,
                role,
            } => {
                let Some(w) = self.m.who(tenant) else {
                    return Ok(false);
                };
                let for_who = match for_tenant {
                    None => None,
                    Some(f) => match self.m.who(f) {
                        None => return Ok(false),
                        Some(x) => Some(x),
                    },
                };
                let holder_hint = match (for_who, w) {
                    (Some(Who::Tenant(x)), _) | (None, Who::Tenant(x)) => Some(x),
                    _ => None,
                };
                let role = role.map(|r| self.m.role(r, holder_hint));
                let expected = match self.m.context(w) {
                    Err(o) => o,
                    Ok(t) => {
                        let holder = match for_who {
                            None => Some(t),
                            Some(Who::Ghost) => None,
                            Some(Who::Tenant(x)) => self.m.visible(t).contains(&x).then_some(x),
                        };
                        match (holder, role) {
                            (None, _) => Outcome::NotFound,
                            (Some(_), None) => Outcome::Ok,
                            (Some(h), Some(r)) => {
                                if r.is_some_and(|r| self.m.roles[r].tenant == h) {
                                    Outcome::Ok
                                } else {
                                    Outcome::NotFound
                                }
                            }
                        }
                    }
                };
                let mut s = db
                    .tenant(ctx(self.m.tid(w)))
                    .await
                    .map_err(|e| e.to_string())?;
                let got = s
                    .create_api_key(&NewKeyOptions {
                        description: "model".into(),
                        tenant_id: for_who.map(|f| self.m.tid(f)),
                        role_id: role.map(|r| self.m.role_id(r)),
                        ..Default::default()
                    })
                    .await;
                let got = match got {
                    Ok(x) => s.commit().await.map(|()| x),
                    Err(e) => Err(e),
                };
                self.note(format!(
                    "{w:?} creates k{} for {} bound to {}",
                    self.m.keys.len(),
                    for_who.map_or("itself".into(), |f| format!("{f:?}")),
                    role.map_or("no role".into(), |r| label("role", r))
                ));
                self.expect(&expected, &of(&got), "create key")?;
                if let Ok(key) = got {
                    let holder = match (for_who, w) {
                        (Some(Who::Tenant(x)), _) | (None, Who::Tenant(x)) => x,
                        _ => unreachable!("an Ok key has a holder"),
                    };
                    if key.info.tenant_id != self.m.tenants[holder].id {
                        return Err(format!("key came back as {:?}", key.info));
                    }
                    self.m.keys.push(MKey {
                        id: key.info.key_id,
                        secret: key.secret.expose().to_owned(),
                        tenant: holder,
                        role: role.flatten(),
                        revoked: false,
                    });
                }
            }
            Op::RevokeKey { tenant, key } => {
                let Some(w) = self.m.who(tenant) else {
                    return Ok(false);
                };
                let k = self.m.key(key, w);
                let expected = match self.m.context(w) {
                    Err(o) => o,
                    Ok(t)
                        if k.is_some_and(|k| {
                            self.m.visible(t).contains(&self.m.keys[k].tenant)
                        }) =>
                    {
                        Outcome::Ok
                    }
                    Ok(_) => Outcome::NotFound,
                };
                let mut s = db
                    .tenant(ctx(self.m.tid(w)))
                    .await
                    .map_err(|e| e.to_string())?;
                let got = s.revoke_api_key(self.m.key_id(k)).await;
                let got = match got {
                    Ok(()) => s.commit().await,
                    Err(e) => Err(e),
                };
                self.note(format!("{w:?} revokes {}", label("k", k)));
                self.expect(&expected, &of(&got), "revoke key")?;
                if let (Ok(()), Some(k)) = (got, k) {
                    self.m.keys[k].revoked = true;
                }
            }
            Op::KeyPermissions { tenant, key } => {
                let Some(w) = self.m.who(tenant) else {
                    return Ok(false);
                };
                let k = self.m.key(key, w);
                let expected = match self.m.context(w) {
                    Err(o) => o,
                    Ok(t)
                        if k.is_some_and(|k| {
                            self.m.visible(t).contains(&self.m.keys[k].tenant)
                        }) =>
                    {
                        Outcome::Ok
                    }
                    Ok(_) => Outcome::NotFound,
                };
                let mut s = db
                    .tenant(ctx(self.m.tid(w)))
                    .await
                    .map_err(|e| e.to_string())?;
                let got = s.key_permissions(self.m.key_id(k)).await;
                drop(s);
                self.note(format!("{w:?} reads the permissions of {}", label("k", k)));
                self.expect(&expected, &of(&got), "key permissions")?;
                if let (Ok(perms), Some(k)) = (got, k) {
                    let want = self.m.key_perms(k);
                    if perms != want {
                        return Err(format!("key permissions {perms:?}, model {want:?}"));
                    }
                }
            }
            Op::Get { tenant, res } => {
                let Some(w) = self.m.who(tenant) else {
                    return Ok(false);
                };
                let r = self.m.res(res, w);
                let want = match self.m.context(w) {
                    Err(o) => Err(o),
                    Ok(t) => match r {
                        Res::Known(i) => self.m.access(t, i).ok_or(Outcome::NotFound),
                        _ => Err(Outcome::NotFound),
                    },
                };
                let s = db
                    .tenant(ctx(self.m.tid(w)))
                    .await
                    .map_err(|e| e.to_string())?;
                let got = s.get_resource_and_commit(self.m.rid(r)).await;
                self.note(format!("{w:?} gets {r:?}"));
                self.count(match &want {
                    Ok(_) => "get -> Ok".into(),
                    Err(o) => format!("get -> {o:?}"),
                });
                match (&want, got) {
                    (Ok(access), Ok(res)) if res.access == *access => {}
                    (Err(o), Err(e)) if *o == outcome(&e) => {}
                    (want, got) => {
                        return Err(format!(
                            "get: model expects {want:?}, tenantry answered {got:?}"
                        ))
                    }
                }
            }
            Op::List { tenant, filter } => {
                let Some(w) = self.m.who(tenant) else {
                    return Ok(false);
                };
                let want = self.m.context(w).map(|t| self.m.listing(t, filter));
                let mut s = db
                    .tenant(ctx(self.m.tid(w)))
                    .await
                    .map_err(|e| e.to_string())?;
                let got = s
                    .list_resources(&ResourceQuery {
                        owner: match filter {
                            Filter::All => OwnerFilter::All,
                            Filter::Own => OwnerFilter::Own,
                            Filter::Descendants => OwnerFilter::Descendants,
                            Filter::Shared => OwnerFilter::Shared,
                        },
                        limit: 1000,
                        ..Default::default()
                    })
                    .await;
                drop(s);
                self.note(format!("{w:?} lists {filter:?}"));
                self.count(match &want {
                    Ok(items) if items.is_empty() => format!("list {filter:?} -> Ok, empty"),
                    Ok(_) => format!("list {filter:?} -> Ok"),
                    Err(o) => format!("list {filter:?} -> {o:?}"),
                });
                match (want, got) {
                    (Ok(want), Ok(page)) => {
                        let got = listing_of(page.items);
                        if got != want {
                            return Err(format!(
                                "list {filter:?}: model expects {want:?}, tenantry listed {got:?}"
                            ));
                        }
                    }
                    (Err(o), Err(e)) if o == outcome(&e) => {}
                    (want, got) => {
                        return Err(format!(
                            "list {filter:?}: model expects {want:?}, tenantry answered {:?}",
                            got.map(|p| listing_of(p.items))
                        ))
                    }
                }
            }
        }
        Ok(true)
    }

    fn note(&mut self, line: String) {
        self.trace.push(line);
    }

    /// After every step: what every tenant sees must be what the model says.
    async fn check(&self, extra: Extra) -> Result<(), String> {
        let db = self.db;
        let m = &self.m;
        let mut probes: Vec<(String, ResourceId)> = m
            .resources
            .iter()
            .enumerate()
            .map(|(i, r)| (format!("r{i}"), r.id))
            .collect();
        probes.push(("unseen".into(), m.unseen_resource));
        probes.push(("foreign".into(), m.foreign_resource));
        // Tenants are checked concurrently (one transaction each): the checks
        // only read, and this keeps thousands of cases affordable.
        let per_tenant = m
            .tenants
            .iter()
            .enumerate()
            .map(|(t, tenant)| self.check_tenant(t, tenant, &probes, extra));
        let keys = async {
            if !extra.keys {
                return Ok(());
            }
            for (k, key) in m.keys.iter().enumerate() {
                let got = db
                    .verify_key(&key.secret)
                    .await
                    .map_err(|e| e.to_string())?;
                let want = (!key.revoked).then(|| {
                    (
                        m.tenants[key.tenant].id,
                        m.status_str(key.tenant).to_owned(),
                        m.key_perms(k),
                    )
                });
                let got = got.map(|i| (i.tenant_id, i.tenant_status, i.permissions));
                if got != want {
                    return Err(format!("verify k{k}: model {want:?}, tenantry {got:?}"));
                }
            }
            Ok(())
        };
        let (tenants, keys) = futures_util::join!(futures_util::future::join_all(per_tenant), keys);
        tenants.into_iter().chain([keys]).collect()
    }

    async fn check_tenant(
        &self,
        t: usize,
        tenant: &MTenant,
        probes: &[(String, ResourceId)],
        extra: Extra,
    ) -> Result<(), String> {
        let db = self.db;
        let m = &self.m;
        let mut s = db.tenant(ctx(tenant.id)).await.map_err(|e| e.to_string())?;
        let listed = s
            .list_resources(&ResourceQuery {
                owner: OwnerFilter::All,
                limit: 1000,
                ..Default::default()
            })
            .await;
        if tenant.status == St::Deleted {
            match listed {
                Err(DbError::Forbidden(_)) => return Ok(()),
                other => {
                    return Err(format!(
                        "deleted t{t} must not act, yet listing answered {:?}",
                        other.map(|p| listing_of(p.items))
                    ))
                }
            }
        }
        let got = listing_of(listed.map_err(|e| format!("t{t} lists: {e:?}"))?.items);
        let want = m.listing(t, Filter::All);
        if got != want {
            return Err(format!(
                "visible set of t{t}: model {want:?}, tenantry {got:?}"
            ));
        }
        for (label, id) in probes {
            let got = s.get_resource(*id).await;
            let want = m
                .resources
                .iter()
                .position(|r| r.id == *id)
                .and_then(|i| m.access(t, i));
            match (want, got) {
                (Some(a), Ok(r)) if r.access == a && r.id == *id => {}
                (None, Err(DbError::NotFound(_))) => {}
                (want, got) => {
                    return Err(format!(
                        "t{t} gets {label}: model expects {want:?}, tenantry answered {got:?}"
                    ))
                }
            }
        }
        if extra.tree {
            self.check_tree(t, &mut s).await?;
        }
        if extra.roles {
            self.check_roles(t, &mut s).await?;
        }
        s.commit().await.map_err(|e| e.to_string())?;
        Ok(())
    }

    async fn check_tree(&self, t: usize, s: &mut tenantry_db::TenantScope) -> Result<(), String> {
        let m = &self.m;
        let got: BTreeSet<(TenantId, i32)> = s
            .descendants()
            .await
            .map_err(|e| format!("t{t} descendants: {e:?}"))?
            .into_iter()
            .map(|(d, depth)| (d.tenant_id, depth))
            .collect();
        let want: BTreeSet<(TenantId, i32)> = m
            .descendants(t)
            .into_iter()
            .filter(|(d, _)| m.tenants[*d].status != St::Deleted)
            .map(|(d, depth)| (m.tenants[d].id, depth))
            .collect();
        if got != want {
            return Err(format!(
                "descendants of t{t}: model {want:?}, tenantry {got:?}"
            ));
        }
        Ok(())
    }

    async fn check_roles(&self, t: usize, s: &mut tenantry_db::TenantScope) -> Result<(), String> {
        let m = &self.m;
        let got: BTreeSet<(RoleId, Vec<String>)> = s
            .list_roles()
            .await
            .map_err(|e| format!("t{t} roles: {e:?}"))?
            .into_iter()
            .map(|r| (r.role_id, r.permissions))
            .collect();
        let want: BTreeSet<(RoleId, Vec<String>)> = m
            .roles
            .iter()
            .filter(|r| r.tenant == t)
            .map(|r| (r.id, r.perms.iter().map(|p| perm_name(*p).into()).collect()))
            .collect();
        if got != want {
            return Err(format!("roles of t{t}: model {want:?}, tenantry {got:?}"));
        }
        Ok(())
    }

    /// Ends a case: the ghost still cannot act, and schema-isolated tenants go
    /// back to the pooled model (or, if deleted, lose their partition), so
    /// partitions do not accumulate over thousands of cases.
    async fn finish(&self, superuser: &tokio_postgres::Client) -> Result<(), String> {
        let mut s = self
            .db
            .tenant(ctx(self.m.ghost))
            .await
            .map_err(|e| e.to_string())?;
        match s.list_resources(&ResourceQuery::default()).await {
            Err(DbError::NotFound(_)) => {}
            other => {
                return Err(format!(
                    "a never-created tenant listed {:?}",
                    other.map(|p| listing_of(p.items))
                ))
            }
        }
        drop(s);
        for t in self.m.tenants.iter().filter(|t| t.schema) {
            if t.status != St::Deleted {
                let mut admin = self.db.admin("model").await.map_err(|e| e.to_string())?;
                admin
                    .set_isolation(t.id, Isolation::Shared)
                    .await
                    .map_err(|e| format!("moving {} back to pooled: {e:?}", t.id))?;
                admin.commit().await.map_err(|e| e.to_string())?;
            } else {
                // Cleanup only (not part of what is tested): a deleted tenant
                // cannot change isolation, so drop its partition as superuser.
                let schema = format!("tenant_{}", t.id.as_uuid().simple());
                superuser
                    .batch_execute(&format!(
                        "BEGIN;
                         DELETE FROM tenantry.resources WHERE tenant_id = '{id}';
                         ALTER TABLE tenantry.resources DETACH PARTITION {schema}.resources;
                         DROP SCHEMA {schema} CASCADE;
                         COMMIT;",
                        id = t.id
                    ))
                    .await
                    .map_err(|e| format!("dropping {schema}: {e}"))?;
            }
        }
        Ok(())
    }
}

fn cases() -> u32 {
    match std::env::var("TENANTRY_MODEL_CASES") {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("TENANTRY_MODEL_CASES must be a number, got {v:?}")),
        Err(_) => DEFAULT_CASES,
    }
}

#[test]
fn random_operation_sequences_match_the_isolation_model_after_every_step() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let tdb = rt.block_on(TestDatabase::new());
    // Even cases use named prepared statements, odd ones unnamed statements
    // (the pgbouncer mode): both must keep every transaction in its tenant.
    let pools = [
        tdb.database_with(StatementMode::Prepared, 10),
        tdb.database_with(StatementMode::Unnamed, 10),
    ];
    let superuser = rt.block_on(tdb.superuser_client());

    let mut config = ProptestConfig::with_cases(cases());
    config.failure_persistence = None;
    config.max_shrink_iters = 4096;
    let mut runner = TestRunner::new(config);

    let started = Instant::now();
    let sequences = Cell::new(0u64);
    let steps = Cell::new(0u64);
    let skipped = Cell::new(0u64);
    let check_time = Cell::new(std::time::Duration::ZERO);
    let foreign: RefCell<Option<ResourceId>> = RefCell::new(None);
    let stats: RefCell<BTreeMap<String, u64>> = RefCell::new(BTreeMap::new());

    let result = runner.run(&sequence(), |ops| {
        rt.block_on(async {
            let mut case = Case {
                db: &pools[(sequences.get() % 2) as usize],
                stats: &stats,
                m: Model::new(*foreign.borrow()),
                trace: Vec::new(),
            };
            let mut failure = None;
            for (i, op) in ops.iter().enumerate() {
                let before = case.trace.len();
                match case.step(op).await {
                    Ok(true) => {
                        steps.set(steps.get() + 1);
                        let t0 = Instant::now();
                        let checked = case.check(op.extra()).await;
                        check_time.set(check_time.get() + t0.elapsed());
                        if let Err(e) = checked {
                            failure = Some(format!("after step {i} ({op:?}): {e}"));
                        }
                    }
                    Ok(false) => {
                        skipped.set(skipped.get() + 1);
                        case.note(format!("(skipped {op:?})"));
                    }
                    Err(e) => failure = Some(format!("step {i} ({op:?}): {e}")),
                }
                if case.trace.len() > before {
                    let line = case.trace.pop().unwrap();
                    case.trace.push(format!("#{i} {line}"));
                }
                if failure.is_some() {
                    break;
                }
            }
            if failure.is_none() {
                let end = match case.check(ALL).await {
                    Ok(()) => case.finish(&superuser).await,
                    Err(e) => Err(e),
                };
                if let Err(e) = end {
                    failure = Some(format!("end of case: {e}"));
                }
            }
            if std::env::var("TENANTRY_MODEL_TRACE").is_ok() {
                eprintln!("case {}:\n  {}", sequences.get(), case.trace.join("\n  "));
            }
            sequences.set(sequences.get() + 1);
            if sequences.get() % 250 == 0 {
                eprintln!(
                    "model test: {} sequences, {} steps, {:.0} s",
                    sequences.get(),
                    steps.get(),
                    started.elapsed().as_secs_f64()
                );
            }
            if let Some(r) = case.m.resources.last() {
                *foreign.borrow_mut() = Some(r.id);
            }
            match failure {
                None => Ok(()),
                Some(f) => Err(TestCaseError::fail(format!(
                    "{f}\ntrace:\n  {}",
                    case.trace.join("\n  ")
                ))),
            }
        })
    });

    eprintln!(
        "model test: {} cases requested, {} sequences run (with shrinking), {} steps applied and checked, {} skipped, {:.1} s",
        cases(),
        sequences.get(),
        steps.get(),
        skipped.get(),
        started.elapsed().as_secs_f64()
    );
    eprintln!(
        "model test: {:.1} s of it in the after-step checks; outcomes the model predicted (and tenantry matched until any failure):",
        check_time.get().as_secs_f64()
    );
    for (what, n) in stats.borrow().iter() {
        eprintln!("  {n:>8}  {what}");
    }
    match result {
        Ok(()) => {}
        Err(TestError::Fail(reason, ops)) => {
            let ops: Vec<String> = ops.iter().map(|op| format!("{op:?}")).collect();
            panic!(
                "tenantry and the model disagree: {reason}\nminimal ops (tN, rN, roleN, kN: \
                 the N-th created, modulo how many exist; the trace shows what each resolved to):\n  {}",
                ops.join("\n  ")
            )
        }
        Err(TestError::Abort(reason)) => panic!("model test aborted: {reason}"),
    }
}

/// Found by this model: `key_permissions` of a key outside the caller's
/// subtree (or of no key at all) panicked on the SQL function's NULL instead of
/// answering not found.
#[tokio::test]
async fn key_permissions_of_a_key_outside_the_subtree_is_not_found_like_a_missing_key() {
    let tdb = TestDatabase::new().await;
    let db = tdb.database();
    let mut admin = db.admin("model").await.unwrap();
    let a = admin
        .create_tenant(&NewTenant {
            name: "a".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .tenant_id;
    let b = admin
        .create_tenant(&NewTenant {
            name: "b".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .tenant_id;
    admin.commit().await.unwrap();
    let mut s = db.tenant(ctx(b)).await.unwrap();
    let b_key = s.create_api_key(&NewKeyOptions::default()).await.unwrap();
    assert_eq!(
        s.key_permissions(b_key.info.key_id).await.unwrap().len(),
        PERMS.len()
    );
    s.commit().await.unwrap();

    let mut s = db.tenant(ctx(a)).await.unwrap();
    let foreign = s.key_permissions(b_key.info.key_id).await;
    assert!(matches!(foreign, Err(DbError::NotFound(_))), "{foreign:?}");
    drop(s);
    let mut s = db.tenant(ctx(a)).await.unwrap();
    let missing = s
        .key_permissions(KeyId::from_uuid(uuid::Uuid::new_v4()))
        .await;
    assert!(matches!(missing, Err(DbError::NotFound(_))), "{missing:?}");
}
