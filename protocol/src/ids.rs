//! Identifiers parsed at the boundary: a value of these types is always well formed, so
//! handlers, storage and logs never see an empty, oversized or path-like name.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Why an identifier was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum InvalidId {
    /// A name was empty, longer than [`MAX_NAME_LEN`] or used characters outside `[a-z0-9_-]`.
    Name(String),
    /// A round number was zero or not a number.
    Round(String),
}

impl fmt::Display for InvalidId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Name(n) => write!(
                f,
                "invalid name {n:?}: use 1 to {MAX_NAME_LEN} characters from a-z, 0-9, '-' and '_', starting with a letter or digit"
            ),
            Self::Round(r) => write!(f, "invalid round id {r:?}: rounds are numbered from 1"),
        }
    }
}

impl std::error::Error for InvalidId {}

/// The longest federation or client name accepted.
pub const MAX_NAME_LEN: usize = 64;

fn check_name(s: &str) -> Result<(), InvalidId> {
    let ok = !s.is_empty()
        && s.len() <= MAX_NAME_LEN
        && !s.starts_with('-')
        && !s.starts_with('_')
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(InvalidId::Name(s.chars().take(80).collect()))
    }
}

macro_rules! name_newtype {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Validates a name: 1–64 characters of `[a-z0-9_-]`, starting with a letter or digit.
            pub fn parse(s: &str) -> Result<Self, InvalidId> {
                check_name(s)?;
                Ok(Self(s.to_owned()))
            }

            /// The validated name.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = InvalidId;
            fn try_from(s: String) -> Result<Self, InvalidId> {
                check_name(&s)?;
                Ok(Self(s))
            }
        }

        impl From<$name> for String {
            fn from(v: $name) -> String {
                v.0
            }
        }

        impl FromStr for $name {
            type Err = InvalidId;
            fn from_str(s: &str) -> Result<Self, InvalidId> {
                Self::parse(s)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

name_newtype!(
    /// The name of a federation, unique on a server; it appears in URLs.
    FederationId
);
name_newtype!(
    /// The name of a client (a hospital or device) within a federation; it is also the common
    /// name of the client's certificate.
    ClientId
);

/// A round of one federation, numbered from 1 in the order rounds were opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "u64", into = "u64")]
pub struct RoundId(u64);

impl RoundId {
    /// The first round of a federation.
    pub const FIRST: Self = Self(1);

    /// Validates a round number (≥ 1).
    pub fn new(n: u64) -> Result<Self, InvalidId> {
        if n == 0 {
            Err(InvalidId::Round(n.to_string()))
        } else {
            Ok(Self(n))
        }
    }

    /// The round number.
    pub fn get(self) -> u64 {
        self.0
    }

    /// The round after this one; `None` only if the counter would overflow.
    pub fn next(self) -> Option<Self> {
        self.0.checked_add(1).map(Self)
    }
}

impl TryFrom<u64> for RoundId {
    type Error = InvalidId;
    fn try_from(n: u64) -> Result<Self, InvalidId> {
        Self::new(n)
    }
}

impl From<RoundId> for u64 {
    fn from(r: RoundId) -> u64 {
        r.0
    }
}

impl FromStr for RoundId {
    type Err = InvalidId;
    fn from_str(s: &str) -> Result<Self, InvalidId> {
        s.parse::<u64>()
            .map_err(|_| InvalidId::Round(s.chars().take(40).collect()))
            .and_then(Self::new)
    }
}

impl fmt::Display for RoundId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_accept_slugs_and_reject_the_rest() {
        assert!(FederationId::parse("mnist-2026").is_ok());
        for bad in ["", "-x", "_x", "A", "a/b", "a b", "é", &"x".repeat(65)] {
            assert!(FederationId::parse(bad).is_err(), "{bad:?}");
        }
        let json: Result<ClientId, _> = serde_json::from_str("\"../etc\"");
        assert!(json.is_err());
    }

    #[test]
    fn rounds_start_at_one() {
        assert!(RoundId::new(0).is_err());
        assert_eq!("7".parse::<RoundId>().map(RoundId::get), Ok(7));
        assert!("x".parse::<RoundId>().is_err());
        assert!(serde_json::from_str::<RoundId>("0").is_err());
    }
}
