//! Identifiers and small scalar newtypes, each validated once at construction.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::ValidationError;

/// The longest name a federation or client may have; names appear in URLs and logs.
pub const MAX_NAME_LEN: usize = 64;

fn check_name(field: &'static str, raw: &str) -> Result<(), ValidationError> {
    let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_';
    if raw.is_empty() || raw.len() > MAX_NAME_LEN {
        return Err(ValidationError::new(
            field,
            format!(
                "must be 1 to {MAX_NAME_LEN} characters long, got {}",
                raw.len()
            ),
        ));
    }
    if !raw.chars().all(ok_char) {
        return Err(ValidationError::new(
            field,
            format!("may only contain a-z, 0-9, '-' and '_', got {raw:?}"),
        ));
    }
    if raw.starts_with('-') || raw.starts_with('_') {
        return Err(ValidationError::new(
            field,
            "must start with a letter or digit",
        ));
    }
    Ok(())
}

macro_rules! name_newtype {
    ($(#[$meta:meta])* $name:ident, $field:literal) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Parses a name: 1–64 characters of `a-z0-9-_`, not starting with `-` or `_`, so
            /// it is safe in URLs, file names and log lines without escaping.
            pub fn parse(raw: &str) -> Result<Self, ValidationError> {
                check_name($field, raw)?;
                Ok(Self(raw.to_owned()))
            }

            /// The name as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = ValidationError;
            fn try_from(raw: String) -> Result<Self, Self::Error> {
                check_name($field, &raw)?;
                Ok(Self(raw))
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> Self {
                value.0
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
    /// A federation's name, unique on this server (for example `mnist-demo`).
    FederationId,
    "federation id"
);
name_newtype!(
    /// A client's name, unique within its federation (for example `hospital-a`).
    ClientId,
    "client id"
);

/// A round's number within its federation: 1 for the first round, increasing by one.
///
/// Rounds are numbered per federation so that an upload naming round r can be checked against
/// the round in flight without a global lookup: anything else is late or replayed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "u64", into = "u64")]
pub struct RoundNumber(u64);

impl RoundNumber {
    /// The first round of every federation.
    pub const FIRST: Self = Self(1);

    /// Validates `n ≥ 1` (and small enough to store as a signed 64-bit integer).
    pub fn new(n: u64) -> Result<Self, ValidationError> {
        if n == 0 || n > i64::MAX as u64 {
            return Err(ValidationError::new(
                "round",
                format!("must be in 1..=2^63-1, got {n}"),
            ));
        }
        Ok(Self(n))
    }

    /// The number as an integer.
    pub fn get(self) -> u64 {
        self.0
    }

    /// The round after this one.
    pub fn next(self) -> Self {
        Self(self.0.saturating_add(1).min(i64::MAX as u64))
    }
}

impl TryFrom<u64> for RoundNumber {
    type Error = ValidationError;
    fn try_from(n: u64) -> Result<Self, Self::Error> {
        Self::new(n)
    }
}

impl From<RoundNumber> for u64 {
    fn from(value: RoundNumber) -> Self {
        value.0
    }
}

impl fmt::Display for RoundNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A model version's number within its federation: 0 is the initial weights, and each
/// completed round that changes the model commits the next number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "u64", into = "u64")]
pub struct VersionNumber(u64);

impl VersionNumber {
    /// The initial weights uploaded with the federation.
    pub const INITIAL: Self = Self(0);

    /// Validates that the number fits a signed 64-bit integer (the storage type).
    pub fn new(n: u64) -> Result<Self, ValidationError> {
        if n > i64::MAX as u64 {
            return Err(ValidationError::new("version", format!("too large: {n}")));
        }
        Ok(Self(n))
    }

    /// The number as an integer.
    pub fn get(self) -> u64 {
        self.0
    }

    /// The version after this one.
    pub fn next(self) -> Self {
        Self(self.0.saturating_add(1).min(i64::MAX as u64))
    }
}

impl TryFrom<u64> for VersionNumber {
    type Error = ValidationError;
    fn try_from(n: u64) -> Result<Self, Self::Error> {
        Self::new(n)
    }
}

impl From<VersionNumber> for u64 {
    fn from(value: VersionNumber) -> Self {
        value.0
    }
}

impl fmt::Display for VersionNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The SHA-256 fingerprint of a client certificate's DER encoding, as 64 lowercase hex digits.
///
/// The TLS layer computes it from the verified peer certificate; the store keeps it unique
/// per federation so one certificate can never speak for two clients.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CertFingerprint(String);

impl CertFingerprint {
    /// Parses 64 hex digits (either case; stored lowercase).
    pub fn parse(raw: &str) -> Result<Self, ValidationError> {
        if raw.len() != 64 || !raw.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(ValidationError::new(
                "certificate fingerprint",
                "must be 64 hex digits (SHA-256 of the certificate's DER)",
            ));
        }
        Ok(Self(raw.to_ascii_lowercase()))
    }

    /// Fingerprints DER-encoded certificate bytes.
    pub fn of_der(der: &[u8]) -> Self {
        Self(super::hex_sha256(der))
    }

    /// The fingerprint as lowercase hex.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for CertFingerprint {
    type Error = ValidationError;
    fn try_from(raw: String) -> Result<Self, Self::Error> {
        Self::parse(&raw)
    }
}

impl From<CertFingerprint> for String {
    fn from(value: CertFingerprint) -> Self {
        value.0
    }
}

impl fmt::Display for CertFingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A point in time as milliseconds since the Unix epoch (UTC).
///
/// Plain integers keep the store portable (SQLite and Postgres both sort them) and avoid a
/// date-time dependency; callers pass `Timestamp::now()` so tests can pass fixed times.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timestamp(i64);

impl Timestamp {
    /// The given milliseconds since the Unix epoch.
    pub const fn from_millis(ms: i64) -> Self {
        Self(ms)
    }

    /// The system clock's current time (a clock before 1970 reads as the epoch).
    pub fn now() -> Self {
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        Self(ms)
    }

    /// Milliseconds since the Unix epoch.
    pub fn as_millis(self) -> i64 {
        self.0
    }

    /// This time plus a duration (saturating).
    pub fn plus(self, d: std::time::Duration) -> Self {
        Self(
            self.0
                .saturating_add(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
        )
    }

    /// This time minus a duration (saturating).
    pub fn minus(self, d: std::time::Duration) -> Self {
        Self(
            self.0
                .saturating_sub(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_url_safe() {
        assert!(FederationId::parse("mnist-demo_2").is_ok());
        for bad in ["", "Upper", "a b", "-lead", "_lead", "a/b", &"x".repeat(65)] {
            assert!(ClientId::parse(bad).is_err(), "{bad:?} accepted");
        }
        let via_serde: Result<ClientId, _> = serde_json::from_str("\"../etc\"");
        assert!(via_serde.is_err());
    }

    #[test]
    fn round_numbers_start_at_one() {
        assert!(RoundNumber::new(0).is_err());
        assert_eq!(RoundNumber::FIRST.next().get(), 2);
        assert!(serde_json::from_str::<RoundNumber>("0").is_err());
    }

    #[test]
    fn fingerprints_are_normalised() {
        let upper = "AB".repeat(32);
        assert_eq!(
            CertFingerprint::parse(&upper).unwrap().as_str(),
            "ab".repeat(32)
        );
        assert!(CertFingerprint::parse("abc").is_err());
        assert_eq!(CertFingerprint::of_der(b"x").as_str().len(), 64);
    }
}
