//! The client's own privacy ledger: every training job's spend, written and fsynced before the
//! job starts, and a budget it never exceeds.
//!
//! # Brief overview
//! A ledger is one JSON-lines file. The first line holds the budget (ε, δ) and the accounting
//! mechanism; every further line is a [`JobEntry`] (σ, q, steps) appended and fsynced by
//! [`LocalLedger::reserve`] *before* any training. Opening replays every entry into an RDP
//! accountant, so the spend survives restarts, and a job that aborts after reserving still
//! counts (fail closed). A job whose projected ε exceeds the budget is refused with
//! [`LedgerError::BudgetExceeded`], which says how much is left. An unreadable ledger refuses
//! all work: an unverifiable budget is treated as spent.
//!
//! Statistics released outside training (a round's loss and accuracy, through
//! `cohort_privacy::release`) are charged as [`ReleaseEntry`] lines, each an (ε, δ) pair fixed
//! by opendp's privacy map, written and fsynced by [`LocalLedger::record_release`] before the
//! noise is drawn. They compose with the DP-SGD spend by basic composition: the spend at the
//! budget's δ is `ε_RDP(δ − Σδᵢ) + Σεᵢ`, so DP-SGD's RDP is converted at what δ the releases
//! left (and the spend is infinite once they used it all).

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use cohort_privacy::accounting::{Accountant, AccountingError, RdpAccountant, SubsampledGaussian};
use cohort_privacy::budget::EpsDelta;
use serde::{Deserialize, Serialize};

use crate::dpsgd::StepAccountant;

/// The ledger file's first line.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Header {
    format: String,
    mechanism: String,
    budget: EpsDelta,
}

const FORMAT: &str = "cohort-client-ledger/1";

/// One reserved training job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobEntry {
    /// What the job was (free text for the operator).
    pub label: String,
    /// σ of every step.
    pub noise_multiplier: f64,
    /// q of every step.
    pub sample_rate: f64,
    /// Steps reserved (the job may stop early; the reservation still counts).
    pub steps: u64,
    /// Seconds since the Unix epoch when the reservation was written.
    pub reserved_at: u64,
}

/// One charged release of statistics: its (ε, δ) as opendp's privacy map gave it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReleaseEntry {
    /// What was released (free text for the operator).
    pub label: String,
    /// ε of the release.
    pub epsilon: f64,
    /// δ of the release.
    pub delta: f64,
    /// Seconds since the Unix epoch when the charge was written.
    pub released_at: u64,
}

/// A ledger line after the header.
#[derive(Deserialize)]
#[serde(untagged)]
enum Line {
    Job(JobEntry),
    Release(ReleaseEntry),
}

/// Why the ledger refused or failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum LedgerError {
    /// The job would take the spend past the budget.
    BudgetExceeded {
        /// ε the job would bring the total to.
        projected_epsilon: f64,
        /// ε spent before the job.
        spent_epsilon: f64,
        /// The budget.
        budget: EpsDelta,
    },
    /// The file exists but is not a valid ledger; no work is allowed until it is repaired.
    Corrupt(String),
    /// The ledger was created with another budget than the one now asked for.
    BudgetMismatch {
        /// Budget in the file.
        recorded: EpsDelta,
        /// Budget requested.
        requested: EpsDelta,
    },
    /// The accountant refused (a σ or q out of range).
    Accounting(AccountingError),
    /// Reading or writing the file failed.
    Io(std::io::Error),
}

impl fmt::Display for LedgerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LedgerError::BudgetExceeded {
                projected_epsilon,
                spent_epsilon,
                budget,
            } => write!(
                f,
                "refused: this job would bring the spend to ε = {projected_epsilon:.3} at δ = {}, \
                 over the budget ε = {}; spent so far ε = {spent_epsilon:.3}, left ε = {:.3}. \
                 Use more noise, fewer steps or a lower sampling rate",
                budget.delta(),
                budget.epsilon(),
                (budget.epsilon() - spent_epsilon).max(0.0)
            ),
            LedgerError::Corrupt(why) => write!(
                f,
                "the privacy ledger cannot be read ({why}); refusing to train until it is \
                 repaired, since an unverifiable budget counts as spent"
            ),
            LedgerError::BudgetMismatch {
                recorded,
                requested,
            } => write!(
                f,
                "the ledger's budget is ε = {}, δ = {} but ε = {}, δ = {} was requested; a \
                 budget cannot be changed by reopening the ledger",
                recorded.epsilon(),
                recorded.delta(),
                requested.epsilon(),
                requested.delta()
            ),
            LedgerError::Accounting(err) => write!(f, "privacy accounting failed: {err}"),
            LedgerError::Io(err) => write!(f, "privacy ledger I/O failed: {err}"),
        }
    }
}

impl std::error::Error for LedgerError {}

