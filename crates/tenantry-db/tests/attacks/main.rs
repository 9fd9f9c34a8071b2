//! Attack suite through raw SQL: every door of issue 5 tried as the server's login role (`tenantry_server`, then `SET ROLE tenantry_app`), never as a superuser; each case states what the attacker gets (nothing) and that the answer carries no existence oracle.
//!
//! One module per door, grouped as in the catalogue of `docs/security.md` (which
//! lists the side channels of `leaks` under Context); `helpers` holds the
//! sessions, the failure comparisons and the two-tenant world they share.

#[path = "../common/mod.rs"]
mod common;

mod adopted;
mod adopted_tiers;
mod context;
mod context_keys;
mod explain;
mod forging;
mod grants;
mod helpers;
mod hierarchy;
mod keys_and_roles;
mod leaks;
mod objects;
mod oracle;
mod people;
mod schemas;
mod session;
mod shared_state;
mod sharing;
mod tiers;
mod usage;
mod writes;
