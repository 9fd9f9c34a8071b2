//! Applying one operation to both sides: tenantry through the library, and the
//! model; each outcome is compared with the model's as it is applied.

use std::collections::{BTreeMap, BTreeSet};

use tenantry_db::{
    Access, Isolation, NewKeyOptions, NewResource, NewTenant, OwnerFilter, ResourceQuery,
    ResourceUpdate, TenantStatus,
};

use crate::checks::{ctx, Case};
use crate::ops::{Filter, Op, St, T};
use crate::state::{
    label, listing_of, of, outcome, perm_name, MKey, MResource, MRole, MTenant, Outcome, Res, Who,
};
use crate::{MAX_TENANTS, PERMS, UNKNOWN_PERM};

impl Case<'_> {
    /// Applies one op to both sides. `Ok(false)` when the op was skipped
    /// (it names something the case does not have yet).
    pub async fn step(&mut self, op: &Op) -> Result<bool, String> {
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
                    // The model acts as the operator, who is told the parent
                    // is deleted (a tenant's caller would get "not found").
                    Some(Who::Tenant(p)) if self.m.tenants[p].status == St::Deleted => {
                        Outcome::Conflict
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
                    Ok(p) if self.m.tenants[p].status == St::Suspended => Outcome::Suspended,
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
                            Outcome::Conflict
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
                    // The subtree's resources keep the shares whose maker
                    // still reads them: the owner, or an ancestor it kept.
                    let moved = self.m.descendants(t);
                    for i in 0..self.m.resources.len() {
                        let owner = self.m.resources[i].owner;
                        if owner != t && !moved.contains_key(&owner) {
                            continue;
                        }
                        let makers: Vec<usize> =
                            self.m.resources[i].shared.values().copied().collect();
                        let kept: BTreeSet<usize> = makers
                            .into_iter()
                            .filter(|&m| m == owner || self.m.descendants(m).contains_key(&owner))
                            .collect();
                        self.m.resources[i].shared.retain(|_, m| kept.contains(m));
                    }
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
                    // A deleted tenant is still there and can no longer
                    // change, as for every other change of it.
                    Who::Tenant(t) if self.m.tenants[t].status == St::Deleted => Outcome::Conflict,
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
                        data: serde_json::json!({"n": name}).into(),
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
                        shared: BTreeMap::new(),
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
                                // An ancestor of the owner reads it through the hierarchy already.
                                St::Active if self.m.descendants(x).contains_key(&owner) => {
                                    Outcome::Invalid
                                }
                                St::Active if self.m.resources[i].shared.contains_key(&x) => {
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
                    let maker = self.m.context(w).expect("a share made in a context");
                    self.m.resources[i].shared.insert(x, maker);
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
                        let c: Vec<usize> = self.m.resources[i].shared.keys().copied().collect();
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
                            Who::Tenant(x) if self.m.resources[i].shared.contains_key(&x) => {
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
}