impl From<std::io::Error> for LedgerError {
    fn from(err: std::io::Error) -> Self {
        LedgerError::Io(err)
    }
}

impl From<AccountingError> for LedgerError {
    fn from(err: AccountingError) -> Self {
        LedgerError::Accounting(err)
    }
}

/// An open ledger: its budget, its entries, and an accountant holding their composition.
#[derive(Debug)]
pub struct LocalLedger {
    path: PathBuf,
    budget: EpsDelta,
    entries: Vec<JobEntry>,
    accountant: RdpAccountant,
    releases: Vec<ReleaseEntry>,
    /// Σεᵢ and Σδᵢ of `releases`.
    released: (f64, f64),
}

fn event(entry: &JobEntry) -> Result<SubsampledGaussian, LedgerError> {
    Ok(SubsampledGaussian::new(
        entry.sample_rate,
        entry.noise_multiplier,
    )?)
}

impl LocalLedger {
    /// Opens the ledger at `path`, creating it with `budget` if absent. An existing ledger must
    /// carry the same budget.
    pub fn open(path: impl AsRef<Path>, budget: EpsDelta) -> Result<Self, LedgerError> {
        let path = path.as_ref().to_path_buf();
        if !path.exists() {
            let header = Header {
                format: FORMAT.into(),
                mechanism: "rdp".into(),
                budget,
            };
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)?;
            let line =
                serde_json::to_string(&header).map_err(|e| LedgerError::Corrupt(e.to_string()))?;
            writeln!(file, "{line}")?;
            file.sync_all()?;
            sync_parent(&path)?;
        }
        let ledger = Self::read(&path)?;
        if ledger.budget != budget {
            return Err(LedgerError::BudgetMismatch {
                recorded: ledger.budget,
                requested: budget,
            });
        }
        Ok(ledger)
    }

    /// Opens an existing ledger with whatever budget it records.
    pub fn read(path: impl AsRef<Path>) -> Result<Self, LedgerError> {
        let path = path.as_ref().to_path_buf();
        let file = File::open(&path)?;
        let mut lines = BufReader::new(file).lines();
        let header: Header = match lines.next() {
            Some(line) => serde_json::from_str(&line?)
                .map_err(|e| LedgerError::Corrupt(format!("bad header: {e}")))?,
            None => return Err(LedgerError::Corrupt("empty file".into())),
        };
        if header.format != FORMAT || header.mechanism != "rdp" {
            return Err(LedgerError::Corrupt(format!(
                "unknown format {:?} / mechanism {:?}",
                header.format, header.mechanism
            )));
        }
        let mut entries = Vec::new();
        let mut releases = Vec::new();
        let mut released = (0.0, 0.0);
        let mut accountant = RdpAccountant::new();
        for (number, line) in lines.enumerate() {
            let line = line?;
            if line.trim().is_empty() {
                continue;
            }
            let bad = |e: String| LedgerError::Corrupt(format!("entry {}: {e}", number + 1));
            match serde_json::from_str(&line).map_err(|e| bad(e.to_string()))? {
                Line::Job(entry) => {
                    accountant.step(event(&entry)?, entry.steps);
                    entries.push(entry);
                }
                Line::Release(entry) => {
                    let charge = EpsDelta::new(entry.epsilon, entry.delta)
                        .map_err(|e| bad(format!("release charge: {e}")))?;
                    released.0 += charge.epsilon();
                    released.1 += charge.delta();
                    releases.push(entry);
                }
            }
        }
        Ok(Self {
            path,
            budget: header.budget,
            entries,
            accountant,
            releases,
            released,
        })
    }

    /// The budget.
    pub fn budget(&self) -> EpsDelta {
        self.budget
    }

    /// Every reserved job, oldest first.
    pub fn entries(&self) -> &[JobEntry] {
        &self.entries
    }

    /// Every charged release, oldest first.
    pub fn releases(&self) -> &[ReleaseEntry] {
        &self.releases
    }

    /// The spend at the budget's δ with `extra` releases' (ε, δ) added: DP-SGD's RDP, given
    /// as ε at a δ, converted at the δ the releases leave, plus their ε (basic composition).
    fn compose(
        &self,
        rdp_epsilon: impl FnOnce(f64) -> Result<f64, AccountingError>,
        extra: (f64, f64),
    ) -> Result<f64, LedgerError> {
        let rdp_delta = self.budget.delta() - self.released.1 - extra.1;
        // NaN or ≤ 0: the releases used all of δ, nothing is left to convert RDP at.
        if rdp_delta.is_nan() || rdp_delta <= 0.0 {
            return Ok(f64::INFINITY);
        }
        Ok(rdp_epsilon(rdp_delta)? + self.released.0 + extra.0)
    }

    /// ε spent so far at the budget's δ.
    pub fn spent_epsilon(&self) -> Result<f64, LedgerError> {
        self.compose(|d| self.accountant.epsilon(d), (0.0, 0.0))
    }

    /// ε left before the budget is reached (0 when spent).
    pub fn remaining_epsilon(&self) -> Result<f64, LedgerError> {
        Ok((self.budget.epsilon() - self.spent_epsilon()?).max(0.0))
    }

    /// ε the ledger would show after a job of `steps` steps at (σ, q), without reserving it.
    pub fn projected_epsilon(
        &self,
        noise_multiplier: f64,
        sample_rate: f64,
        steps: u64,
    ) -> Result<f64, LedgerError> {
        let next = SubsampledGaussian::new(sample_rate, noise_multiplier)?;
        self.compose(
            |d| self.accountant.projected_epsilon(d, &[(next, steps)]),
            (0.0, 0.0),
        )
    }

    /// Checks the job against the budget and, if it fits, appends it and fsyncs the file.
    /// Call this before training: from its return on, the job counts even if it aborts.
    pub fn reserve(
        &mut self,
        label: &str,
        noise_multiplier: f64,
        sample_rate: f64,
        steps: u64,
    ) -> Result<JobEntry, LedgerError> {
        let next = SubsampledGaussian::new(sample_rate, noise_multiplier)?;
        let projected = self.compose(
            |d| self.accountant.projected_epsilon(d, &[(next, steps)]),
            (0.0, 0.0),
        )?;
        self.refuse_over_budget(projected)?;
        let entry = JobEntry {
            label: label.to_owned(),
            noise_multiplier,
            sample_rate,
            steps,
            reserved_at: unix_seconds(),
        };
        self.append_durably(&entry)?;
        self.accountant.step(next, steps);
        self.entries.push(entry.clone());
        Ok(entry)
    }

    /// Charges a release costing `charge` if it fits the budget: appends it and fsyncs the file.
    /// Call this before drawing the release's noise (`release_after_charging`), so a crash
    /// leaves the charge recorded and nothing released.
    pub fn record_release(
        &mut self,
        label: &str,
        charge: EpsDelta,
    ) -> Result<ReleaseEntry, LedgerError> {
        let extra = (charge.epsilon(), charge.delta());
        let projected = self.compose(|d| self.accountant.epsilon(d), extra)?;
        self.refuse_over_budget(projected)?;
        let entry = ReleaseEntry {
            label: label.to_owned(),
            epsilon: charge.epsilon(),
            delta: charge.delta(),
            released_at: unix_seconds(),
        };
        self.append_durably(&entry)?;
        self.released.0 += extra.0;
        self.released.1 += extra.1;
        self.releases.push(entry.clone());
        Ok(entry)
    }

    /// A projected ε that is NaN (unverifiable) or over the budget is refused: fail closed.
    fn refuse_over_budget(&self, projected: f64) -> Result<(), LedgerError> {
        if projected.is_nan() || projected > self.budget.epsilon() {
            return Err(LedgerError::BudgetExceeded {
                projected_epsilon: projected,
                spent_epsilon: self.spent_epsilon()?,
                budget: self.budget,
            });
        }
        Ok(())
    }

    /// Appends one JSON line and fsyncs before returning, so a charge is on disk before the
    /// work that spends it starts.
    fn append_durably(&self, entry: &impl Serialize) -> Result<(), LedgerError> {
        let line = serde_json::to_string(entry).map_err(|e| LedgerError::Corrupt(e.to_string()))?;
        let mut file = OpenOptions::new().append(true).open(&self.path)?;
        writeln!(file, "{line}")?;
        file.sync_all()?;
        Ok(())
    }
}

