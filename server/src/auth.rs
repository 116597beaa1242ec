//! Bearer tokens for people: a role and an expiry, signed with HMAC-SHA256 by the server's key.
//!
//! Format: `cohort1.<payload>.<tag>` where `payload` is base64url (no padding) of
//! `{"sub": name, "role": "admin"|"viewer", "exp": unix_seconds}` and `tag` is base64url of
//! HMAC-SHA256(key, "cohort1." + payload). Tokens are stateless: the key in `token.key`
//! decides, so rotating that file revokes every token.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::hmac;
use serde::{Deserialize, Serialize};

const PREFIX: &str = "cohort1.";

/// What a person may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Read federations, rounds, budgets and metrics.
    Viewer,
    /// Everything a viewer may, plus create federations, enrol and revoke clients.
    Admin,
}

impl Role {
    /// Parses `admin` or `viewer`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "admin" => Some(Self::Admin),
            "viewer" => Some(Self::Viewer),
            _ => None,
        }
    }

    /// The lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Viewer => "viewer",
        }
    }
}

/// The verified contents of a token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Who it was issued to (for logs).
    pub sub: String,
    /// Its role.
    pub role: Role,
    /// Unix seconds after which it is refused.
    pub exp: u64,
}

/// Why a token was refused. The message is safe to show the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TokenError {
    /// Not of the form `cohort1.<payload>.<tag>`.
    Malformed,
    /// The signature does not match this server's key.
    BadSignature,
    /// Its expiry has passed.
    Expired,
    /// The key file did not hold 32 or more hex bytes.
    BadKey,
}

impl fmt::Display for TokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Malformed => {
                "the bearer token is malformed (expected cohort1.<payload>.<signature>)"
            }
            Self::BadSignature => "the bearer token was not signed by this server",
            Self::Expired => {
                "the bearer token has expired; ask an admin for a new one (cohort pki issue-token)"
            }
            Self::BadKey => "the token key must be at least 32 bytes of hex",
        })
    }
}

impl std::error::Error for TokenError {}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Signs and verifies tokens with one HMAC key.
pub struct TokenSigner {
    key: hmac::Key,
}

impl fmt::Debug for TokenSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenSigner(..)")
    }
}

impl TokenSigner {
    /// A signer from raw key bytes (≥ 32).
    pub fn new(secret: &[u8]) -> Result<Self, TokenError> {
        if secret.len() < 32 {
            return Err(TokenError::BadKey);
        }
        Ok(Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
        })
    }

    /// A signer from the hex contents of `token.key`; the decoded bytes are wiped after use.
    pub fn from_hex(hex: &str) -> Result<Self, TokenError> {
        if !hex.len().is_multiple_of(2) || !hex.is_ascii() {
            return Err(TokenError::BadKey);
        }
        let mut bytes = Vec::with_capacity(hex.len() / 2);
        for i in (0..hex.len()).step_by(2) {
            match u8::from_str_radix(&hex[i..i + 2], 16) {
                Ok(b) => bytes.push(b),
                Err(_) => {
                    bytes.fill(0);
                    return Err(TokenError::BadKey);
                }
            }
        }
        let signer = Self::new(&bytes);
        bytes.fill(0);
        signer
    }

    /// Issues a token for `sub` with `role`, valid for `ttl_s` seconds from now.
    pub fn issue(&self, sub: &str, role: Role, ttl_s: u64) -> String {
        self.issue_claims(&Claims {
            sub: sub.to_owned(),
            role,
            exp: now_unix().saturating_add(ttl_s),
        })
    }

    /// Issues a token with exactly these claims (tests use it for expired tokens).
    pub fn issue_claims(&self, claims: &Claims) -> String {
        // Serialising a struct of strings and integers cannot fail.
        let json = serde_json::to_vec(claims).unwrap_or_default();
        let signed = format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(json));
        let tag = hmac::sign(&self.key, signed.as_bytes());
        format!("{signed}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
    }

    /// Checks the signature (in constant time), then the expiry.
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        let (signed, tag) = token.rsplit_once('.').ok_or(TokenError::Malformed)?;
        let payload = signed.strip_prefix(PREFIX).ok_or(TokenError::Malformed)?;
        let tag = URL_SAFE_NO_PAD
            .decode(tag)
            .map_err(|_| TokenError::Malformed)?;
        hmac::verify(&self.key, signed.as_bytes(), &tag).map_err(|_| TokenError::BadSignature)?;
        let json = URL_SAFE_NO_PAD
            .decode(payload)
            .map_err(|_| TokenError::Malformed)?;
        let claims: Claims = serde_json::from_slice(&json).map_err(|_| TokenError::Malformed)?;
        if claims.exp <= now_unix() {
            return Err(TokenError::Expired);
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer(byte: u8) -> TokenSigner {
        TokenSigner::new(&[byte; 32]).unwrap()
    }

    #[test]
    fn issued_tokens_verify_with_their_role() {
        let s = signer(1);
        let t = s.issue("alice", Role::Viewer, 60);
        let c = s.verify(&t).unwrap();
        assert_eq!((c.sub.as_str(), c.role), ("alice", Role::Viewer));
    }

    #[test]
    fn forged_expired_and_malformed_tokens_are_refused() {
        let s = signer(1);
        let other = signer(2).issue("mallory", Role::Admin, 60);
        assert_eq!(s.verify(&other), Err(TokenError::BadSignature));
        let expired = s.issue_claims(&Claims {
            sub: "a".into(),
            role: Role::Admin,
            exp: 1,
        });
        assert_eq!(s.verify(&expired), Err(TokenError::Expired));
        assert_eq!(s.verify("nonsense"), Err(TokenError::Malformed));
        // Swapping the payload of a viewer token for an admin payload breaks the signature.
        let viewer = s.issue("v", Role::Viewer, 60);
        let admin = s.issue("v", Role::Admin, 60);
        let (_, vtag) = viewer.rsplit_once('.').unwrap();
        let (apayload, _) = admin.rsplit_once('.').unwrap();
        assert_eq!(
            s.verify(&format!("{apayload}.{vtag}")),
            Err(TokenError::BadSignature)
        );
        assert!(TokenSigner::from_hex("zz").is_err());
        assert!(
            TokenSigner::from_hex(&"ab".repeat(16)).is_err(),
            "16 bytes is too short"
        );
        assert!(TokenSigner::from_hex(&"ab".repeat(32)).is_ok());
    }
}
