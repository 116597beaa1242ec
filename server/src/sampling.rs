//! Choosing a round's participants: eligibility, Poisson sampling from a CSPRNG, and the
//! minimum-clients rule.
//!
//! Client-level DP claims amplification by sampling, which holds only if each eligible client
//! joins independently with probability q_c and nobody can predict or steer the draw. So the
//! draw is Poisson (one Bernoulli(q_c) per client, not "pick k"), and the coins come from
//! ChaCha20 seeded by the operating system.

use std::fmt;
use std::time::Duration;

use rand::rngs::SysRng;
use rand::{CryptoRng, RngExt, SeedableRng};
use rand_chacha::ChaCha20Rng;

use crate::domain::{AbortReason, Client, EnrolmentState, Timestamp};

/// Why a client cannot be scheduled this round.
#[derive(Debug, Clone, PartialEq)]
pub enum Ineligible {
    /// It has not completed enrolment.
    NotEnrolled,
    /// It was revoked.
    Revoked,
    /// It has not polled within the online window (or never).
    NotSeenRecently,
    /// Its privacy budget cannot afford the round (or cannot be verified).
    Budget(crate::ledger::Refusal),
}

impl fmt::Display for Ineligible {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotEnrolled => f.write_str("not enrolled"),
            Self::Revoked => f.write_str("revoked"),
            Self::NotSeenRecently => f.write_str("not seen recently"),
            Self::Budget(r) => write!(f, "budget: {r}"),
        }
    }
}

/// The non-budget eligibility rules: enrolled, not revoked, seen within `online_window`.
/// (The budget rule needs the ledger; see [`crate::scheduler`].)
pub fn check_presence(
    client: &Client,
    now: Timestamp,
    online_window: Duration,
) -> Result<(), Ineligible> {
    if client.revoked {
        return Err(Ineligible::Revoked);
    }
    if client.enrolment != EnrolmentState::Enrolled {
        return Err(Ineligible::NotEnrolled);
    }
    match client.last_seen {
        Some(seen) if seen >= now.minus(online_window) => Ok(()),
        _ => Err(Ineligible::NotSeenRecently),
    }
}

/// Why a sampler could not be created.
#[derive(Debug)]
pub struct SamplerError(rand::rngs::SysError);

impl fmt::Display for SamplerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the operating system's random number generator failed: {}",
            self.0
        )
    }
}

impl std::error::Error for SamplerError {}

/// Poisson sampling from a cryptographically secure generator.
#[derive(Debug)]
pub struct ClientSampler<R = ChaCha20Rng> {
    rng: R,
}

impl ClientSampler<ChaCha20Rng> {
    /// ChaCha20 seeded from the operating system: the server's sampler.
    pub fn from_os() -> Result<Self, SamplerError> {
        let rng = ChaCha20Rng::try_from_rng(&mut SysRng).map_err(SamplerError)?;
        Ok(Self { rng })
    }
}

impl<R: CryptoRng> ClientSampler<R> {
    /// A sampler over a given CSPRNG (tests and the simulator pass a seeded ChaCha20).
    pub fn with_rng(rng: R) -> Self {
        Self { rng }
    }

    /// Keeps each candidate independently with probability `rate` (clamped to [0, 1]; NaN
    /// keeps nobody). Order is preserved.
    pub fn poisson<T>(&mut self, candidates: Vec<T>, rate: f64) -> Vec<T> {
        let p = if rate.is_nan() {
            0.0
        } else {
            rate.clamp(0.0, 1.0)
        };
        candidates
            .into_iter()
            .filter(|_| self.rng.random_bool(p))
            .collect()
    }
}

/// The minimum-clients rule at sampling time: fewer sampled than the minimum aborts the round
/// before anyone is told of it.
pub fn check_sampled(sampled: usize, min_clients: u32) -> Result<(), AbortReason> {
    let sampled = u32::try_from(sampled).unwrap_or(u32::MAX);
    if sampled < min_clients {
        return Err(AbortReason::TooFewSampled {
            sampled,
            min_clients,
        });
    }
    Ok(())
}

/// The minimum-clients rule at the deadline: fewer updates than the minimum aborts the round
/// (its ledger entries stand).
pub fn check_received(received: usize, min_clients: u32) -> Result<(), AbortReason> {
    let received = u32::try_from(received).unwrap_or(u32::MAX);
    if received < min_clients {
        return Err(AbortReason::TooFewUpdates {
            received,
            min_clients,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{ClientId, FederationId};
    use cohort_privacy::EpsDelta;

    fn client(enrolled: bool, revoked: bool, last_seen: Option<i64>) -> Client {
        Client {
            federation: FederationId::parse("f").unwrap(),
            id: ClientId::parse("c").unwrap(),
            fingerprint: None,
            enrolment: if enrolled {
                EnrolmentState::Enrolled
            } else {
                EnrolmentState::Invited
            },
            revoked,
            last_seen: last_seen.map(Timestamp::from_millis),
            budget: EpsDelta::new(1.0, 1e-5).unwrap(),
            sample_count: None,
            created_at: Timestamp::from_millis(0),
        }
    }

    #[test]
    fn presence_rules() {
        let now = Timestamp::from_millis(100_000);
        let window = Duration::from_secs(60);
        assert_eq!(
            check_presence(&client(true, false, Some(90_000)), now, window),
            Ok(())
        );
        assert_eq!(
            check_presence(&client(true, false, Some(30_000)), now, window),
            Err(Ineligible::NotSeenRecently)
        );
        assert_eq!(
            check_presence(&client(true, false, None), now, window),
            Err(Ineligible::NotSeenRecently)
        );
        assert_eq!(
            check_presence(&client(false, false, Some(90_000)), now, window),
            Err(Ineligible::NotEnrolled)
        );
        assert_eq!(
            check_presence(&client(true, true, Some(90_000)), now, window),
            Err(Ineligible::Revoked)
        );
    }

    #[test]
    fn poisson_rate_is_respected() {
        let mut sampler = ClientSampler::with_rng(ChaCha20Rng::seed_from_u64(7));
        assert_eq!(sampler.poisson((0..100).collect(), 1.0).len(), 100);
        assert!(sampler.poisson((0..100).collect(), 0.0).is_empty());
        assert!(sampler.poisson((0..100).collect(), f64::NAN).is_empty());
        // 20,000 Bernoulli(0.3) draws: mean 6,000, sd ≈ 65; ±400 is over 6 sd.
        let kept = sampler.poisson((0..20_000).collect::<Vec<_>>(), 0.3);
        assert!((5_600..=6_400).contains(&kept.len()), "kept {}", kept.len());
        assert!(kept.windows(2).all(|w| w[0] < w[1]), "order preserved");
    }

    #[test]
    fn sampler_from_os_is_not_constant() {
        let mut a = ClientSampler::from_os().unwrap();
        let mut b = ClientSampler::from_os().unwrap();
        let draw_a = a.poisson((0..256).collect::<Vec<_>>(), 0.5);
        let draw_b = b.poisson((0..256).collect::<Vec<_>>(), 0.5);
        assert_ne!(draw_a, draw_b, "two OS-seeded samplers agreed on 256 coins");
    }

    #[test]
    fn minimum_clients_rule() {
        assert_eq!(check_sampled(3, 3), Ok(()));
        assert_eq!(
            check_sampled(2, 3),
            Err(AbortReason::TooFewSampled {
                sampled: 2,
                min_clients: 3
            })
        );
        assert_eq!(
            check_received(1, 2),
            Err(AbortReason::TooFewUpdates {
                received: 1,
                min_clients: 2
            })
        );
    }
}
