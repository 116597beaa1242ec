/*!
The privacy mathematics and cryptography of Cohort.

# Brief overview
This crate owns everything whose correctness is a privacy claim: the accountants that turn
training settings into (ε, δ), the noise and quantisation arithmetic, secure aggregation, and
the statistics of empirical privacy audits that check an accountant's claim against a training
run.
It is pure — no I/O, no async runtime, no libtorch — so that the server, the client and the
simulator run the very same code and so that every function can be tested in isolation.
*/
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod accounting;
pub mod audit;
pub mod budget;
pub mod integer_release;
pub mod quantize;
#[cfg(feature = "scalar-release")]
pub mod release;
pub mod rng;
pub mod secagg;

pub mod noise;

pub use budget::EpsDelta;
