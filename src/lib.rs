//! Tollgate: an inline metering gateway for LLM APIs.
//!
//! Modules form layers; a module never imports one above it (see
//! `ARCHITECTURE.md`, "Layers"):
//!
//! 1. foundations: `money`, `clock`, `keys`, `domain`, `config`, `conn`, `cores`, `bound`, `tasks`,
//!    `singleflight`, `lookup`, `http_body`, `meter`, `pricing`, `metrics`,
//!    `throttle`;
//! 2. storage and state of money: `store`, `error`, `counters`, `corrections`,
//!    `accounts`,
//!    `ledger`, `providers`;
//! 3. request-path services: `invalidate`, `auth`, `policy`;
//! 4. `state` (everything a request may touch);
//! 5. routes: `proxy`, `admin`, `dashboard`, `ops`, `openapi`;
//! 6. `router`, `app` (serve, shutdown), `cli`.

pub mod accounts;
pub mod admin;
pub mod app;
pub mod auth;
pub mod bound;
pub mod cli;
pub mod clock;
pub mod config;
pub mod conn;
pub mod cores;
pub mod corrections;
pub mod counters;
pub mod dashboard;
pub mod domain;
pub mod email;
pub mod error;
#[cfg(test)]
#[allow(unsafe_code)] // A counting allocator, for tests only.
mod fuzz;
pub mod http_body;
pub mod invalidate;
pub mod keys;
pub mod ledger;
pub mod lookup;
pub mod meter;
pub mod metrics;
pub mod money;
pub mod openapi;
pub mod ops;
pub mod policy;
pub mod pricing;
pub mod providers;
pub mod proxy;
pub mod router;
pub mod singleflight;
pub mod state;
pub mod store;
pub mod tags;
pub mod tasks;
pub mod throttle;
pub mod webhooks;
