/*!
The Cohort client: local training on libtorch.

# Brief overview
Everything that runs inside a participating site: tch models, datasets and the DP-SGD engine.
This is the only crate that links libtorch.
*/
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod benchmark;
pub mod data;
pub mod dpsgd;
pub mod ledger;
pub mod model;
pub mod participant;
pub mod runtime;
pub mod smoke;
pub mod weights;
