//! A case under test and its checks: after every step each tenant's visible
//! resources, tree, roles and keys must be what the model says, and at the end
//! of a case its leftovers are cleaned up.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};

use tenantry_db::{
    Database, DbError, Isolation, OwnerFilter, ResourceId, ResourceQuery, RoleId, TenantContext,
    TenantId,
};

use crate::ops::{Extra, Filter, St};
use crate::state::{listing_of, perm_name, MTenant, Model, Outcome};

pub struct Case<'a> {
    pub db: &'a Database,
    pub stats: &'a RefCell<BTreeMap<String, u64>>,
    pub m: Model,
    pub trace: Vec<String>,
}

impl Case<'_> {
    pub fn count(&self, key: String) {
        *self.stats.borrow_mut().entry(key).or_default() += 1;
    }

    /// Compares an outcome with the model's and counts it for the summary.
    pub fn expect(&mut self, expected: &Outcome, got: &Outcome, what: &str) -> Result<(), String> {
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

pub fn ctx(id: TenantId) -> TenantContext {
    TenantContext::new(id).with_actor("model")
}

impl Case<'_> {
    pub fn note(&mut self, line: String) {
        self.trace.push(line);
    }

    /// After every step: what every tenant sees must be what the model says.
    pub async fn check(&self, extra: Extra) -> Result<(), String> {
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
                let got = got.map(|i| {
                    (
                        i.tenant_id,
                        i.tenant_status.as_str().to_owned(),
                        i.permissions,
                    )
                });
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
    pub async fn finish(&self, superuser: &tokio_postgres::Client) -> Result<(), String> {
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
                // cannot change isolation, so drop its schema (and the table
                // in it that inherits the pooled one) as superuser.
                let schema: String = superuser
                    .query_one(
                        "SELECT schema_name FROM tenantry.tenants WHERE tenant_id = $1",
                        &[t.id.as_uuid()],
                    )
                    .await
                    .map_err(|e| e.to_string())?
                    .get(0);
                let dropped = superuser
                    .batch_execute(&format!(
                        "BEGIN;
                         DELETE FROM tenantry.resources WHERE tenant_id = '{id}';
                         DROP SCHEMA {schema} CASCADE;
                         COMMIT;",
                        id = t.id
                    ))
                    .await
                    .map_err(|e| format!("dropping {schema}: {e:?}"));
                if dropped.is_err() {
                    // The next case reuses this connection: not in an aborted transaction.
                    let _ = superuser.batch_execute("ROLLBACK").await;
                }
                dropped?;
            }
        }
        Ok(())
    }
}
