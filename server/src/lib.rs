/*!
The Cohort aggregation server.

# Brief overview
An HTTPS service (axum, tokio, rustls) that runs federations, schedules rounds, aggregates
masked updates and keeps the durable privacy ledger. It deliberately does not link libtorch:
a hospital's IT deploys a small binary, not a Python environment.

- [`http::app`] is the whole API as a router; [`serve::Server`] puts it behind HTTPS
  ([`tls`]) with the round scheduler.
- [`service::Service`] holds the operations the handlers call.
- [`pki`] and [`auth`] make and check certificates and bearer tokens.
*/
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod aggregate;
pub mod auth;
#[cfg(feature = "bench")]
pub mod bench;
pub mod cli;
pub mod config;
pub mod conn;
pub mod domain;
pub mod http;
pub mod ledger;
pub mod metrics;
pub mod model;
pub mod pki;
pub mod ratelimit;
pub mod sampling;
pub mod scheduler;
pub mod secure_plan;
pub mod serve;
pub mod service;
pub mod storage;
pub mod strategy;
pub mod tls;