/// Seconds since the Unix epoch for an entry's timestamp (0 if the clock is before 1970).
fn unix_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn sync_parent(path: &Path) -> std::io::Result<()> {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => File::open(parent)?.sync_all(),
        _ => Ok(()),
    }
}

/// An in-process RDP accountant for a trainer's progress display ("ε so far").
#[derive(Debug, Default)]
pub struct RdpStepAccountant {
    inner: RdpAccountant,
    /// Set when a step could not be expressed as an event: ε is then reported as infinite.
    poisoned: bool,
}

impl RdpStepAccountant {
    /// A fresh accountant.
    pub fn new() -> Self {
        Self::default()
    }
}

impl StepAccountant for RdpStepAccountant {
    fn step(&mut self, noise_multiplier: f64, sample_rate: f64) {
        match SubsampledGaussian::new(sample_rate, noise_multiplier) {
            Ok(event) => self.inner.step(event, 1),
            Err(_) => self.poisoned = true,
        }
    }

    fn epsilon(&self, delta: f64) -> Option<f64> {
        if self.poisoned {
            return Some(f64::INFINITY);
        }
        self.inner.epsilon(delta).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_path(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "cohort-ledger-{}-{name}-{}",
            std::process::id(),
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join("ledger.jsonl")
    }

    #[test]
    fn reservations_persist_and_a_job_over_budget_is_refused_saying_what_is_left() {
        let path = temp_path("budget");
        let budget = EpsDelta::new(3.0, 1e-5).unwrap();
        let mut ledger = LocalLedger::open(&path, budget).unwrap();
        assert_eq!(ledger.spent_epsilon().unwrap(), 0.0);
        // σ = 1.1, q = 256/60000, 1 epoch ≈ 235 steps: well under ε = 3.
        ledger
            .reserve("epoch 1", 1.1, 256.0 / 60_000.0, 235)
            .unwrap();
        let spent = ledger.spent_epsilon().unwrap();
        assert!(spent > 0.0 && spent < 3.0, "{spent}");

        // Reopening replays the file: the spend survives a restart (or an abort after reserve).
        let mut reopened = LocalLedger::open(&path, budget).unwrap();
        assert_eq!(reopened.entries().len(), 1);
        assert!((reopened.spent_epsilon().unwrap() - spent).abs() < 1e-12);

        let err = reopened.reserve("too much", 0.5, 0.1, 10_000).unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, LedgerError::BudgetExceeded { .. }));
        assert!(text.contains("left ε ="), "{text}");
        // A refused job leaves no trace.
        assert_eq!(LocalLedger::read(&path).unwrap().entries().len(), 1);
    }

    #[test]
    fn a_corrupt_ledger_or_another_budget_refuses_work() {
        let path = temp_path("corrupt");
        let budget = EpsDelta::new(1.0, 1e-5).unwrap();
        LocalLedger::open(&path, budget).unwrap();
        let other = EpsDelta::new(2.0, 1e-5).unwrap();
        assert!(matches!(
            LocalLedger::open(&path, other),
            Err(LedgerError::BudgetMismatch { .. })
        ));
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        writeln!(file, "{{not json").unwrap();
        assert!(matches!(
            LocalLedger::open(&path, budget),
            Err(LedgerError::Corrupt(_))
        ));
    }

    #[test]
    fn releases_compose_with_training_and_are_refused_over_the_budget() {
        let path = temp_path("release");
        let budget = EpsDelta::new(3.0, 1e-5).unwrap();
        let mut ledger = LocalLedger::open(&path, budget).unwrap();
        ledger.reserve("round 1", 1.1, 0.01, 100).unwrap();
        let training = ledger.spent_epsilon().unwrap();
        let charge = EpsDelta::new(0.5, 1e-7).unwrap();
        ledger.record_release("round 1 metrics", charge).unwrap();
        // Basic composition: DP-SGD's ε at the δ the release left, plus the release's ε.
        let mut rdp = RdpAccountant::new();
        rdp.step(SubsampledGaussian::new(0.01, 1.1).unwrap(), 100);
        let expected = rdp.epsilon(1e-5 - 1e-7).unwrap() + 0.5;
        assert_eq!(ledger.spent_epsilon().unwrap(), expected);
        assert!(expected > training + 0.5);
        // The charge survives a restart, beside the job.
        let mut reopened = LocalLedger::open(&path, budget).unwrap();
        assert_eq!(reopened.releases().len(), 1);
        assert_eq!(reopened.entries().len(), 1);
        assert_eq!(reopened.spent_epsilon().unwrap(), expected);
        // A release that does not fit is refused and leaves no trace.
        let err = reopened
            .record_release("too much", EpsDelta::new(3.0, 1e-7).unwrap())
            .unwrap_err();
        assert!(matches!(err, LedgerError::BudgetExceeded { .. }), "{err}");
        // So is one whose δ would leave DP-SGD none.
        assert!(
            reopened
                .record_release("all of delta", EpsDelta::new(0.01, 1e-5).unwrap())
                .is_err()
        );
        assert_eq!(LocalLedger::read(&path).unwrap().releases().len(), 1);
        // Jobs are now projected at the smaller δ too.
        let job = reopened.projected_epsilon(1.1, 0.01, 100).unwrap();
        rdp.step(SubsampledGaussian::new(0.01, 1.1).unwrap(), 100);
        assert_eq!(job, rdp.epsilon(1e-5 - 1e-7).unwrap() + 0.5);
    }

    #[test]
    fn projected_epsilon_does_not_change_the_ledger() {
        let path = temp_path("projection");
        let ledger = LocalLedger::open(&path, EpsDelta::new(5.0, 1e-5).unwrap()).unwrap();
        let projected = ledger.projected_epsilon(1.0, 0.01, 100).unwrap();
        assert!(projected > 0.0);
        assert_eq!(ledger.spent_epsilon().unwrap(), 0.0);
        assert!((ledger.remaining_epsilon().unwrap() - 5.0).abs() < 1e-12);
    }
}
