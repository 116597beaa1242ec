//! FedAvg and the server-optimiser family built on it (FedAvgM, FedAdam, FedYogi,
//! FedAdagrad), plus FedProx, whose difference lives on the client.

use super::math::{
    adagrad_second_moment, adam_second_moment, adaptive_direction, first_moment_update,
    momentum_update, yogi_second_moment,
};
use super::{
    ClientConfig, FitFailure, FitResults, Strategy, StrategyError, mean_delta, state, step,
};
use crate::domain::{RoundNumber, Weighting};

/// Federated averaging: w ← w + Δ̄.
#[derive(Debug, Clone)]
pub struct FedAvg {
    weighting: Weighting,
}

impl FedAvg {
    /// FedAvg with the given weighting.
    pub fn new(weighting: Weighting) -> Self {
        Self { weighting }
    }
}

impl Strategy for FedAvg {
    fn name(&self) -> &'static str {
        "fed_avg"
    }
    fn weighting(&self) -> Weighting {
        self.weighting
    }
    fn aggregate_fit(
        &mut self,
        _round: RoundNumber,
        current: &[f32],
        results: FitResults,
        _failures: &[FitFailure],
    ) -> Result<Option<Vec<f32>>, StrategyError> {
        match mean_delta(current, results)? {
            Some(delta) => step(current, &delta, 1.0),
            None => Ok(None),
        }
    }
}

/// FedProx: FedAvg on the server; participants receive `proximal_mu` and add
/// (μ/2)‖w − w_global‖² to their local loss.
#[derive(Debug, Clone)]
pub struct FedProx {
    inner: FedAvg,
    proximal_mu: f64,
}

impl FedProx {
    /// FedProx with proximal coefficient μ.
    pub fn new(weighting: Weighting, proximal_mu: f64) -> Self {
        Self {
            inner: FedAvg::new(weighting),
            proximal_mu,
        }
    }
}

impl Strategy for FedProx {
    fn name(&self) -> &'static str {
        "fed_prox"
    }
    fn weighting(&self) -> Weighting {
        self.inner.weighting
    }
    fn configure_fit(&self, _round: RoundNumber) -> ClientConfig {
        ClientConfig {
            proximal_mu: Some(self.proximal_mu),
        }
    }
    fn aggregate_fit(
        &mut self,
        round: RoundNumber,
        current: &[f32],
        results: FitResults,
        failures: &[FitFailure],
    ) -> Result<Option<Vec<f32>>, StrategyError> {
        self.inner.aggregate_fit(round, current, results, failures)
    }
}

/// FedAvg with server momentum: v ← βv + Δ̄, w ← w + ηv.
#[derive(Debug, Clone)]
pub struct FedAvgM {
    weighting: Weighting,
    server_lr: f64,
    momentum: f64,
    velocity: Option<Vec<f64>>,
}

impl FedAvgM {
    /// FedAvgM with learning rate η and momentum β.
    pub fn new(weighting: Weighting, server_lr: f64, momentum: f64) -> Self {
        Self {
            weighting,
            server_lr,
            momentum,
            velocity: None,
        }
    }
}

impl Strategy for FedAvgM {
    fn name(&self) -> &'static str {
        "fed_avg_m"
    }
    fn weighting(&self) -> Weighting {
        self.weighting
    }
    fn aggregate_fit(
        &mut self,
        _round: RoundNumber,
        current: &[f32],
        results: FitResults,
        _failures: &[FitFailure],
    ) -> Result<Option<Vec<f32>>, StrategyError> {
        let Some(delta) = mean_delta(current, results)? else {
            return Ok(None);
        };
        let mut velocity = self
            .velocity
            .take()
            .unwrap_or_else(|| vec![0.0; current.len()]);
        momentum_update(&mut velocity, &delta, self.momentum);
        let out = step(current, &velocity, self.server_lr);
        if out.is_ok() {
            self.velocity = Some(velocity);
        }
        out
    }
    fn state(&self) -> Option<Vec<u8>> {
        self.velocity
            .as_ref()
            .map(|v| state::encode(self.name(), &[v]))
    }
    fn restore_state(&mut self, len: usize, bytes: &[u8]) -> Result<(), StrategyError> {
        let mut vs = state::decode(self.name(), len, 1, bytes)?;
        self.velocity = vs.pop();
        Ok(())
    }
}

/// Which second-moment rule an adaptive server optimiser uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Adaptivity {
    Adam,
    Yogi,
    Adagrad,
}

/// The shared body of FedAdam, FedYogi and FedAdagrad (Reddi et al. 2021, Algorithm 2;
/// moments start at zero as in Flower, with no bias correction).
#[derive(Debug, Clone)]
struct AdaptiveOpt {
    kind: Adaptivity,
    weighting: Weighting,
    server_lr: f64,
    beta1: f64,
    beta2: f64,
    tau: f64,
    moments: Option<(Vec<f64>, Vec<f64>)>,
}

