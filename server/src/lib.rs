/*!
The Cohort aggregation server.

# Brief overview
An HTTPS service (axum, tokio, rustls) that runs federations, schedules rounds, aggregates
masked updates and keeps the durable privacy ledger. It deliberately does not link libtorch:
a hospital's IT deploys a small binary, not a Python environment.
*/
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod aggregate;
pub mod domain;
pub mod ledger;
pub mod sampling;
pub mod scheduler;
pub mod storage;
pub mod strategy;
