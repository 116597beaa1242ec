//! The server's privacy ledger: what every client and the federation have spent, and
//! admission control that refuses work a budget cannot afford.
//!
//! # What is charged
//! - **Record-level, per client and round**: the round's DP-SGD run is `steps` =
//!   ⌈E / q⌉ compositions of a subsampled Gaussian with rate q (the batch sample rate) and
//!   noise multiplier σ. The client's sample count is recorded with the entry for audit; the
//!   bound depends on q and steps only.
//! - **Client-level, per federation and round**, when the federation claims client-level DP:
//!   the noise the round's sum actually carries ([`ClientLevel`]). A plain round is one lattice
//!   (discrete) Gaussian of multiplier ≥ z (central noise ÷ update clip), amplified by the
//!   client sampling rate q_c; a secure round is the aggregate Skellam mechanism of the
//!   clients' calibrated shares, unamplified (see [`client_level`]).
//!
//! Each account is stored as serialised accountant state ([`LedgerAccountant`]), so spend
//! composes across rounds exactly as the accountant composes steps.
//!
//! # Fail closed
//! - The write-ahead entries are part of [`RoundOpening`]: the store writes them in the
//!   transaction that opens the round, before any client can learn of its task.
//! - Aborted rounds keep their entries; nothing is refunded.
//! - An account whose state cannot be parsed, or whose ε cannot be computed, counts as
//!   exhausted ([`Refusal::Unverifiable`]).
//! - A federation whose next round could exceed its client-level budget stops.

use std::collections::HashMap;
use std::fmt;

use cohort_privacy::EpsDelta;
use serde::{Deserialize, Serialize};

use crate::domain::{
    Client, ClientId, Federation, RoundNumber, RoundStage, Timestamp, TrainingConfig, VersionNumber,
};
use crate::storage::{AccountRecord, AccountUpdate, LedgerEntry, LedgerSubject, RoundOpening};

/// A Poisson-subsampled Gaussian mechanism: one DP-SGD step, or one DP-FedAvg round.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Mechanism {
    sample_rate: f64,
    noise_multiplier: f64,
}

impl Mechanism {
    /// Validates q in (0, 1] and σ > 0 (both finite).
    pub fn new(sample_rate: f64, noise_multiplier: f64) -> Result<Self, LedgerError> {
        if !(sample_rate.is_finite() && sample_rate > 0.0 && sample_rate <= 1.0) {
            return Err(LedgerError::InvalidMechanism(format!(
                "sample rate must be in (0, 1], got {sample_rate}"
            )));
        }
        if !(noise_multiplier.is_finite() && noise_multiplier > 0.0) {
            return Err(LedgerError::InvalidMechanism(format!(
                "noise multiplier must be > 0, got {noise_multiplier}"
            )));
        }
        Ok(Self {
            sample_rate,
            noise_multiplier,
        })
    }

    /// q.
    pub fn sample_rate(&self) -> f64 {
        self.sample_rate
    }

    /// σ (or z).
    pub fn noise_multiplier(&self) -> f64 {
        self.noise_multiplier
    }
}

/// A mechanism's RDP as a function of an accountant's orders (one value ≥ 0 per order).
pub type RdpCurve<'a> = &'a dyn Fn(&[f64]) -> Result<Vec<f64>, LedgerError>;

/// The accountant the ledger stores. Small on purpose: a ledger only needs to compose,
/// ask for ε, and round-trip through text.
///
/// Implementations must be *sound*: the ε they report is an upper bound on the true ε.
pub trait LedgerAccountant: Sized + Clone {
    /// An accountant that has recorded nothing.
    fn fresh() -> Self;
    /// Parses stored state; any mismatch (another accountant kind, a malformed vector) is
    /// an error, which the ledger treats as an exhausted budget.
    fn from_state(state: &str) -> Result<Self, LedgerError>;
    /// Serialises the state.
    fn to_state(&self) -> Result<String, LedgerError>;
    /// Composes `steps` runs of `mechanism`; an error leaves the budget unverifiable.
    fn record(&mut self, mechanism: Mechanism, steps: u64) -> Result<(), LedgerError>;
    /// Composes one run of a mechanism that is not a subsampled Gaussian (a secure round's
    /// aggregate Skellam, a plain round's lattice Gaussian), by its own RDP: `rdp` maps this
    /// accountant's orders to the mechanism's RDP at each.
    fn record_rdp(&mut self, rdp: RdpCurve<'_>) -> Result<(), LedgerError>;
    /// ε at `delta` for everything recorded; `f64::INFINITY` if unbounded.
    fn epsilon(&self, delta: f64) -> Result<f64, LedgerError>;
}

/// The accountant the server uses. Swap this one line to change accounting method.
pub type DefaultAccountant = cohort_privacy::accounting::RdpAccountant;

/// Rényi-DP orders at which [`UnamplifiedRdp`] tracks spend.
const ORDERS: [f64; 17] = [
    1.25, 1.5, 1.75, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 12.0, 16.0, 24.0, 32.0, 64.0, 128.0,
];

/// A sound, deliberately conservative RDP accountant: each step is charged as the plain
/// Gaussian mechanism, RDP(α) = α / (2σ²), ignoring the amplification Poisson subsampling
/// gives. Subsampling only ever lowers the true loss, so this over-estimates ε — it fails
/// closed. The server uses `cohort_privacy`'s amplified `RdpAccountant`; this one is kept as
/// an independent, closed-form cross-check in tests (it must never report less).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UnamplifiedRdp {
    kind: String,
    orders: Vec<f64>,
    rdp: Vec<f64>,
}

