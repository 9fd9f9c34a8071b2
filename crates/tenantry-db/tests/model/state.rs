//! The model: a plain in-memory account of tenants, resources, shares, roles
//! and keys, which says what each tenant may see and do and what each
//! operation must answer.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use tenantry_db::{Access, DbError, KeyId, ResourceId, RoleId, TenantId};

use crate::ops::{Filter, Ro, St, K, R, T};
use crate::PERMS;

/// What an operation answered, in the library's terms.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    NotFound,
    Forbidden,
    /// The acting tenant is suspended (the API's 403 tenant_suspended).
    Suspended,
    Conflict,
    Invalid,
    /// Unavailable or internal: never expected.
    Other(String),
}

pub fn outcome(e: &DbError) -> Outcome {
    match e {
        DbError::NotFound(_) => Outcome::NotFound,
        DbError::Forbidden(_) => Outcome::Forbidden,
        DbError::TenantSuspended(_) => Outcome::Suspended,
        DbError::Conflict(_) => Outcome::Conflict,
        DbError::Invalid { .. } => Outcome::Invalid,
        other => Outcome::Other(format!("{other:?}")),
    }
}

pub fn of<X>(r: &Result<X, DbError>) -> Outcome {
    match r {
        Ok(_) => Outcome::Ok,
        Err(e) => outcome(e),
    }
}

#[derive(Debug)]
pub struct MTenant {
    pub id: TenantId,
    pub parent: Option<usize>,
    pub status: St,
    pub schema: bool,
}

#[derive(Debug)]
pub struct MResource {
    pub id: ResourceId,
    pub owner: usize,
    pub name: String,
    /// The tenants it is shared with, each with the tenant that made the
    /// share (the owner or an ancestor of it then).
    pub shared: BTreeMap<usize, usize>,
    pub live: bool,
}

#[derive(Debug)]
pub struct MRole {
    pub id: RoleId,
    pub tenant: usize,
    pub name: String,
    pub perms: BTreeSet<u8>,
}

#[derive(Debug)]
pub struct MKey {
    pub id: KeyId,
    pub secret: String,
    pub tenant: usize,
    pub role: Option<usize>,
    pub revoked: bool,
}

/// A resolved tenant: one of the case's tenants, or the never-created ghost.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Who {
    Tenant(usize),
    Ghost,
}

/// A resolved resource: one of the case's, or an id it must never see.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Res {
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

pub struct Model {
    pub tenants: Vec<MTenant>,
    pub resources: Vec<MResource>,
    pub roles: Vec<MRole>,
    pub keys: Vec<MKey>,
    pub ghost: TenantId,
    pub unseen_resource: ResourceId,
    /// A resource of an earlier case (still existing or not): never visible here.
    pub foreign_resource: ResourceId,
    unseen_role: RoleId,
    unseen_key: KeyId,
    counter: usize,
}

impl Model {
    pub fn new(foreign_resource: Option<ResourceId>) -> Self {
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

    pub fn next(&mut self, prefix: &str) -> String {
        self.counter += 1;
        format!("{prefix}{}", self.counter)
    }

    pub fn who(&self, t: T) -> Option<Who> {
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

    pub fn tid(&self, w: Who) -> TenantId {
        match w {
            Who::Tenant(i) => self.tenants[i].id,
            Who::Ghost => self.ghost,
        }
    }

    /// Resolves a resource reference for an op of `actor`.
    pub fn res(&self, r: R, actor: Who) -> Res {
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

    pub fn rid(&self, r: Res) -> ResourceId {
        match r {
            Res::Known(i) => self.resources[i].id,
            Res::Unseen => self.unseen_resource,
            Res::Foreign => self.foreign_resource,
        }
    }

    /// Resolves a role reference; `Own` picks among the roles of `owner`.
    pub fn role(&self, r: Ro, owner: Option<usize>) -> Option<usize> {
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

    pub fn role_id(&self, r: Option<usize>) -> RoleId {
        r.map_or(self.unseen_role, |i| self.roles[i].id)
    }

    /// Resolves a key reference; `Mine` picks among keys in `actor`'s subtree.
    pub fn key(&self, k: K, actor: Who) -> Option<usize> {
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

    pub fn key_id(&self, k: Option<usize>) -> KeyId {
        k.map_or(self.unseen_key, |i| self.keys[i].id)
    }

    /// Descendants of `t` (any status) with their depth, from the parent links.
    pub fn descendants(&self, t: usize) -> BTreeMap<usize, i32> {
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
    pub fn visible(&self, t: usize) -> BTreeSet<usize> {
        let mut v: BTreeSet<usize> = self
            .descendants(t)
            .into_keys()
            .filter(|d| self.tenants[*d].status != St::Deleted)
            .collect();
        v.insert(t);
        v
    }

    /// Can a transaction act for this tenant at all? Ghost: not found; deleted: forbidden.
    pub fn context(&self, w: Who) -> Result<usize, Outcome> {
        match w {
            Who::Ghost => Err(Outcome::NotFound),
            Who::Tenant(i) if self.tenants[i].status == St::Deleted => Err(Outcome::Forbidden),
            Who::Tenant(i) => Ok(i),
        }
    }

    /// Resources `t` may write (own and live descendants').
    pub fn writable(&self, t: usize, r: Res) -> bool {
        match r {
            Res::Known(i) => {
                let res = &self.resources[i];
                res.live && self.visible(t).contains(&res.owner)
            }
            _ => false,
        }
    }

    pub fn access(&self, t: usize, r: usize) -> Option<Access> {
        let res = &self.resources[r];
        if !res.live {
            return None;
        }
        if res.owner == t {
            Some(Access::Own)
        } else if self.visible(t).contains(&res.owner) {
            Some(Access::Descendant)
        } else if res.shared.contains_key(&t) {
            Some(Access::Shared)
        } else {
            None
        }
    }

    /// What a listing with `filter` must return for `t`: id -> (owner, access, name).
    pub fn listing(&self, t: usize, filter: Filter) -> Listing {
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
                Filter::Shared => r.owner != t && r.shared.contains_key(&t),
            };
            if include {
                out.insert(r.id, (self.tenants[r.owner].id, access, r.name.clone()));
            }
        }
        out
    }

    pub fn key_perms(&self, k: usize) -> Vec<String> {
        match self.keys[k].role {
            Some(role) => self.roles[role]
                .perms
                .iter()
                .map(|p| PERMS[*p as usize].to_owned())
                .collect(),
            None => PERMS.iter().map(|p| (*p).to_owned()).collect(),
        }
    }

    pub fn status_str(&self, t: usize) -> &'static str {
        match self.tenants[t].status {
            St::Active => "active",
            St::Suspended => "suspended",
            St::Deleted => "deleted",
        }
    }
}

type Listing = BTreeMap<ResourceId, (TenantId, Access, String)>;

pub fn listing_of(items: Vec<tenantry_db::Resource>) -> Listing {
    items
        .into_iter()
        .map(|r| (r.id, (r.tenant_id, r.access, r.name)))
        .collect()
}

/// `role3` / `k0` for a resolved reference, `unseen-role` / `unseen-k` for an unknown id.
pub fn label(prefix: &str, i: Option<usize>) -> String {
    match i {
        Some(i) => format!("{prefix}{i}"),
        None => format!("unseen-{prefix}"),
    }
}

pub fn perm_name(p: u8) -> &'static str {
    PERMS.get(p as usize).copied().unwrap_or("nope.unknown")
}
