/*!
Wire types shared by the Cohort server and its clients.

# Brief overview
JSON control messages and the binary vector frame that travel over HTTPS. The crate holds no
logic beyond parsing input into validated types at the boundary, so both sides agree on one
definition of every message and a version bump is visible in one place.
*/
#![forbid(unsafe_code)]
#![deny(missing_docs)]

/// The HTTP API version this build speaks; it prefixes every route (`/v1/...`).
pub const API_VERSION: &str = "v1";