const UNAMPLIFIED_KIND: &str = "gaussian-rdp-unamplified";

impl LedgerAccountant for UnamplifiedRdp {
    fn fresh() -> Self {
        Self {
            kind: UNAMPLIFIED_KIND.to_owned(),
            orders: ORDERS.to_vec(),
            rdp: vec![0.0; ORDERS.len()],
        }
    }

    fn from_state(state: &str) -> Result<Self, LedgerError> {
        let acc: Self =
            serde_json::from_str(state).map_err(|e| LedgerError::Corrupt(e.to_string()))?;
        let valid = acc.kind == UNAMPLIFIED_KIND
            && acc.orders.len() == acc.rdp.len()
            && acc.orders.iter().all(|a| a.is_finite() && *a > 1.0)
            && acc.rdp.iter().all(|r| !r.is_nan() && *r >= 0.0);
        if !valid {
            return Err(LedgerError::Corrupt(format!(
                "not a valid {UNAMPLIFIED_KIND} state"
            )));
        }
        Ok(acc)
    }

    fn to_state(&self) -> Result<String, LedgerError> {
        serde_json::to_string(self).map_err(|e| LedgerError::Corrupt(e.to_string()))
    }

    fn record(&mut self, mechanism: Mechanism, steps: u64) -> Result<(), LedgerError> {
        let sigma2 = mechanism.noise_multiplier * mechanism.noise_multiplier;
        for (r, a) in self.rdp.iter_mut().zip(&self.orders) {
            *r += steps as f64 * a / (2.0 * sigma2);
        }
        Ok(())
    }

    fn record_rdp(&mut self, rdp: RdpCurve<'_>) -> Result<(), LedgerError> {
        let per_order = rdp(&self.orders)?;
        if per_order.len() != self.orders.len() || per_order.iter().any(|r| r.is_nan() || *r < 0.0)
        {
            return Err(LedgerError::InvalidMechanism(
                "an RDP curve must give one value ≥ 0 per order".into(),
            ));
        }
        for (r, step) in self.rdp.iter_mut().zip(per_order) {
            *r += step;
        }
        Ok(())
    }

    fn epsilon(&self, delta: f64) -> Result<f64, LedgerError> {
        if !(delta > 0.0 && delta < 1.0) {
            return Err(LedgerError::InvalidMechanism(format!(
                "delta must be in (0, 1), got {delta}"
            )));
        }
        // ε = min_α RDP(α) + ln(1/δ)/(α−1)  (Mironov 2017, Prop. 3).
        let eps = self
            .orders
            .iter()
            .zip(&self.rdp)
            .map(|(a, r)| r + (1.0 / delta).ln() / (a - 1.0))
            .fold(f64::INFINITY, f64::min);
        Ok(eps.max(0.0))
    }
}

/// Why the ledger refused.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum LedgerError {
    /// A mechanism parameter was out of range.
    InvalidMechanism(String),
    /// Stored accountant state could not be parsed or evaluated.
    Corrupt(String),
    /// The federation's next round would exceed its client-level budget.
    FederationBudgetExhausted {
        /// ε after the round, at the budget's δ.
        projected: f64,
        /// The budget.
        budget: EpsDelta,
    },
    /// The federation's client-level account cannot be verified (treated as exhausted).
    FederationBudgetUnverifiable(String),
}

