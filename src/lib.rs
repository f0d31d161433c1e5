//! Tollgate: an inline metering gateway for LLM APIs.
//!
//! Layout, in the order a request meets it (see `ARCHITECTURE.md`):
//! `app` (state, serve, shutdown) → `router` → `proxy` (authenticate, read,
//! authorize, admit, forward, meter, settle) with `auth`, `counters`,
//! `providers`, `meter`, `pricing` and `money`; `ledger` writes rows to the
//! `store` off the request path; `admin` is the management API and `ops`
//! the health and metrics routes. `config` turns TOML and environment into
//! a validated [`config::Config`].

pub mod accounts;
pub mod admin;
pub mod app;
pub mod auth;
pub mod cli;
pub mod config;
pub mod counters;
pub mod dashboard;
pub mod error;
pub mod http_body;
pub mod invalidate;
pub mod keys;
pub mod ledger;
pub mod meter;
pub mod metrics;
pub mod money;
pub mod ops;
pub mod policy;
pub mod pricing;
pub mod providers;
pub mod proxy;
pub mod router;
pub mod singleflight;
pub mod store;
