//! tenantry-api: the HTTP API over tenant-scoped transactions.
//!
//! A request flows auth → tenant scope → SQL → response: the [`auth`]
//! extractors turn a bearer token into a [`auth::TenantCaller`] (from
//! `tenantry-axum`, the crate applications build on too) or
//! [`auth::AdminCaller`], the only holders of a way into the database;
//! [`routes`] hold one module per area; [`error`] maps everything to
//! `application/problem+json` (the type is `tenantry-axum`'s). [`Application::build`] (in [`startup`]) wires
//! it up from [`config::Settings`] and a [`tenantry_db::Database`], and can
//! bind port 0 so tests run the real server; [`AppState`] (in [`state`]) is
//! what every request shares.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod auth;
pub mod config;
pub mod console;
pub mod error;
pub mod openapi;
pub mod patterns;
pub mod routes;
pub mod startup;
pub mod state;
pub mod telemetry;

pub use startup::{router, Application};
pub use state::AppState;
pub use tenantry_axum::{extract, request_log};
