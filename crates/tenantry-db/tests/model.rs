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
    NewTenant, OwnerFilter, ResourceId, ResourceQuery, ResourceUpdate, RoleId, TenantContext,
    TenantId, TenantStatus,
};

/// Cases of a normal `cargo test` run.
const DEFAULT_CASES: u32 = 200;
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
    Ghost,
}

/// A resource reference: the n-th resource created in the case (deleted ones
/// included), an id nobody ever had, or a resource of an earlier case.
#[derive(Clone, Copy)]
enum R {
    Known(u8),
    Unseen,
    Foreign,
}

/// A role reference: the n-th role created in the case (any tenant's), or an unknown id.
#[derive(Clone, Copy)]
enum Ro {
    Known(u8),
    Unseen,
}

/// A key reference: the n-th key created in the case, or an unknown id.
#[derive(Clone, Copy)]
enum K {
    Known(u8),
    Unseen,
}

impl fmt::Debug for T {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            T::Slot(n) => write!(f, "t{n}"),
            T::Ghost => write!(f, "ghost"),
        }
    }
}
impl fmt::Debug for R {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            R::Known(n) => write!(f, "r{n}"),
            R::Unseen => write!(f, "unseen"),
            R::Foreign => write!(f, "foreign"),
        }
    }
}
impl fmt::Debug for Ro {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ro::Known(n) => write!(f, "role{n}"),
            Ro::Unseen => write!(f, "unseen-role"),
        }
    }
}
impl fmt::Debug for K {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            K::Known(n) => write!(f, "k{n}"),
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

fn t_ref() -> impl Strategy<Value = T> {
    prop_oneof![12 => (0u8..8).prop_map(T::Slot), 1 => Just(T::Ghost)]
}

fn r_ref() -> impl Strategy<Value = R> {
    prop_oneof![14 => (0u8..16).prop_map(R::Known), 1 => Just(R::Unseen), 1 => Just(R::Foreign)]
}

fn role_ref() -> impl Strategy<Value = Ro> {
    prop_oneof![10 => (0u8..8).prop_map(Ro::Known), 1 => Just(Ro::Unseen)]
}

fn key_ref() -> impl Strategy<Value = K> {
    prop_oneof![10 => (0u8..8).prop_map(K::Known), 1 => Just(K::Unseen)]
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
            (t_ref(), r_ref(), proptest::bool::weighted(0.9))
                .prop_map(|(tenant, res, valid)| Op::UpdateResource { tenant, res, valid })
                .boxed(),
        ),
        (
            3,
            (t_ref(), r_ref())
                .prop_map(|(tenant, res)| Op::DeleteResource { tenant, res })
                .boxed(),
        ),
        (
            10,
            (t_ref(), r_ref(), t_ref())
                .prop_map(|(tenant, res, target)| Op::Share {
                    tenant,
                    res,
                    target,
                })
                .boxed(),
        ),
        (
            4,
            (t_ref(), r_ref(), t_ref())
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
            (t_ref(), role_ref(), perm.clone())
                .prop_map(|(tenant, role, perm)| Op::Grant { tenant, role, perm })
                .boxed(),
        ),
        (
            2,
            (t_ref(), role_ref(), perm)
                .prop_map(|(tenant, role, perm)| Op::Revoke { tenant, role, perm })
                .boxed(),
        ),
        (
            4,
            (
                t_ref(),
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
            (t_ref(), key_ref())
                .prop_map(|(tenant, key)| Op::RevokeKey { tenant, key })
                .boxed(),
        ),
        (
            2,
            (t_ref(), key_ref())
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

impl Op {
    /// Can this op change what a key verifies as (revocation, tenant status,
    /// role permissions)? Keys are verified after these (verification costs a
    /// constant-time hash compare in SQL), and at the end of every case.
    fn touches_keys(&self) -> bool {
        matches!(
            self,
            Op::SetStatus { .. }
                | Op::CreateRole { .. }
                | Op::Grant { .. }
                | Op::Revoke { .. }
                | Op::CreateKey { .. }
                | Op::RevokeKey { .. }
        )
    }
}

/// A case: a first root tenant, a few more tenants, then random operations.
fn sequence() -> impl Strategy<Value = Vec<Op>> {
    (
        proptest::collection::vec(create_tenant_op(), 1..4),
        proptest::collection::vec(op(), 1..24),
    )
        .prop_map(|(tenants, ops)| {
            let mut all = vec![Op::CreateTenant {
                parent: None,
                schema: false,
            }];
            all.extend(tenants);
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
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Who {
    Tenant(usize),
    Ghost,
}

/// A resolved resource: one of the case's, or an id it must never see.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Res {
    Known(usize),
    Unseen,
    Foreign,
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
            T::Slot(_) if self.tenants.is_empty() => None,
            T::Slot(n) => Some(Who::Tenant(n as usize % self.tenants.len())),
        }
    }

    fn tid(&self, w: Who) -> TenantId {
        match w {
            Who::Tenant(i) => self.tenants[i].id,
            Who::Ghost => self.ghost,
        }
    }

    fn res(&self, r: R) -> Res {
        match r {
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

    fn role(&self, r: Ro) -> Option<usize> {
        match r {
            Ro::Known(_) if self.roles.is_empty() => None,
            Ro::Known(n) => Some(n as usize % self.roles.len()),
            Ro::Unseen => None,
        }
    }

    fn role_id(&self, r: Option<usize>) -> RoleId {
        r.map_or(self.unseen_role, |i| self.roles[i].id)
    }

    fn key(&self, k: K) -> Option<usize> {
        match k {
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

fn perm_name(p: u8) -> &'static str {
    PERMS.get(p as usize).copied().unwrap_or("nope.unknown")
}

// ---------------------------------------------------------------------------
// Running a case
// ---------------------------------------------------------------------------

struct Case<'a> {
    db: &'a Database,
    m: Model,
    trace: Vec<String>,
}

fn expect(expected: &Outcome, got: &Outcome, what: &str) -> Result<(), String> {
    if expected == got {
        Ok(())
    } else {
        Err(format!(
            "{what}: model expects {expected:?}, tenantry answered {got:?}"
        ))
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
                expect(&expected, &of(&r), "create tenant")?;
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
                expect(&expected, &of(&r), "create child tenant")?;
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
                let mut admin = db.admin("model").await.map_err(|e| e.to_string())?;
                let r = admin
                    .set_parent(self.m.tid(w), parent.map(|p| self.m.tid(p)))
                    .await;
                let r = match r {
                    Ok(t) => admin.commit().await.map(|()| t),
                    Err(e) => Err(e),
                };
                self.note(format!("set parent of {w:?} to {parent:?}"));
                expect(&expected, &of(&r), "set parent")?;
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
                expect(&expected, &of(&r), "set status")?;
                if let (Ok(_), Who::Tenant(t)) = (r, w) {
                    self.m.tenants[t].status = status;
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
                expect(&expected, &of(&r), "set isolation")?;
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
                expect(&expected, &of(&r), "create resource")?;
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
                let r = self.m.res(res);
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
                expect(&expected, &of(&got), "update resource")?;
                if let (Ok(_), Res::Known(i)) = (got, r) {
                    self.m.resources[i].name = name;
                }
            }
            Op::DeleteResource { tenant, res } => {
                let Some(w) = self.m.who(tenant) else {
                    return Ok(false);
                };
                let r = self.m.res(res);
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
                expect(&expected, &of(&got), "delete resource")?;
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
                let r = self.m.res(res);
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
                expect(&expected, &of(&got), "share")?;
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
                let (Some(w), Some(to)) = (self.m.who(tenant), self.m.who(target)) else {
                    return Ok(false);
                };
                let r = self.m.res(res);
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
                expect(&expected, &of(&got), "unshare")?;
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
                expect(&expected, &of(&got), "create role")?;
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
                let role = self.m.role(role);
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
                    "{w:?} {} {} on role{role:?}",
                    if grant { "grants" } else { "revokes" },
                    perm_name(perm)
                ));
                expect(&expected, &of(&got), "grant/revoke permission")?;
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
                let role = role.map(|r| self.m.role(r));
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
                    "{w:?} creates k{} for {for_who:?} bound to {role:?}",
                    self.m.keys.len()
                ));
                expect(&expected, &of(&got), "create key")?;
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
                let k = self.m.key(key);
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
                self.note(format!("{w:?} revokes key {k:?}"));
                expect(&expected, &of(&got), "revoke key")?;
                if let (Ok(()), Some(k)) = (got, k) {
                    self.m.keys[k].revoked = true;
                }
            }
            Op::KeyPermissions { tenant, key } => {
                let Some(w) = self.m.who(tenant) else {
                    return Ok(false);
                };
                let k = self.m.key(key);
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
                self.note(format!("{w:?} reads the permissions of key {k:?}"));
                expect(&expected, &of(&got), "key permissions")?;
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
                let r = self.m.res(res);
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
    async fn check(&self, verify_keys: bool) -> Result<(), String> {
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
            .map(|(t, tenant)| self.check_tenant(t, tenant, &probes));
        let keys = async {
            if !verify_keys {
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
        s.commit().await.map_err(|e| e.to_string())?;
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
    let db = tdb.database_with(tenantry_db::StatementMode::Prepared, 10);
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

    let result = runner.run(&sequence(), |ops| {
        rt.block_on(async {
            let mut case = Case {
                db: &db,
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
                        let checked = case.check(op.touches_keys()).await;
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
                let end = match case.check(true).await {
                    Ok(()) => case.finish(&superuser).await,
                    Err(e) => Err(e),
                };
                if let Err(e) = end {
                    failure = Some(format!("end of case: {e}"));
                }
            }
            sequences.set(sequences.get() + 1);
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
    eprintln!("checks: {:?}", check_time.get());
    match result {
        Ok(()) => {}
        Err(TestError::Fail(reason, ops)) => {
            panic!("tenantry and the model disagree: {reason}\nminimal ops: {ops:#?}")
        }
        Err(TestError::Abort(reason)) => panic!("model test aborted: {reason}"),
    }
}