impl fmt::Display for LedgerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidMechanism(m) => write!(f, "invalid mechanism: {m}"),
            Self::Corrupt(m) => write!(f, "accountant state is corrupt: {m}"),
            Self::FederationBudgetExhausted { projected, budget } => write!(
                f,
                "the next round would spend client-level epsilon {projected:.3} > budget {} (delta {})",
                budget.epsilon(),
                budget.delta()
            ),
            Self::FederationBudgetUnverifiable(m) => {
                write!(
                    f,
                    "the client-level budget cannot be verified ({m}); treated as exhausted"
                )
            }
        }
    }
}

impl std::error::Error for LedgerError {}

/// What one round charges each participant (record level), derived from a federation's
/// configuration. The federation's own charge is a [`ClientLevel`], which for a secure round
/// depends on who was sampled.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RoundCharge {
    /// Each participant's DP-SGD mechanism.
    pub record_level: Mechanism,
    /// Its composition count per round (⌈E / q⌉).
    pub record_steps: u64,
}

impl RoundCharge {
    /// The charge a round of `config` makes to each participant.
    pub fn for_config(config: &TrainingConfig) -> Result<Self, LedgerError> {
        let dp = config.dp_sgd();
        let record_level = Mechanism::new(dp.batch_sample_rate, dp.noise_multiplier)?;
        Ok(Self {
            record_level,
            record_steps: dp.steps_per_round(),
        })
    }
}

/// Why a client is not admitted to a round.
#[derive(Debug, Clone, PartialEq)]
pub enum Refusal {
    /// Its projected ε after the round exceeds its budget.
    WouldExceed {
        /// ε after the round, at the budget's δ.
        projected: f64,
        /// Its budget.
        budget: EpsDelta,
    },
    /// Its account cannot be verified: counted as exhausted.
    Unverifiable(String),
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::WouldExceed { projected, budget } => write!(
                f,
                "projected epsilon {projected:.3} would exceed the budget {} (delta {})",
                budget.epsilon(),
                budget.delta()
            ),
            Self::Unverifiable(m) => {
                write!(f, "budget cannot be verified ({m}); treated as exhausted")
            }
        }
    }
}

/// An admitted charge: the state to write and the ε it leaves.
#[derive(Debug, Clone, PartialEq)]
pub struct Admitted {
    /// The account's state after the round, ready for [`RoundOpening`].
    pub update: AccountUpdate,
}

/// Projects one account through `steps` of `mechanism` and checks it against `budget`.
pub fn admit<A: LedgerAccountant>(
    account: Option<&AccountRecord>,
    budget: EpsDelta,
    mechanism: Mechanism,
    steps: u64,
) -> Result<Admitted, Refusal> {
    admit_with::<A>(account, budget, |acc| acc.record(mechanism, steps))
}

/// Whether an account can afford one integer release of the Skellam mechanism `charge` (a
/// site's evaluation statistics), composed by its RDP into the same state as its training.
pub fn admit_release<A: LedgerAccountant>(
    account: Option<&AccountRecord>,
    budget: EpsDelta,
    charge: &SkellamCharge,
) -> Result<Admitted, Refusal> {
    admit_with::<A>(account, budget, |acc| {
        acc.record_rdp(&|orders| charge.rdp(orders))
    })
}

/// Projects one account through whatever `charge` records and checks it against `budget`.
fn admit_with<A: LedgerAccountant>(
    account: Option<&AccountRecord>,
    budget: EpsDelta,
    charge: impl FnOnce(&mut A) -> Result<(), LedgerError>,
) -> Result<Admitted, Refusal> {
    let (mut acc, revision) = match account {
        None => (A::fresh(), 0),
        Some(record) => {
            let acc = A::from_state(&record.accountant)
                .map_err(|e| Refusal::Unverifiable(e.to_string()))?;
            (acc, record.revision)
        }
    };
    charge(&mut acc).map_err(|e| Refusal::Unverifiable(e.to_string()))?;
    let projected = acc
        .epsilon(budget.delta())
        .map_err(|e| Refusal::Unverifiable(e.to_string()))?;
    if projected.is_nan() {
        return Err(Refusal::Unverifiable("epsilon is NaN".to_owned()));
    }
    // Infinite ε never fits (NaN was refused above).
    if projected.is_infinite() || projected > budget.epsilon() {
        return Err(Refusal::WouldExceed { projected, budget });
    }
    let accountant = acc
        .to_state()
        .map_err(|e| Refusal::Unverifiable(e.to_string()))?;
    Ok(Admitted {
        update: AccountUpdate {
            accountant,
            epsilon: projected,
            delta: budget.delta(),
            expected_revision: revision,
        },
    })
}