impl AdaptiveOpt {
    fn new(
        kind: Adaptivity,
        weighting: Weighting,
        server_lr: f64,
        beta1: f64,
        beta2: f64,
        tau: f64,
    ) -> Self {
        Self {
            kind,
            weighting,
            server_lr,
            beta1,
            beta2,
            tau,
            moments: None,
        }
    }

    fn aggregate(
        &mut self,
        current: &[f32],
        results: FitResults,
    ) -> Result<Option<Vec<f32>>, StrategyError> {
        let Some(delta) = mean_delta(current, results)? else {
            return Ok(None);
        };
        let (mut m, mut v) = self
            .moments
            .clone()
            .unwrap_or_else(|| (vec![0.0; current.len()], vec![0.0; current.len()]));
        first_moment_update(&mut m, &delta, self.beta1);
        match self.kind {
            Adaptivity::Adam => adam_second_moment(&mut v, &delta, self.beta2),
            Adaptivity::Yogi => yogi_second_moment(&mut v, &delta, self.beta2),
            Adaptivity::Adagrad => adagrad_second_moment(&mut v, &delta),
        }
        let direction = adaptive_direction(&m, &v, self.tau);
        let out = step(current, &direction, self.server_lr)?;
        self.moments = Some((m, v));
        Ok(out)
    }

    fn state(&self, name: &str) -> Option<Vec<u8>> {
        self.moments
            .as_ref()
            .map(|(m, v)| state::encode(name, &[m, v]))
    }

    fn restore(&mut self, name: &str, len: usize, bytes: &[u8]) -> Result<(), StrategyError> {
        let mut vs = state::decode(name, len, 2, bytes)?;
        let v = vs.pop();
        let m = vs.pop();
        self.moments = m.zip(v);
        Ok(())
    }
}

macro_rules! adaptive_strategy {
    ($(#[$meta:meta])* $name:ident, $kind:expr, $label:literal) => {
        $(#[$meta])*
        #[derive(Debug, Clone)]
        pub struct $name(AdaptiveOpt);

        impl Strategy for $name {
            fn name(&self) -> &'static str {
                $label
            }
            fn weighting(&self) -> Weighting {
                self.0.weighting
            }
            fn aggregate_fit(
                &mut self,
                _round: RoundNumber,
                current: &[f32],
                results: FitResults,
                _failures: &[FitFailure],
            ) -> Result<Option<Vec<f32>>, StrategyError> {
                self.0.aggregate(current, results)
            }
            fn state(&self) -> Option<Vec<u8>> {
                self.0.state($label)
            }
            fn restore_state(&mut self, len: usize, bytes: &[u8]) -> Result<(), StrategyError> {
                self.0.restore($label, len, bytes)
            }
        }
    };
}

adaptive_strategy!(
    /// FedAdam: m ← β₁m + (1−β₁)Δ̄, v ← β₂v + (1−β₂)Δ̄², w ← w + η·m/(√v + τ).
    FedAdam,
    Adaptivity::Adam,
    "fed_adam"
);
adaptive_strategy!(
    /// FedYogi: like FedAdam with v ← v − (1−β₂)Δ̄²·sign(v − Δ̄²).
    FedYogi,
    Adaptivity::Yogi,
    "fed_yogi"
);
adaptive_strategy!(
    /// FedAdagrad: like FedAdam with v ← v + Δ̄².
    FedAdagrad,
    Adaptivity::Adagrad,
    "fed_adagrad"
);

impl FedAdam {
    /// FedAdam with learning rate η, decay rates β₁ and β₂, and adaptivity floor τ.
    pub fn new(weighting: Weighting, server_lr: f64, beta1: f64, beta2: f64, tau: f64) -> Self {
        Self(AdaptiveOpt::new(
            Adaptivity::Adam,
            weighting,
            server_lr,
            beta1,
            beta2,
            tau,
        ))
    }
}

impl FedYogi {
    /// FedYogi with learning rate η, decay rates β₁ and β₂, and adaptivity floor τ.
    pub fn new(weighting: Weighting, server_lr: f64, beta1: f64, beta2: f64, tau: f64) -> Self {
        Self(AdaptiveOpt::new(
            Adaptivity::Yogi,
            weighting,
            server_lr,
            beta1,
            beta2,
            tau,
        ))
    }
}

impl FedAdagrad {
    /// FedAdagrad with learning rate η and adaptivity floor τ (β₁ = 0: no first-moment
    /// smoothing, as in Reddi et al.'s FedAdagrad).
    pub fn new(weighting: Weighting, server_lr: f64, tau: f64) -> Self {
        Self(AdaptiveOpt::new(
            Adaptivity::Adagrad,
            weighting,
            server_lr,
            0.0,
            0.0,
            tau,
        ))
    }
}
