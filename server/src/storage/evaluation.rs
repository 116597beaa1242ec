//! What the store keeps of federated evaluations: one row per evaluation, and the
//! append-only record-level charges written with the sites' accounts when it opens.

use cohort_privacy::integer_release::ReleaseCharge;

use super::AccountUpdate;
use crate::domain::{ClientId, FederationId, Timestamp, VersionNumber};

/// One asked site's charge: the release's mechanism and the account state it leads to.
#[derive(Debug, Clone, PartialEq)]
pub struct EvaluationCharge {
    /// The site.
    pub client: ClientId,
    /// The Skellam release it pays for.
    pub charge: ReleaseCharge,
    /// Its account after the charge (admitted against its budget).
    pub update: AccountUpdate,
}

/// Everything opening an evaluation writes, in one transaction, before any site learns of it.
#[derive(Debug, Clone, PartialEq)]
pub struct EvaluationOpening {
    /// The federation.
    pub federation: FederationId,
    /// The version evaluated (must exist).
    pub model_version: VersionNumber,
    /// The service's record of the opening (JSON).
    pub opening: String,
    /// One per asked site; empty with noise off (nothing is claimed, nothing charged).
    pub charges: Vec<EvaluationCharge>,
    /// Now.
    pub opened_at: Timestamp,
}

/// The state of a stored evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoredEvaluationState {
    /// Open.
    InProgress,
    /// Closed with a report.
    Completed,
    /// Closed without one.
    Aborted,
}

impl StoredEvaluationState {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::InProgress => "in_progress",
            Self::Completed => "completed",
            Self::Aborted => "aborted",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Self> {
        match s {
            "in_progress" => Some(Self::InProgress),
            "completed" => Some(Self::Completed),
            "aborted" => Some(Self::Aborted),
            _ => None,
        }
    }
}

/// An evaluation as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvaluation {
    /// Its number within the federation (1, 2, …).
    pub number: u64,
    /// The version evaluated.
    pub model_version: VersionNumber,
    /// State.
    pub state: StoredEvaluationState,
    /// The service's record of the opening.
    pub opening: String,
    /// The service's record of the end (report or abort reason).
    pub result: Option<String>,
    /// When it opened.
    pub opened_at: Timestamp,
    /// When it closed.
    pub closed_at: Option<Timestamp>,
}
