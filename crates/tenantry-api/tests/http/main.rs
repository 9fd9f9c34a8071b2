//! Integration tests of the HTTP API: a real server on port 0 over a fresh test
//! database per test, driven through HTTP only. Each allowed case sits beside
//! its denied cases.

mod access;
mod admin;
mod attacks;
mod audit_usage;
mod contention;
mod context_keys;
mod cors;
mod credentials;
mod docs;
mod errors;
mod helpers;
mod hierarchy;
mod idempotency;
mod inputs;
mod keys;
mod limits;
mod network_cut;
mod openapi_conformance;
mod people;
mod readme;
mod request_ids;
mod request_log;
mod resources;
#[path = "../common/server.rs"]
mod server;
mod shares;
mod system;
mod usage_history;
