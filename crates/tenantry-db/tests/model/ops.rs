//! Operations and their generation: references to the n-th tenant, resource,
//! role or key of a case, the ops a sequence is made of, and the proptest
//! strategies that generate them.

use std::fmt;

use proptest::prelude::*;
use proptest::strategy::Union;

use crate::{PERMS, UNKNOWN_PERM};

/// A tenant reference: the n-th tenant of the case (modulo how many exist) or
/// a tenant id that was never created.
#[derive(Clone, Copy)]
pub enum T {
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
pub enum R {
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
pub enum Ro {
    Known(u8),
    /// The n-th role of the tenant the op concerns (the actor, or a key's holder).
    Own(u8),
    Unseen,
}

/// A key reference: the n-th key created in the case, or an unknown id.
#[derive(Clone, Copy)]
pub enum K {
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
pub enum St {
    Active,
    Suspended,
    Deleted,
}

#[derive(Clone, Copy, Debug)]
pub enum Filter {
    All,
    Own,
    Descendants,
    Shared,
}

#[derive(Clone, Debug)]
pub enum Op {
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
pub struct Extra {
    /// Verify every key (revocation, tenant status, permissions).
    pub keys: bool,
    /// Every tenant's descendants with their depth.
    pub tree: bool,
    /// Every tenant's roles and their permissions.
    pub roles: bool,
}

pub const ALL: Extra = Extra {
    keys: true,
    tree: true,
    roles: true,
};

impl Op {
    pub fn extra(&self) -> Extra {
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
pub fn sequence() -> impl Strategy<Value = Vec<Op>> {
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