/// Whether `client` can afford one more round of `charge`.
pub fn admit_client<A: LedgerAccountant>(
    client: &Client,
    account: Option<&AccountRecord>,
    charge: &RoundCharge,
) -> Result<Admitted, Refusal> {
    admit::<A>(
        account,
        client.budget,
        charge.record_level,
        charge.record_steps,
    )
}

/// Whether the federation can afford a round charging `charge`; `Ok(None)` when it claims no
/// client-level DP (nothing to charge).
pub fn admit_federation<A: LedgerAccountant>(
    federation: &Federation,
    account: Option<&AccountRecord>,
    charge: Option<&ClientLevel>,
) -> Result<Option<Admitted>, LedgerError> {
    let (Some(budget), Some(charge)) = (federation.config.federation_budget(), charge) else {
        return Ok(None);
    };
    match admit_with::<A>(account, budget, |acc| charge.record(acc)) {
        Ok(admitted) => Ok(Some(admitted)),
        Err(Refusal::WouldExceed { projected, budget }) => {
            Err(LedgerError::FederationBudgetExhausted { projected, budget })
        }
        Err(Refusal::Unverifiable(m)) => Err(LedgerError::FederationBudgetUnverifiable(m)),
    }
}

/// Builds the write-ahead [`RoundOpening`] for `participants`, each of whom must already have
/// been admitted (their [`Admitted`] updates are passed in).
#[allow(clippy::too_many_arguments)]
pub fn round_opening(
    federation: &Federation,
    number: RoundNumber,
    base_version: VersionNumber,
    charge: &RoundCharge,
    client_level: Option<&ClientLevel>,
    participants: Vec<(Client, Admitted)>,
    federation_charge: Option<Admitted>,
    stage: RoundStage,
    now: Timestamp,
) -> RoundOpening {
    let mut entries = Vec::with_capacity(participants.len() + 1);
    let mut client_accounts = Vec::with_capacity(participants.len());
    let mut ids = Vec::with_capacity(participants.len());
    for (client, admitted) in participants {
        entries.push(LedgerEntry {
            round: number,
            subject: LedgerSubject::Client(client.id.clone()),
            sample_rate: charge.record_level.sample_rate(),
            noise_multiplier: charge.record_level.noise_multiplier(),
            steps: charge.record_steps,
            sample_count: client.sample_count,
            epsilon_after: admitted.update.epsilon,
            delta: admitted.update.delta,
            recorded_at: now,
        });
        ids.push(client.id.clone());
        client_accounts.push((client.id, admitted.update));
    }
    let federation_account = match (federation_charge, client_level) {
        (Some(admitted), Some(mechanism)) => {
            entries.push(LedgerEntry {
                round: number,
                subject: LedgerSubject::Federation,
                sample_rate: mechanism.entry_sample_rate(),
                noise_multiplier: mechanism.entry_noise_multiplier(),
                steps: 1,
                sample_count: None,
                epsilon_after: admitted.update.epsilon,
                delta: admitted.update.delta,
                recorded_at: now,
            });
            Some(admitted.update)
        }
        _ => None,
    };
    RoundOpening {
        federation: federation.id.clone(),
        number,
        base_version,
        participants: ids,
        entries,
        client_accounts,
        federation_account,
        stage,
        opened_at: now,
    }
}

/// A client's spend for the dashboard, recomputed from its stored state.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientSpend {
    /// The client.
    pub client: ClientId,
    /// ε spent at the budget's δ; `None` if the state cannot be verified (then the client is
    /// treated as exhausted).
    pub epsilon: Option<f64>,
    /// The client's budget.
    pub budget: EpsDelta,
}

/// Every client's spend, clients that never took part included (ε = 0).
pub fn client_spends<A: LedgerAccountant>(
    clients: &[Client],
    accounts: &HashMap<ClientId, AccountRecord>,
) -> Vec<ClientSpend> {
    clients
        .iter()
        .map(|c| {
            let epsilon = match accounts.get(&c.id) {
                None => Some(0.0),
                Some(record) => A::from_state(&record.accountant)
                    .and_then(|acc| acc.epsilon(c.budget.delta()))
                    .ok()
                    .filter(|e| !e.is_nan()),
            };
            ClientSpend {
                client: c.id.clone(),
                epsilon,
                budget: c.budget,
            }
        })
        .collect()
}

pub mod client_level;
#[cfg(test)]
mod client_level_tests;
mod rdp;
#[cfg(test)]
mod tests;

pub use client_level::{ClientLevel, LatticeCharge, SkellamCharge, central_noise};
