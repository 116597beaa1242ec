/*!
Wire types shared by the Cohort server and its clients.

# Brief overview
JSON control messages ([`messages`]), the binary vector frame ([`frame`]) and RFC 9457 problem
documents ([`problem`]) that travel over HTTPS. Identifiers and privacy amounts are newtypes
parsed at the boundary ([`FederationId`], [`RoundId`], [`Epsilon`]), so a value of these types
is always valid. The crate holds no logic beyond that, so both sides agree on one definition of
every message and a version bump is visible in one place.

```
use cohort_protocol::frame::{encode_f32, FrameView};

let bytes = encode_f32(&[0.5, -1.25]);
let frame = FrameView::parse(&bytes).unwrap();
assert_eq!(frame.len(), 2);
assert_eq!(frame.first_non_finite(), None);
```
*/
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod budgets;
pub mod epsilon;
pub mod evaluation;
pub mod frame;
pub mod ids;
pub mod messages;
pub mod problem;
pub mod schema;
pub mod secagg;
pub mod training;

pub use epsilon::Epsilon;
pub use ids::{ClientId, FederationId, InvalidId, RoundId};
pub use problem::Problem;

/// The HTTP API version this build speaks; it prefixes every route (`/v1/...`).
pub const API_VERSION: &str = "v1";
