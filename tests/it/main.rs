//! One integration test binary (it links once). Every test talks to real
//! things: the gateway on a socket, SQLite or Postgres, in-process counters
//! or Redis; only the model provider is a mock, speaking the wire formats.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
// Tests spawn mock servers and concurrent clients freely; the ban on bare
// `tokio::spawn` (clippy.toml) is for the gateway's own tasks.
#![allow(clippy::disallowed_methods)]

mod helpers;

mod admin_users;
mod concurrency;
mod counters;
mod counters_corrections;
mod dashboard;
mod email;
mod faults_poison;
mod faults_postgres;
mod faults_processes;
mod faults_redis;
mod faults_shutdown;
mod fixtures;
mod hostile_edge;
mod hostile_members;
mod leases;
mod ledger_rollups;
mod openapi;
mod proxy_failures;
mod proxy_holds;
mod proxy_metering;
mod proxy_operations;
mod proxy_pricing;
mod proxy_refusals;
mod sdk;
mod tags;
mod teams_authorization;
mod teams_billing;
mod teams_invitations;
mod teams_limits;
mod teams_reports;
mod teams_validation;
mod usage_import;
mod webhooks;
