//! [`LedgerAccountant`] for `cohort_privacy`'s amplified RDP accountant.

use cohort_privacy::accounting::{Accountant, RdpAccountant, SubsampledGaussian};

use super::{LedgerAccountant, LedgerError, Mechanism, RdpCurve};

impl LedgerAccountant for RdpAccountant {
    fn fresh() -> Self {
        RdpAccountant::new()
    }

    fn from_state(state: &str) -> Result<Self, LedgerError> {
        // Deserialising validates: mechanism name, lengths, orders, non-negative RDP.
        serde_json::from_str(state).map_err(|e| LedgerError::Corrupt(e.to_string()))
    }

    fn to_state(&self) -> Result<String, LedgerError> {
        serde_json::to_string(self).map_err(|e| LedgerError::Corrupt(e.to_string()))
    }

    fn record(&mut self, mechanism: Mechanism, steps: u64) -> Result<(), LedgerError> {
        let event = SubsampledGaussian::new(mechanism.sample_rate(), mechanism.noise_multiplier())
            .map_err(|e| LedgerError::InvalidMechanism(e.to_string()))?;
        self.step(event, steps);
        Ok(())
    }

    fn record_rdp(&mut self, rdp: RdpCurve<'_>) -> Result<(), LedgerError> {
        let per_round = rdp(self.orders())?;
        self.step_rdp(&per_round, 1)
            .map_err(|e| LedgerError::InvalidMechanism(e.to_string()))
    }

    fn epsilon(&self, delta: f64) -> Result<f64, LedgerError> {
        Accountant::epsilon(self, delta).map_err(|e| LedgerError::InvalidMechanism(e.to_string()))
    }
}
