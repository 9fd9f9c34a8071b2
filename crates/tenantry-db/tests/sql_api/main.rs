//! SQL API tests: the guide's functions called by their names from a plain SQL session as the server's login role (`tenantry_server`, then `SET ROLE`), and one attack per flaw listed in docs/architecture.md ("What the guide gets wrong"), each denied case beside the allowed one.
//!
//! One module per area of the guide; `helpers` holds the psql-like sessions and
//! the small query helpers they share.

#[path = "../common/mod.rs"]
mod common;

mod context;
mod helpers;
mod hierarchy;
mod invalidation;
mod keys;
mod limits;
mod names;
mod operator_audit;
mod privileges;
mod quotas;
mod resources;
mod roles;
mod schemas;
mod tables;
mod usage;
