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
//!
//! Modules: `ops` (operations and their generation), `state` (the model),
//! `apply` (one op applied to both sides), `checks` (a case and the checks
//! after each step), `run` (the proptest entry) and `regressions`.

mod apply;
mod checks;
mod ops;
mod regressions;
mod run;
mod state;

/// Cases of a normal `cargo test` run.
const DEFAULT_CASES: u32 = 100;
/// Tenants per case at most (later creations are skipped), keeping checks cheap.
const MAX_TENANTS: usize = 6;
/// The permission catalogue (migration 0004), in name order.
const PERMS: [&str; 15] = [
    "audit.read",
    "keys.read",
    "keys.write",
    "members.invite",
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
