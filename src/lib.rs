/*!
The root package of Cohort: the `cohort` command line.

# Brief overview
This crate is glue. It parses arguments into validated settings and calls the library crates
(`cohort-privacy`, `cohort-protocol`, `cohort-server`, `cohort-client`), which hold the logic.
*/
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod audit_cmd;
pub mod bench;
pub mod budgets_cmd;
pub mod cli;
pub mod demo;
pub mod demo_cmd;
pub mod doctor;
pub mod evaluate_cmd;
pub mod format;
pub mod join_cmd;
pub mod privacy_cmd;
pub mod report;
pub mod sim;
pub mod train_cmd;
